"""Search backends over an index's vectors, and the exact search that every approximate result is measured against.

- :class:`AnnoyBackend`: an Annoy forest (angular metric, memory-mapped). Good for small and medium indexes.
- :class:`IvfBackend`: a faiss inverted-file index with 8-bit scalar-quantised codes (memory-mapped), whose
  candidates are re-scored exactly from the raw uint8 rows, so its scores are exact cosine similarities. It scales to
  the full AudioSet where Annoy, at 1280 dimensions, is barely faster than brute force.
- :class:`ExactBackend`: brute force over an in-memory float32 matrix; :class:`ScanBackend`: brute force streamed
  over the memory-mapped raw rows, for indexes whose float vectors would not fit in memory.

Every backend answers ``search(unit_vector, n) -> (ids, cosine scores)``, best first.
"""

from __future__ import annotations

import ctypes
import math
import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from musrec.audioset.representation import SEGMENT_ROWS, represent, scores_of
from musrec.errors import IndexFormatError
from musrec.vggish.postprocess import EMBEDDING_SIZE

RECALL_K = 10
_CHUNK = 65_536
# Rows read at once by a build's passes: 16,384 flatten vectors are 80 MiB of float32.
READ_CHUNK = 16_384
# Bytes a build writes between syncs: dirty pages count against a memory cgroup, and under cgroup v1 nothing writes
# them back for it before the limit is reached.
SYNC_BYTES = 64 << 20
# Reading a whole file once before serving: large enough blocks to stream at disk speed.
_WARM_BLOCK = 1 << 24

IdsScores = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


class Backend(Protocol):
    name: str

    def search(self, vector: npt.NDArray[np.float32], n: int, *, widen: float = 1.0) -> IdsScores:
        """The ``n`` nearest items to a unit vector, best first, with cosine similarities.

        ``widen`` > 1 asks an approximate structure to look that much further than its tuned search does: a
        filtered search needs the best of a fraction of the items, which lie farther out.
        """
        ...

    def warm(self) -> None: ...


# ---- exact search ------------------------------------------------------------------------------------------


def top_n(scores: npt.NDArray[np.float32], n: int) -> IdsScores:
    """Indices and values of the ``n`` largest scores, best first."""
    n = min(n, len(scores))
    if n <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    part = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    order = part[np.argsort(-scores[part], kind="stable")]
    return order.astype(np.int64), scores[order].astype(np.float32)


def iter_vectors(
    embeddings: npt.NDArray[np.uint8], representation: str, *, chunk: int = _CHUNK
) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    """(offset, unit vectors) for consecutive chunks of the raw rows."""
    for lo in range(0, len(embeddings), chunk):
        yield lo, represent(np.asarray(embeddings[lo : lo + chunk]), representation)


class TopN:
    """Exact top-``n`` of many queries, accumulated over consecutive chunks of vectors (a streaming scan).

    Items in ``exclude`` are never returned: the build measures recall on segments held out of the approximate
    structure, against the truth among the items that structure holds.

    Each chunk's scores come from one matrix product (BLAS) and are kept in a ``faiss.ResultHeap``: for a build's
    400 queries it is no slower than merging each row's ``argpartition`` in numpy (x0.65 to x0.83 of its time at 128
    dimensions, x0.96 to x1.01 at 1280, two runs of bench/topn_bench.py), while ``faiss.knn`` on each chunk is
    slower (x1.01 to x1.28, and x1.40 to x1.94).
    """

    def __init__(
        self, queries: npt.NDArray[np.float32], n: int, *, exclude: npt.NDArray[np.int64] | None = None
    ) -> None:
        import faiss

        self.queries = queries
        self.n = max(n, 0)
        self.exclude = np.sort(exclude) if exclude is not None else np.empty(0, dtype=np.int64)
        self._heap = faiss.ResultHeap(len(queries), self.n, keep_max=True)
        self._every = np.arange(len(queries), dtype=np.int64)

    def update(self, lo: int, vectors: npt.NDArray[np.float32]) -> None:
        if len(self.queries) == 0 or len(vectors) == 0 or self.n == 0:
            return
        scores = self.queries @ vectors.T  # [q, chunk]
        hi = lo + len(vectors)
        skip = self.exclude[(self.exclude >= lo) & (self.exclude < hi)]
        if len(skip):
            scores[:, skip - lo] = -np.inf  # below the heap's floor: never kept
        self._heap.add_result_subset(self._every, scores, np.arange(lo, hi, dtype=np.int64))

    def result(self) -> IdsScores:
        """[q, n] ids and scores, best first (excluded items never appear; fewer columns if too few items)."""
        self._heap.finalize()
        ids, scores = self._heap.I, self._heap.D
        valid = (ids >= 0).all(axis=0)  # a slot no item filled keeps the heap's id -1
        return ids[:, valid], scores[:, valid]


