"""Building an approximate search structure from the raw rows, and tuning its search parameter honestly.

One streaming pass over the raw rows feeds the structure (Annoy or IVF) and the exact ground truth of the recall
sample: no float copy of everything is held beside the structure. Only a small or medium index also keeps its float
matrix, to time exact search, which can be the faster default there. The rows are read, not memory-mapped, so a pass
over a multi-GB file leaves no mapped pages behind. The IVF structure is written list by list from a second pass
(:mod:`musrec.index.ivf_file`), so its codes are never all in memory either.

Recall is measured on segments *held out* of the structure, against the exact neighbours among the segments it
holds: queries it has never seen, like a new clip. Indexed segments queried leave-one-out tend to score higher
(the structure was shaped around them), so that figure is recorded too, but the search parameter is tuned on the
held-out one. Afterwards the held-out segments join the index: IVF writes them into its lists from the start and
leaves them out of the searches that tune it; an Annoy forest cannot grow, so they are kept in ``holdout.npy`` and
searched exactly beside it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from musrec.audioset.representation import dimension, represent
from musrec.index.backends import (
    RECALL_K,
    AnnoyBackend,
    ExactBackend,
    IvfBackend,
    ScanBackend,
    TopN,
    read_chunks,
)
from musrec.index.ivf_file import IvfWriter, SearchAt, training_vectors
from musrec.index.layout import ANNOY_FILE, EMBEDDINGS_FILE, HOLDOUT_FILE, IVF_FILE
from musrec.index.search import exact_matrix_fits

log = logging.getLogger(__name__)

ANN_KINDS = ("annoy", "ivf")
# Below this many segments "auto" builds Annoy; from here on IVF, which measured far faster at the same recall.
AUTO_IVF_MIN_COUNT = 250_000
# Coarse centroids are trained on this many vectors per inverted list (faiss wants at least 39).
IVF_TRAIN_PER_LIST = 50
_IVF_MIN_PER_LIST = 39
_TIMING_QUERIES = 50

# The steps a build goes through, as recorded for a build that does not finish (musrec.index.memory).
Step = Callable[[str], None]


def _no_step(_: str) -> None:
    pass


@dataclass(frozen=True)
class Sample:
    """Which segments measure recall: ``held_out`` (not in the structure while tuning) and ``indexed`` (in it)."""

    held_out: npt.NDArray[np.int64]
    indexed: npt.NDArray[np.int64]
    k: int

    @classmethod
    def choose(cls, count: int, queries: int, *, seed: int) -> Sample:
        # At most a tenth of the index is held out, so a tiny index keeps most of its items in the structure.
        rng = np.random.default_rng(seed)
        order = rng.permutation(count)
        held = min(queries, count // 10)
        held_out = np.sort(order[:held]).astype(np.int64)
        rest = order[held:]
        indexed = np.sort(rest[: min(queries, len(rest))]).astype(np.int64)
        return cls(held_out=held_out, indexed=indexed, k=min(RECALL_K, len(rest) - 1))


@dataclass(frozen=True)
class Tuning:
    value: int  # search_k or nprobe
    recall: float  # held-out (leave-one-out when the index is too small to hold any out)
    recall_leave_one_out: float
    tried: dict[int, float]


@dataclass(frozen=True)
class Built:
    ann: str
    tuning: Tuning
    query_ms: dict[str, float]
    ivf_lists: int = 0


def choose_ann(requested: str, count: int) -> str:
    if requested == "auto":
        return "ivf" if count >= AUTO_IVF_MIN_COUNT else "annoy"
    if requested not in ANN_KINDS:
        raise ValueError(f"unknown backend {requested!r}")
    return requested


def auto_ivf_lists(count: int) -> int:
    """About 2 sqrt(count) lists, a power of two, with enough training points each."""
    lists = 2 ** round(math.log2(max(1.0, 2.0 * math.sqrt(count))))
    return max(1, min(lists, count // _IVF_MIN_PER_LIST))


def ivf_list_count(indexed: int, requested: int) -> int:
    """The inverted lists of an IVF structure over ``indexed`` segments: ``requested``, or 0 for about 2 sqrt(n);
    never so many that a list has fewer training points than faiss wants."""
    return max(1, min(requested or auto_ivf_lists(indexed), indexed // _IVF_MIN_PER_LIST))


def build_structure(
    tmp: Path,
    embeddings: npt.NDArray[np.uint8],
    *,
    ann: str,
    representation: str,
    trees: int,
    ivf_lists: int,
    rerank: int,
    target: float,
    sample: Sample,
    seed: int,
    keep_matrix: bool = True,
    on_step: Step = _no_step,
) -> Built:
    """Build the structure into ``tmp`` and tune it. ``keep_matrix`` False never holds the float matrix that times
    exact search (it is not offered as the default then); ``on_step`` hears each step as it starts."""
    count = len(embeddings)
    dim = dimension(representation)
    held_out = sample.held_out
    queries = represent(np.asarray(embeddings[np.concatenate([held_out, sample.indexed])]), representation)
    truth = TopN(queries, sample.k + 1, exclude=held_out)
    # From AUTO_IVF_MIN_COUNT on, exact search is far slower than either structure: it is not timed, nor held.
    fits = keep_matrix and exact_matrix_fits(count, representation) and count < AUTO_IVF_MIN_COUNT
    matrix = np.empty((count, dim), dtype=np.float32) if fits else None
    raw = tmp / EMBEDDINGS_FILE

    writer: _AnnoyWriter | IvfWriter
    if ann == "annoy":
        writer = _AnnoyWriter(tmp / ANNOY_FILE, dim, trees=trees, seed=seed)
    else:
        lists = ivf_list_count(count - len(held_out), ivf_lists)
        writer = IvfWriter(tmp / IVF_FILE, raw, representation, dim, lists, count=count, seed=seed)
        on_step("train")
        writer.train(training_vectors(raw, count, representation, held_out, lists * IVF_TRAIN_PER_LIST, seed))

    on_step("add")
    started = time.monotonic()
    for lo, rows in read_chunks(raw, count):
        vectors = represent(rows, representation)
        truth.update(lo, vectors)
        writer.add(lo, vectors, held_out)
        if matrix is not None:
            matrix[lo : lo + len(vectors)] = vectors
        del vectors
    log.info("%s: %d vectors added in %.1f s", ann, count - len(held_out), time.monotonic() - started)

    truth_ids, _ = truth.result()
    held_truth = [set(row[: sample.k].tolist()) for row in truth_ids[: len(held_out)]]
    loo_truth = [
        _drop(row, item, sample.k) for row, item in zip(truth_ids[len(held_out) :], sample.indexed, strict=True)
    ]
    held_queries, loo_queries = queries[: len(held_out)], queries[len(held_out) :]

    search_at = writer.tuning_search(embeddings, representation, rerank=rerank, held_out=held_out, on_step=on_step)
    on_step("tune")
    if isinstance(writer, _AnnoyWriter):
        start, ceiling, steps = trees * max(1, sample.k), max(trees * max(1, sample.k), 2 * count * trees), 4
    else:
        start, ceiling, steps = 1, writer.lists, 64  # nprobe: bisect to the exact smallest value

    def held_recall(value: int) -> float:
        return _recall(search_at, value, held_queries, held_truth, None, sample.k)

    def loo_recall(value: int) -> float:
        return _recall(search_at, value, loo_queries, loo_truth, sample.indexed, sample.k)

    measured = held_recall if len(held_out) else loo_recall
    value, tried = _tune(measured, start=start, ceiling=ceiling, target=target, steps=steps, trivial=sample.k <= 0)
    tuning = Tuning(
        value=value,
        recall=tried[value],
        recall_leave_one_out=loo_recall(value) if sample.k > 0 else 1.0,
        tried=tried,
    )
    log.info(
        "%s tuned to %d: recall@10 %.3f held out, %.3f leave-one-out",
        ann,
        value,
        tuning.recall,
        tuning.recall_leave_one_out,
    )

    on_step("finish")
    backend = writer.finish(
        tmp,
        embeddings,
        representation,
        held_out=held_out,
        held_vectors=held_queries,
        value=value,
        rerank=rerank,
    )
    timing = held_queries if len(held_queries) else loo_queries
    query_ms = {ann: _time_queries(backend, timing, sample.k)}
    if matrix is not None:
        query_ms["exact"] = _time_queries(ExactBackend(matrix), timing, sample.k)
    del matrix
    return Built(
        ann=ann,
        tuning=tuning,
        query_ms=query_ms,
        ivf_lists=writer.lists if isinstance(writer, IvfWriter) else 0,
    )


class _AnnoyWriter:
    def __init__(self, path: Path, dim: int, *, trees: int, seed: int) -> None:
        from annoy import AnnoyIndex

        self.path = path
        self.dim = dim
        self.trees = trees
        self.annoy = AnnoyIndex(dim, "angular")
        self.annoy.set_seed(seed)
        self.annoy.on_disk_build(str(path))  # the forest is written to disk, not held in memory
        self.added = 0

    def add(self, lo: int, vectors: npt.NDArray[np.float32], held_out: npt.NDArray[np.int64]) -> None:
        """Add the segments ``lo, lo + 1, ...`` but the held-out ones."""
        ids = np.arange(lo, lo + len(vectors), dtype=np.int64)
        keep = ~np.isin(ids, held_out, assume_unique=True)
        for item, vector in zip(ids[keep].tolist(), vectors[keep], strict=True):
            self.annoy.add_item(item, vector.tolist())  # a list is about twice as fast as a numpy row here
        self.added += int(np.count_nonzero(keep))

    def tuning_search(
        self,
        embeddings: npt.NDArray[np.uint8],
        representation: str,
        *,
        rerank: int,
        held_out: npt.NDArray[np.int64],
        on_step: Step,
    ) -> SearchAt:
        on_step("trees")
        started = time.monotonic()
        self.annoy.build(self.trees, n_jobs=-1)
        self.annoy.unload()
        log.info("annoy: %d trees built in %.1f s", self.trees, time.monotonic() - started)
        self.forest = AnnoyBackend(self.path, self.dim, search_k=1)

        def search(vector: npt.NDArray[np.float32], n: int, value: int) -> npt.NDArray[np.int64]:
            return self.forest.search(vector, n, search_k=value)[0]

        return search

    def finish(
        self,
        tmp: Path,
        embeddings: npt.NDArray[np.uint8],
        representation: str,
        *,
        held_out: npt.NDArray[np.int64],
        held_vectors: npt.NDArray[np.float32],
        value: int,
        rerank: int,
    ) -> AnnoyBackend:
        self.forest.unload()
        np.save(tmp / HOLDOUT_FILE, held_out)
        return AnnoyBackend(self.path, self.dim, search_k=value, extra_ids=held_out, extra_vectors=held_vectors)


def _recall(
    search_at: SearchAt,
    value: int,
    queries: npt.NDArray[np.float32],
    truth: list[set[int]],
    own: npt.NDArray[np.int64] | None,
    k: int,
) -> float:
    """recall@k at this parameter; with ``own``, each query's own item is asked for one extra and dropped."""
    hits = 0
    for i, (vector, want) in enumerate(zip(queries, truth, strict=True)):
        if own is None:
            got = set(search_at(vector, k, value)[:k].tolist())
        else:
            got = _drop(search_at(vector, k + 1, value), int(own[i]), k)
        hits += len(got & want)
    return hits / max(1, k * len(queries))


