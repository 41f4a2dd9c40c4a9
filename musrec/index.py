"""The vector index: an Annoy forest (or exact numpy search) over segment vectors, with SQLite metadata.

An index is a directory:

- ``manifest.json``: format version, representation, dimension, count, trees, the tuned ``search_k`` and the recall
  measured at build time, the backend that measured faster, source files, build time;
- ``annoy.ann``: the Annoy forest (angular metric, memory-mapped, so processes share its pages);
- ``embeddings.u8``: the raw uint8 rows, [count, 10, 128], memory-mapped: exact search, query-by-segment, and
  rebuilding with another representation all start from here;
- ``segments.sqlite``: item -> video id, start, end, labels, split.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from musrec.errors import IndexFormatError, IndexNotFoundError
from musrec.representation import SEGMENT_ROWS, dimension, represent
from musrec.store import SegmentStore
from musrec.vggish.postprocess import EMBEDDING_SIZE

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ANNOY_FILE = "annoy.ann"
EMBEDDINGS_FILE = "embeddings.u8"
SEGMENTS_FILE = "segments.sqlite"
RECALL_K = 10
# Exact search keeps a float32 copy of all vectors in memory; above this it is not offered automatically.
EXACT_MEMORY_BUDGET = 2 << 30
_CHUNK = 65_536


@dataclass(frozen=True)
class Manifest:
    format_version: int
    representation: str
    dimension: int
    count: int
    trees: int
    search_k: int
    recall_at_10: float
    target_recall: float
    recall_queries: int
    preferred_backend: str
    query_ms: dict[str, float]
    sources: list[str]
    filters: dict[str, Any]
    ingest: dict[str, Any]
    built_at: str
    build_seconds: float
    musrec_version: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        if not path.is_file():
            if not directory.exists():
                raise IndexNotFoundError(f"no index at {directory}: build one with `musrec index build`")
            raise IndexNotFoundError(f"{directory} is not a musrec index (no {MANIFEST})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise IndexFormatError(f"{path} is unreadable: {err}") from None
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFormatError(f"index format {version} is not supported (expected {FORMAT_VERSION}): rebuild it")
        try:
            return cls(**data)
        except TypeError as err:
            raise IndexFormatError(f"{path} is malformed: {err}") from None


class Backend(Protocol):
    name: str

    def search(self, vector: npt.NDArray[np.float32], n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``n`` nearest items to a unit vector, best first, with cosine similarities."""
        ...