def read_chunks(path: Path, count: int, *, chunk: int = READ_CHUNK) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
    """(offset, [n, 10, 128] rows) for consecutive chunks of the raw-row file."""
    row_bytes = SEGMENT_ROWS * EMBEDDING_SIZE
    with path.open("rb") as f:
        for lo in range(0, count, chunk):
            n = min(chunk, count - lo)
            data = f.read(n * row_bytes)
            if len(data) != n * row_bytes:
                raise OSError(f"{path.name} ended early at segment {lo}")
            yield lo, np.frombuffer(data, dtype=np.uint8).reshape(n, SEGMENT_ROWS, EMBEDDING_SIZE)


def exact_search_many(
    embeddings: npt.NDArray[np.uint8],
    representation: str,
    queries: npt.NDArray[np.float32],
    n: int,
    *,
    matrix: npt.NDArray[np.float32] | None = None,
    exclude: npt.NDArray[np.int64] | None = None,
) -> IdsScores:
    """Exact top-``n`` for many queries at once, streaming over the rows when no in-memory matrix is given."""
    acc = TopN(queries, n, exclude=exclude)
    chunks = [(0, matrix)] if matrix is not None else iter_vectors(embeddings, representation)
    for lo, vectors in chunks:
        acc.update(lo, vectors)
    return acc.result()


def rescore(
    embeddings: npt.NDArray[np.uint8], representation: str, vector: npt.NDArray[np.float32], ids: npt.NDArray[np.int64]
) -> IdsScores:
    """Exact cosine scores of the candidates ``ids`` from their raw rows, best first."""
    ids = np.unique(ids[ids >= 0])  # sorted: memory-mapped rows are read in file order
    if len(ids) == 0:
        return ids.astype(np.int64), np.empty(0, dtype=np.float32)
    scores = scores_of(represent(np.asarray(embeddings[ids]), representation), vector)
    order = np.argsort(-scores, kind="stable")
    return ids[order].astype(np.int64), scores[order].astype(np.float32)


class ExactBackend:
    """Brute-force cosine search over an in-memory float32 matrix of unit vectors."""

    name = "exact"

    def __init__(self, vectors: npt.NDArray[np.float32]) -> None:
        self.vectors = vectors

    def search(self, vector: npt.NDArray[np.float32], n: int, *, widen: float = 1.0) -> IdsScores:
        return top_n(self.vectors @ vector, n)

    def warm(self) -> None:
        pass


class ScanBackend:
    """Exact search streamed over the memory-mapped raw rows: slow, but holds no float copy of the vectors."""

    name = "exact"

    def __init__(self, embeddings: npt.NDArray[np.uint8], representation: str) -> None:
        self.embeddings = embeddings
        self.representation = representation

    def search(self, vector: npt.NDArray[np.float32], n: int, *, widen: float = 1.0) -> IdsScores:
        # One query: each chunk's best n by argpartition, then the best of those, in numpy. Here faiss is slower: a
        # ResultHeap fed every score takes x1.5 to x1.7 the time, faiss.knn x0.6 to x2.7 (bench/topn_bench.py).
        ids, scores = [], []
        for lo, vectors in iter_vectors(self.embeddings, self.representation):
            best, best_scores = top_n(vectors @ vector, n)
            ids.append(best + lo)
            scores.append(best_scores)
        if not ids:
            return top_n(np.empty(0, dtype=np.float32), n)
        best, best_scores = top_n(np.concatenate(scores), n)
        return np.concatenate(ids)[best], best_scores

    def warm(self) -> None:
        pass


# ---- approximate search ------------------------------------------------------------------------------------


def read_at_random(rows: npt.NDArray[np.uint8]) -> None:
    """Tell the kernel that a memory-mapped array is read at random, a row here and there: a page fault then reads
    the page it needs, not the megabytes around it. Re-ranking reads 50 scattered rows a query; on a machine whose
    page cache cannot hold the raw rows (the 2M index in 2 GiB), 200 queries read 35 GB from disk without this and
    3.3 GB with it, 45 s against 5 s. Does nothing where the kernel cannot be told (not Linux, not a map)."""
    advice = getattr(mmap, "MADV_RANDOM", None)
    if advice is None or not isinstance(rows, np.memmap) or rows.nbytes == 0:
        return
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return
    start = rows.ctypes.data - rows.ctypes.data % mmap.PAGESIZE
    length = rows.ctypes.data + rows.nbytes - start
    madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), ctypes.c_int(advice))


def warm_file(path: Path) -> None:
    """Read a file once so the first query does not pay for page faults (seconds on a cold multi-GB file).

    Plain reads fill the page cache that the memory maps then share, without adding to this process's RSS.
    """
    with path.open("rb") as f:
        while f.read(_WARM_BLOCK):
            pass


