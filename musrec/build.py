"""Building an index: stream segments in, tune Annoy's ``search_k`` against exact search, publish atomically.

``search_k`` is chosen by measurement: a sample of indexed segments is queried leave-one-out (each query's own
item is dropped from both answers, as a real query-by-segment drops it), exact cosine search gives the truth, and
the smallest ``search_k`` whose recall@10 reaches the target is kept. Annoy's default (trees x k) reads barely one
leaf at high dimension, so an untuned index returns poor neighbours.

The build writes into a hidden sibling directory and renames it into place only when complete: a crash or Ctrl-C
never leaves a half-written index where a running bot would load it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from musrec import __version__
from musrec.audioset import IngestReport, Segment
from musrec.errors import DataError, IndexFormatError
from musrec.index import (
    ANNOY_FILE,
    EMBEDDINGS_FILE,
    FORMAT_VERSION,
    MANIFEST,
    RECALL_K,
    SEGMENTS_FILE,
    AnnoyBackend,
    ExactBackend,
    Manifest,
    exact_matrix_fits,
    exact_search_many,
    open_embeddings,
)
from musrec.labels import Labels
from musrec.representation import dimension, represent
from musrec.store import SegmentInfo, SegmentWriter

log = logging.getLogger(__name__)

_BATCH = 4096
_REFINE_STEPS = 4
_TIMING_QUERIES = 50


@dataclass(frozen=True)
class BuildOptions:
    representation: str = "flatten"
    trees: int = 50
    target_recall: float = 0.95
    recall_queries: int = 200
    seed: int = 0


@dataclass(frozen=True)
class Tuning:
    search_k: int
    recall: float
    tried: dict[int, float]


def build_index(
    segments: Iterable[Segment],
    out: Path,
    *,
    labels: Labels,
    options: BuildOptions = BuildOptions(),
    sources: Iterable[str] = (),
    filters: dict[str, Any] | None = None,
    report: IngestReport | None = None,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Build an index from ``segments`` (each with exactly 10 rows) into directory ``out``."""
    out = out.resolve()
    if out.exists() and not force:
        raise DataError(f"{out} already exists: pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    started = time.monotonic()
    try:
        count = _ingest(segments, tmp, labels=labels, options=options, progress=progress)
        if count == 0:
            raise DataError("no segments left to index: check the sources and filters")
        embeddings = open_embeddings(tmp, count)
        tuning, query_ms, preferred = _tune(tmp, embeddings, options)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            representation=options.representation,
            dimension=dimension(options.representation),
            count=count,
            trees=options.trees,
            search_k=tuning.search_k,
            recall_at_10=round(tuning.recall, 4),
            target_recall=options.target_recall,
            recall_queries=min(options.recall_queries, count),
            preferred_backend=preferred,
            query_ms=query_ms,
            sources=list(sources),
            filters=filters or {},
            ingest=asdict(report) if report is not None else {},
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            build_seconds=round(time.monotonic() - started, 2),
            musrec_version=__version__,
            extra={"search_k_tried": {str(k): round(v, 4) for k, v in sorted(tuning.tried.items())}},
        )
        del embeddings
        (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built %s: %d segments, search_k %d, recall@10 %.3f", out, count, tuning.search_k, tuning.recall)
    return manifest


def _ingest(
    segments: Iterable[Segment],
    tmp: Path,
    *,
    labels: Labels,
    options: BuildOptions,
    progress: Callable[[int], None] | None,
) -> int:
    from annoy import AnnoyIndex

    annoy = AnnoyIndex(dimension(options.representation), "angular")
    annoy.set_seed(options.seed)
    annoy.on_disk_build(str(tmp / ANNOY_FILE))  # the forest is written to disk, not held in memory
    writer = SegmentWriter(tmp / SEGMENTS_FILE)
    count = 0
    batch: list[Segment] = []

    def flush() -> None:
        nonlocal count
        rows = np.stack([s.rows for s in batch])
        vectors = represent(rows, options.representation)
        raw.write(rows.tobytes())
        for i, (segment, vector) in enumerate(zip(batch, vectors, strict=True)):
            item = count + i
            annoy.add_item(item, vector.tolist())  # a list is about twice as fast as a numpy row here
            writer.add(
                SegmentInfo(
                    item=item,
                    video_id=segment.video_id,
                    start_s=segment.start_s,
                    end_s=segment.end_s,
                    split=segment.split,
                    labels=segment.labels,
                    music=labels.is_music(segment.labels),
                )
            )
        count += len(batch)
        if progress is not None:
            progress(len(batch))
        batch.clear()

    with (tmp / EMBEDDINGS_FILE).open("wb") as raw:
        for segment in segments:
            batch.append(segment)
            if len(batch) >= _BATCH:
                flush()
        if batch:
            flush()
    writer.close()
    if count:
        annoy.build(options.trees, n_jobs=-1)
    annoy.unload()
    if not count:
        (tmp / ANNOY_FILE).unlink(missing_ok=True)
    return count


def _tune(tmp: Path, embeddings: npt.NDArray[np.uint8], options: BuildOptions) -> tuple[Tuning, dict[str, float], str]:
    """Pick search_k for the target recall; time exact and Annoy queries to choose the default backend."""
    count = len(embeddings)
    rng = np.random.default_rng(options.seed)
    q_items = np.sort(rng.choice(count, size=min(options.recall_queries, count), replace=False))
    queries = represent(np.asarray(embeddings[q_items]), options.representation)
    k = min(RECALL_K, count - 1)
    matrix = None
    if exact_matrix_fits(count, options.representation):
        matrix = represent(np.asarray(embeddings), options.representation)
    truth_ids, _ = exact_search_many(embeddings, options.representation, queries, k + 1, matrix=matrix)
    truth = [_drop(ids, item, k) for ids, item in zip(truth_ids, q_items, strict=True)]

    annoy = AnnoyBackend(tmp / ANNOY_FILE, dimension(options.representation), search_k=1)
    try:
        tuning = _choose_search_k(
            annoy,
            queries,
            q_items,
            truth,
            k=k,
            trees=options.trees,
            count=count,
            target=options.target_recall,
        )
        annoy.search_k = tuning.search_k
        query_ms = {"annoy": _time_queries(annoy, queries, k)}
    finally:
        annoy.unload()
    preferred = "annoy"
    if matrix is not None:
        query_ms["exact"] = _time_queries(ExactBackend(matrix), queries, k)
        if query_ms["exact"] <= query_ms["annoy"] or tuning.recall < options.target_recall:
            preferred = "exact"  # exact and no slower, or Annoy could not reach the target at all
    return tuning, query_ms, preferred


def _choose_search_k(
    annoy: AnnoyBackend,
    queries: npt.NDArray[np.float32],
    q_items: npt.NDArray[np.int64],
    truth: list[set[int]],
    *,
    k: int,
    trees: int,
    count: int,
    target: float,
) -> Tuning:
    tried: dict[int, float] = {}

    def recall_at(search_k: int) -> float:
        if search_k not in tried:
            hits = 0
            for vector, item, want in zip(queries, q_items, truth, strict=True):
                # k + 1 results (the query's own item is dropped) at exactly this search_k.
                ids, _ = annoy.search(vector, k + 1, search_k=search_k)
                hits += len(_drop(ids, item, k) & want)
            tried[search_k] = hits / max(1, k * len(queries))
        return tried[search_k]

    if k <= 0:
        return Tuning(search_k=trees, recall=1.0, tried={trees: 1.0})
    # Double from Annoy's own default until the target is met or every node could be read, then bisect.
    ceiling = max(trees * k, 2 * count * trees)
    low, high = 0, trees * k
    while recall_at(high) < target and high < ceiling:
        low, high = high, min(high * 2, ceiling)
    if recall_at(high) >= target:
        for _ in range(_REFINE_STEPS):
            mid = (low + high) // 2
            if mid <= low or mid >= high:
                break
            if recall_at(mid) >= target:
                high = mid
            else:
                low = mid
    return Tuning(search_k=high, recall=recall_at(high), tried=tried)


def _drop(ids: npt.NDArray[np.int64], item: int, k: int) -> set[int]:
    """The first ``k`` ids other than the query's own item."""
    return set([int(i) for i in ids if i != item][:k])


def _time_queries(backend: AnnoyBackend | ExactBackend, queries: npt.NDArray[np.float32], k: int) -> float:
    sample = queries[:_TIMING_QUERIES]
    backend.search(sample[0], k)
    started = time.perf_counter()
    for vector in sample:
        backend.search(vector, k)
    return round(1000.0 * (time.perf_counter() - started) / len(sample), 4)


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished build into place; an existing index is swapped out, then removed."""
    old = None
    if out.exists():
        if not (out / MANIFEST).is_file() and any(out.iterdir()):
            raise IndexFormatError(f"{out} exists and is not a musrec index: refusing to replace it")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
