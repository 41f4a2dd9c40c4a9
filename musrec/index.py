"""The vector index: an approximate search structure over segment vectors, with SQLite metadata.

An index is a directory:

- ``manifest.json``: format version, representation, dimension, count, the approximate structure (``ann``) and its
  tuned search parameter (Annoy's ``search_k`` or IVF's ``nprobe``), the recall@10 measured at build time on held-out
  queries and leave-one-out, the backend that measured faster, source files, build time;
- ``annoy.ann`` (``ann = "annoy"``): the Annoy forest (angular metric, memory-mapped, so processes share its pages),
  with ``holdout.npy``: the few segments held out of the forest to measure recall honestly, searched exactly beside it;
- ``ivf.faiss`` (``ann = "ivf"``): a faiss inverted-file index with 8-bit codes, memory-mapped; its candidates are
  re-scored exactly from the raw rows;
- ``embeddings.u8``: the raw uint8 rows, [count, 10, 128], memory-mapped: exact search, re-ranking, query-by-segment,
  and rebuilding with another representation all start from here;
- ``segments.sqlite``: item -> video id, start, end, labels, split; ``music.u8``: its music flags, one byte per item,
  read at load time instead of scanning the table.

Indexes written before the IVF backend (no ``ann`` key) are Annoy indexes and load unchanged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from musrec.backends import (
    RECALL_K,
    AnnoyBackend,
    Backend,
    ExactBackend,
    IvfBackend,
    ScanBackend,
    TopN,
    exact_search_many,
    iter_vectors,
    top_n,
)
from musrec.errors import IndexFormatError, IndexNotFoundError
from musrec.representation import SEGMENT_ROWS, dimension, represent
from musrec.store import SegmentStore
from musrec.vggish.postprocess import EMBEDDING_SIZE

__all__ = [
    "RECALL_K",
    "AnnoyBackend",
    "Backend",
    "ExactBackend",
    "Index",
    "IvfBackend",
    "Manifest",
    "ScanBackend",
    "TopN",
    "exact_matrix_fits",
    "exact_search_many",
    "iter_vectors",
    "open_embeddings",
    "top_n",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ANNOY_FILE = "annoy.ann"
HOLDOUT_FILE = "holdout.npy"
IVF_FILE = "ivf.faiss"
EMBEDDINGS_FILE = "embeddings.u8"
SEGMENTS_FILE = "segments.sqlite"
MUSIC_FILE = "music.u8"
# Exact search keeps a float32 copy of all vectors in memory; above this it is not offered automatically.
EXACT_MEMORY_BUDGET = 2 << 30


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
    # Added with the IVF backend; the defaults describe the Annoy indexes written before it.
    ann: str = "annoy"  # the approximate structure stored: "annoy" or "ivf"
    nprobe: int = 0  # IVF: inverted lists visited per query, tuned like search_k
    ivf_lists: int = 0
    rerank: int = 0  # IVF: candidates re-scored exactly from the raw rows, per 10 results
    recall_leave_one_out: float | None = None  # recall@10 of indexed segments as queries (can be optimistic)
    held_out: int = 0  # segments kept out of the structure while tuning, the queries behind recall_at_10

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


def open_embeddings(directory: Path, count: int) -> npt.NDArray[np.uint8]:
    path = directory / EMBEDDINGS_FILE
    expected = count * SEGMENT_ROWS * EMBEDDING_SIZE
    if not path.is_file() or path.stat().st_size != expected:
        raise IndexFormatError(f"{EMBEDDINGS_FILE} is missing or has the wrong size: rebuild the index")
    if count == 0:
        return np.empty((0, SEGMENT_ROWS, EMBEDDING_SIZE), dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(count, SEGMENT_ROWS, EMBEDDING_SIZE))


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
        self.music_mask = self._music_mask()
        chosen = m.preferred_backend if backend == "auto" else backend
        self.backend: Backend = self._open_backend(chosen)

    def _open_backend(self, name: str) -> Backend:
        m = self.manifest
        if name == "exact":
            # The float vectors are held in memory when they fit; otherwise each query scans the raw rows.
            if exact_matrix_fits(m.count, m.representation):
                return ExactBackend(self.all_vectors())
            return ScanBackend(self.embeddings, m.representation)
        if name not in ("annoy", "ivf"):
            raise IndexFormatError(f"unknown backend {name!r}")
        if name != m.ann:
            raise IndexFormatError(
                f"this index was built with the {m.ann} backend, not {name}: search it with {m.ann} or exact, "
                f"or rebuild it with `musrec index build --backend {name}`"
            )
        if name == "ivf":
            return IvfBackend.load(
                self.directory / IVF_FILE, self.embeddings, m.representation, nprobe=m.nprobe, rerank=m.rerank
            )
        if not (self.directory / HOLDOUT_FILE).is_file():  # indexes built before the held-out sample
            return AnnoyBackend(self.directory / ANNOY_FILE, m.dimension, search_k=m.search_k)
        extra_ids = np.load(self.directory / HOLDOUT_FILE).astype(np.int64)
        return AnnoyBackend(
            self.directory / ANNOY_FILE,
            m.dimension,
            search_k=m.search_k,
            extra_ids=extra_ids,
            extra_vectors=represent(np.asarray(self.embeddings[extra_ids]), m.representation)
            if len(extra_ids)
            else None,
        )

    def _music_mask(self) -> npt.NDArray[np.bool_]:
        path = self.directory / MUSIC_FILE
        if path.is_file() and path.stat().st_size == len(self):
            return np.fromfile(path, dtype=np.uint8).astype(bool)
        return self.store.music_mask()  # indexes built before the flag file

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
        """Read the memory-mapped files once and answer one query, so the first real answer is not slow."""
        self.backend.warm()
        if len(self) and not isinstance(self.backend, ScanBackend):  # a scan would just be a slow query
            self.search(self.item_vector(0), RECALL_K)

    def close(self) -> None:
        self.store.close()