class AnnoyBackend:
    """Annoy, angular metric. ``search_k`` was tuned at build time for k = 10; larger requests scale it.

    The build holds a sample of segments out of the forest to measure recall on queries the forest never saw; those
    few (``extra_ids``) are searched exactly beside it and merged, so every segment can be found.
    """

    name = "annoy"

    def __init__(
        self,
        path: Path,
        dim: int,
        *,
        search_k: int,
        extra_ids: npt.NDArray[np.int64] | None = None,
        extra_vectors: npt.NDArray[np.float32] | None = None,
    ) -> None:
        from annoy import AnnoyIndex

        self.path = path
        self.search_k = search_k
        self.extra_ids = extra_ids if extra_ids is not None else np.empty(0, dtype=np.int64)
        self.extra_vectors = extra_vectors if extra_vectors is not None else np.empty((0, dim), dtype=np.float32)
        self._annoy = AnnoyIndex(dim, "angular")
        try:
            self._annoy.load(str(path))  # memory-mapped
        except OSError as err:
            raise IndexFormatError(f"cannot load {path.name}: {err}") from None

    def search(
        self, vector: npt.NDArray[np.float32], n: int, *, search_k: int | None = None, widen: float = 1.0
    ) -> IdsScores:
        """``search_k`` defaults to the tuned value, scaled up in proportion when more than 10 results are asked
        (a filtered search asks for more results already, so ``widen`` adds nothing here)."""
        if search_k is None:
            search_k = math.ceil(self.search_k * max(1.0, n / RECALL_K))
        found, dists = self._annoy.get_nns_by_vector(vector.tolist(), n, search_k=search_k, include_distances=True)
        d = np.asarray(dists, dtype=np.float32)
        ids = np.asarray(found, dtype=np.int64)
        scores = 1.0 - d * d / 2.0  # angular distance = sqrt(2 - 2 cos)
        if len(self.extra_ids):
            ids = np.concatenate([ids, self.extra_ids])
            scores = np.concatenate([scores, self.extra_vectors @ vector])
            best, _ = top_n(scores, n)
            ids, scores = ids[best], scores[best]
        return ids, scores.astype(np.float32)

    def warm(self) -> None:
        warm_file(self.path)

    def unload(self) -> None:
        self._annoy.unload()


class IvfBackend:
    """faiss IVF with 8-bit codes; the best ``rerank`` candidates (per 10 results) are re-scored from the raw rows.

    ``nprobe`` (inverted lists visited per query) was tuned at build time to reach the target recall@10. Searches
    pass it per call, so threads can share one loaded index.
    """

    name = "ivf"

    def __init__(
        self,
        index: Any,
        embeddings: npt.NDArray[np.uint8],
        representation: str,
        *,
        nprobe: int,
        rerank: int,
        path: Path | None = None,
        excluded: npt.NDArray[np.int64] | None = None,
    ) -> None:
        self.index = index
        self.embeddings = embeddings
        read_at_random(embeddings)
        self.representation = representation
        self.nprobe = nprobe
        self.rerank = rerank
        self.path = path
        self._skip: tuple[Any, ...] = ()
        if excluded is not None and len(excluded):
            import faiss

            batch = faiss.IDSelectorBatch(np.ascontiguousarray(excluded, dtype=np.int64))
            self._skip = (faiss.IDSelectorNot(batch), batch)  # the inner selector must outlive the outer one

    @classmethod
    def load(
        cls,
        path: Path,
        embeddings: npt.NDArray[np.uint8],
        representation: str,
        *,
        nprobe: int,
        rerank: int,
        excluded: npt.NDArray[np.int64] | None = None,
    ) -> IvfBackend:
        """Open ``path`` memory-mapped: only the coarse centroids are read; the inverted lists stay in the file.

        The items ``excluded`` are never returned (a build leaves its held-out segments out while it tunes)."""
        import faiss

        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError as err:
            raise IndexFormatError(f"cannot load {path.name}: {str(err).splitlines()[0]}") from None
        invlists = faiss.extract_index_ivf(index).invlists
        lists: Any = faiss.downcast_InvertedLists(invlists) if invlists is not None else None
        if hasattr(lists, "prefetch_nthread"):
            # Memory-mapped lists otherwise start threads to prefetch pages on every search: that alone cost more
            # than the search itself. The pages are shared and warmed once instead (warm()).
            lists.prefetch_nthread = 0
        return cls(index, embeddings, representation, nprobe=nprobe, rerank=rerank, path=path, excluded=excluded)

    def search(
        self,
        vector: npt.NDArray[np.float32],
        n: int,
        *,
        nprobe: int | None = None,
        widen: float = 1.0,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> IdsScores:
        """``nprobe`` defaults to the tuned value, times ``widen`` (at most every list). With ``allowed``, the lists
        are scanned for those items only (faiss's ID selector): every result passes, whatever else lies nearer."""
        import faiss

        depth = max(n, math.ceil(self.rerank * n / RECALL_K))
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe or min(self.index.nlist, math.ceil(self.nprobe * widen))
        if allowed is not None:
            bits = np.packbits(allowed, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        elif self._skip:
            params.sel = self._skip[0]
        _, found = self.index.search(np.ascontiguousarray(vector[None], dtype=np.float32), depth, params=params)
        ids, scores = rescore(self.embeddings, self.representation, vector, found[0])
        return ids[:n], scores[:n]

    @property
    def widest(self) -> float:
        """The ``widen`` at which every list is scanned."""
        return self.index.nlist / self.nprobe

    def warm(self) -> None:
        if self.path is not None:
            warm_file(self.path)
        # Candidates are re-scored from the raw rows: their pages are read at random, so load them too.
        filename = getattr(self.embeddings, "filename", None)
        if filename is not None:
            warm_file(Path(filename))