class AnnoyBackend:
    """Annoy, angular metric. ``search_k`` was tuned at build time for k = 10; larger requests scale it."""

    name = "annoy"

    def __init__(self, path: Path, dim: int, *, search_k: int) -> None:
        from annoy import AnnoyIndex

        self.path = path
        self.search_k = search_k
        self._annoy = AnnoyIndex(dim, "angular")
        try:
            self._annoy.load(str(path))  # memory-mapped
        except OSError as err:
            raise IndexFormatError(f"cannot load {path.name}: {err}") from None

    def search(
        self, vector: npt.NDArray[np.float32], n: int, *, search_k: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """``search_k`` defaults to the tuned value, scaled up in proportion when more than 10 results are asked."""
        if search_k is None:
            search_k = math.ceil(self.search_k * max(1.0, n / RECALL_K))
        ids, dists = self._annoy.get_nns_by_vector(vector.tolist(), n, search_k=search_k, include_distances=True)
        d = np.asarray(dists, dtype=np.float32)
        return np.asarray(ids, dtype=np.int64), 1.0 - d * d / 2.0  # angular distance = sqrt(2 - 2 cos)

    def warm(self) -> None:
        """Read the file once so the first query does not pay for page faults (seconds on a cold multi-GB file)."""
        with self.path.open("rb") as f:
            while f.read(1 << 24):
                pass

    def unload(self) -> None:
        self._annoy.unload()


class ExactBackend:
    """Brute-force cosine search over an in-memory float32 matrix of unit vectors."""

    name = "exact"

    def __init__(self, vectors: npt.NDArray[np.float32]) -> None:
        self.vectors = vectors

    def search(self, vector: npt.NDArray[np.float32], n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        ids, scores = top_n(self.vectors @ vector, n)
        return ids, scores

    def warm(self) -> None:
        pass


def top_n(scores: npt.NDArray[np.float32], n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Indices and values of the ``n`` largest scores, best first."""
    n = min(n, len(scores))
    if n <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    part = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    order = part[np.argsort(-scores[part], kind="stable")]
    return order.astype(np.int64), scores[order].astype(np.float32)


def open_embeddings(directory: Path, count: int) -> npt.NDArray[np.uint8]:
    path = directory / EMBEDDINGS_FILE
    expected = count * SEGMENT_ROWS * EMBEDDING_SIZE
    if not path.is_file() or path.stat().st_size != expected:
        raise IndexFormatError(f"{EMBEDDINGS_FILE} is missing or has the wrong size: rebuild the index")
    if count == 0:
        return np.empty((0, SEGMENT_ROWS, EMBEDDING_SIZE), dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(count, SEGMENT_ROWS, EMBEDDING_SIZE))


def iter_vectors(
    embeddings: npt.NDArray[np.uint8], representation: str, *, chunk: int = _CHUNK
) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    """(offset, unit vectors) for consecutive chunks of the raw rows."""
    for lo in range(0, len(embeddings), chunk):
        yield lo, represent(np.asarray(embeddings[lo : lo + chunk]), representation)


def exact_search_many(
    embeddings: npt.NDArray[np.uint8],
    representation: str,
    queries: npt.NDArray[np.float32],
    n: int,
    *,
    matrix: npt.NDArray[np.float32] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Exact top-``n`` for many queries at once, streaming over the rows when no in-memory matrix is given."""
    q = len(queries)
    best_ids = np.zeros((q, 0), dtype=np.int64)
    best_scores = np.zeros((q, 0), dtype=np.float32)
    chunks = [(0, matrix)] if matrix is not None else iter_vectors(embeddings, representation)
    for lo, vectors in chunks:
        scores = queries @ vectors.T  # [q, chunk]
        cand_ids = np.concatenate([best_ids, np.broadcast_to(np.arange(lo, lo + len(vectors)), scores.shape)], axis=1)
        cand_scores = np.concatenate([best_scores, scores], axis=1)
        keep = min(n, cand_scores.shape[1])
        part = np.argpartition(-cand_scores, keep - 1, axis=1)[:, :keep]
        best_ids = np.take_along_axis(cand_ids, part, axis=1)
        best_scores = np.take_along_axis(cand_scores, part, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, axis=1), np.take_along_axis(best_scores, order, axis=1)


def exact_matrix_fits(count: int, representation: str) -> bool:
    return count * dimension(representation) * 4 <= EXACT_MEMORY_BUDGET


class Index:
    """A loaded index: vectors, metadata and one search backend. Build once, share between threads."""

    def __init__(self, directory: Path, *, backend: str = "auto") -> None:
        self.directory = directory
        self.manifest = Manifest.read(directory)
        m = self.manifest
        if m.dimension != dimension(m.representation):
            raise IndexFormatError(f"manifest says {m.representation} with dimension {m.dimension}")
        self.store = SegmentStore(directory / SEGMENTS_FILE)
        if self.store.count != m.count:
            raise IndexFormatError("index metadata and manifest disagree on the segment count: rebuild the index")
        self.embeddings = open_embeddings(directory, m.count)
        self.music_mask = self.store.music_mask()
        chosen = m.preferred_backend if backend == "auto" else backend
        self.backend: AnnoyBackend | ExactBackend
        if chosen == "exact":
            self.backend = ExactBackend(self.all_vectors())
        elif chosen == "annoy":
            self.backend = AnnoyBackend(directory / ANNOY_FILE, m.dimension, search_k=m.search_k)
        else:
            raise IndexFormatError(f"unknown backend {chosen!r}")

    @property
    def representation(self) -> str:
        return self.manifest.representation

    def __len__(self) -> int:
        return self.manifest.count

    def all_vectors(self) -> npt.NDArray[np.float32]:
        out = np.empty((len(self), self.manifest.dimension), dtype=np.float32)
        for lo, vectors in iter_vectors(self.embeddings, self.representation):
            out[lo : lo + len(vectors)] = vectors
        return out

    def vectorize(self, rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """A query vector from [10, 128] uint8 rows, in this index's representation."""
        return represent(np.asarray(rows, dtype=np.uint8)[None], self.representation)[0]

    def item_vector(self, item: int) -> npt.NDArray[np.float32]:
        return self.vectorize(self.embeddings[item])

    def search(self, vector: npt.NDArray[np.float32], n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        return self.backend.search(np.asarray(vector, dtype=np.float32), min(n, len(self)))

    def warm(self) -> None:
        self.backend.warm()

    def close(self) -> None:
        self.store.close()
