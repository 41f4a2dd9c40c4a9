"""The vector index: a loaded index directory (see :mod:`musrec.index.layout` for its files) with one search backend.

The backend is the approximate structure the index was built with (Annoy or IVF), or exact search. Indexes written
before the IVF backend (no ``ann`` key) are Annoy indexes and load unchanged.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from musrec.audioset.representation import dimension, represent
from musrec.errors import IndexFormatError
from musrec.index.backends import (
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
from musrec.index.layout import (
    ANNOY_FILE,
    HOLDOUT_FILE,
    IVF_FILE,
    LABELS_FILE,
    MUSIC_FILE,
    SEGMENTS_FILE,
    Manifest,
    check,
    open_embeddings,
)
from musrec.index.store import ItemLabels, SegmentStore, load_labels

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

# Exact search keeps a float32 copy of all vectors in memory; above this it is not offered automatically.
EXACT_MEMORY_BUDGET = 2 << 30
_MASKS_KEPT = 64  # label filters remembered (a 2M-item mask is 2 MB)


def exact_matrix_fits(count: int, representation: str) -> bool:
    return count * dimension(representation) * 4 <= EXACT_MEMORY_BUDGET


class Index:
    """A loaded index: vectors, metadata and one search backend. Build once, share between threads."""

    def __init__(self, directory: Path, *, backend: str = "auto") -> None:
        self.directory = directory
        self.manifest = check(directory)
        m = self.manifest
        if m.dimension != dimension(m.representation):
            raise IndexFormatError(f"manifest says {m.representation} with dimension {m.dimension}")
        self.store = SegmentStore(directory / SEGMENTS_FILE)
        if self.store.count != m.count:
            raise IndexFormatError("index metadata and manifest disagree on the segment count: rebuild the index")
        self.embeddings = open_embeddings(directory, m.count)
        self.music_mask = self._music_mask()
        self._item_labels: ItemLabels | None = None  # read on the first label filter
        self._masks: dict[tuple[frozenset[int], frozenset[int]], npt.NDArray[np.bool_]] = {}
        self._labels_lock = threading.Lock()
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

    def label_mask(self, include: frozenset[int], exclude: frozenset[int]) -> npt.NDArray[np.bool_] | None:
        """Items with a label in ``include`` (any item when it is empty) and none in ``exclude``; None: no filter."""
        if not include and not exclude:
            return None
        key = (include, exclude)
        with self._labels_lock:
            if key not in self._masks:
                if self._item_labels is None:
                    loaded = load_labels(self.directory / LABELS_FILE, len(self))
                    self._item_labels = loaded if loaded is not None else self.store.item_labels()
                mask = self._item_labels.mask(include) if include else np.ones(len(self), dtype=bool)
                if exclude:
                    mask &= ~self._item_labels.mask(exclude)
                if len(self._masks) >= _MASKS_KEPT:
                    self._masks.pop(next(iter(self._masks)))
                self._masks[key] = mask
            return self._masks[key]

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

    def search(
        self, vector: npt.NDArray[np.float32], n: int, *, widen: float = 1.0
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``n`` nearest items; ``widen`` > 1 makes an approximate structure look further (filtered searches)."""
        return self.backend.search(np.asarray(vector, dtype=np.float32), min(n, len(self)), widen=widen)

    def search_among(
        self, vector: npt.NDArray[np.float32], n: int, allowed: npt.NDArray[np.bool_], *, widen: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], bool] | None:
        """The ``n`` nearest of the ``allowed`` items, where the structure can filter while it searches (IVF), and
        whether it looked everywhere; None where it cannot (Annoy: the caller over-fetches instead)."""
        if not isinstance(self.backend, IvfBackend):
            return None
        ids, scores = self.backend.search(np.asarray(vector, dtype=np.float32), n, widen=widen, allowed=allowed)
        return ids, scores, widen >= self.backend.widest

    def warm(self) -> None:
        """Read the memory-mapped files once and answer one query, so the first real answer is not slow."""
        self.backend.warm()
        if len(self) and not isinstance(self.backend, ScanBackend):  # a scan would just be a slow query
            self.search(self.item_vector(0), RECALL_K)

    def close(self) -> None:
        self.store.close()