def _tune(
    recall_at: Callable[[int], float], *, start: int, ceiling: int, target: float, steps: int, trivial: bool
) -> tuple[int, dict[int, float]]:
    """The smallest value reaching ``target``: double from ``start`` until met (or ``ceiling``), then bisect."""
    if trivial:
        return start, {start: 1.0}
    tried: dict[int, float] = {}

    def at(value: int) -> float:
        if value not in tried:
            tried[value] = recall_at(value)
        return tried[value]

    low, high = 0, start
    while at(high) < target and high < ceiling:
        low, high = high, min(high * 2, ceiling)
    if at(high) >= target:
        for _ in range(steps):
            mid = (low + high) // 2
            if mid <= low or mid >= high:
                break
            if at(mid) >= target:
                high = mid
            else:
                low = mid
    return high, tried


def _drop(ids: npt.NDArray[np.int64], item: int, k: int) -> set[int]:
    """The first ``k`` ids other than the query's own item."""
    return set([int(i) for i in ids if i != item][:k])


def _time_queries(backend: AnnoyBackend | IvfBackend | ExactBackend | ScanBackend, queries: Any, k: int) -> float:
    sample = queries[:_TIMING_QUERIES]
    if len(sample) == 0:
        return 0.0
    n = max(1, k)
    backend.search(sample[0], n)
    started = time.perf_counter()
    for vector in sample:
        backend.search(vector, n)
    return round(1000.0 * (time.perf_counter() - started) / len(sample), 4)
