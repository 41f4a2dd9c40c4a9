"""Building the IVF structure in bounded memory: train on a sample, assign every segment, then write the inverted
lists straight into ``ivf.faiss``.

faiss's own way (``add_with_ids``, then ``write_index``) holds every 8-bit code in memory before writing: 2 million
segments x 1280 bytes is 2.4 GiB, more than a small server has. Here the codes never are all in memory:

1. **train**: the coarse centroids (spherical k-means) on a sample, then the 8-bit quantiser on the sample's
   residuals, computed in place (faiss's ``IndexIVF.train`` makes a second float copy of the sample for them);
2. **assign**: one pass over the raw rows gives each segment its list (8 bytes a segment), so each list's size, and
   with it each list's place in the file, is known before a code is written;
3. **write**: a second pass encodes each chunk's residuals and writes each list's share at that list's next free
   place, syncing every :data:`~musrec.index.backends.SYNC_BYTES` so that dirty pages (which count against a memory
   cgroup and, under cgroup v1, are not written back for it) stay few.

The file is byte for byte what ``faiss.write_index`` writes for the same index with its segments added in id order
(an ``IndexIVFScalarQuantizer`` whose ``ArrayInvertedLists`` are stored "full": the sizes, then each list's codes
and ids), so :class:`~musrec.index.backends.IvfBackend` reads it memory-mapped as before.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from musrec.audioset.representation import dimension, represent
from musrec.index.backends import SYNC_BYTES, IvfBackend, read_chunks

log = logging.getLogger(__name__)

KMEANS_ITERATIONS = 10
# A structure's search while it is tuned: (unit vector, results, its search parameter) -> ids, best first.
SearchAt = Callable[[npt.NDArray[np.float32], int, int], npt.NDArray[np.int64]]

# What faiss writes for empty ArrayInvertedLists: "ilar", nlist, code_size, "sprs", an empty vector of sizes.
_EMPTY_LISTS = struct.Struct("<4sQQ4sQ")
_ID_BYTES = 8  # faiss idx_t
_SUB_CHUNK = 4096  # rows whose centroids are subtracted at once: a bounded temporary


class IvfFileWriter:
    """One IVF index: ``train`` on a sample, ``assign`` chunks in id order, then ``write`` the file."""

    def __init__(self, dim: int, lists: int, *, count: int, seed: int, niter: int) -> None:
        import faiss

        self.dim = dim
        self.lists = lists
        self.count = count
        self.quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFScalarQuantizer(
            self.quantizer, dim, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        self.cp = faiss.ClusteringParameters()
        self.cp.niter = niter
        self.cp.seed = seed
        self.cp.spherical = True  # unit vectors, inner product: centroids on the sphere
        self.assigned = np.full(count, -1, dtype=np.int64)

    def train(self, sample: npt.NDArray[np.float32]) -> None:
        """Train on ``sample`` (float32 unit vectors), which is overwritten with its residuals."""
        import faiss

        started = time.monotonic()
        clustering = faiss.Clustering(self.dim, self.lists, self.cp)
        clustering.train(sample, self.quantizer)
        for lo in range(0, len(sample), _SUB_CHUNK):
            part = sample[lo : lo + _SUB_CHUNK]
            part -= self.centroids[self._nearest(part)]
        self.index.sq.train(sample)
        self.index.is_trained = True
        log.info("ivf: %d lists trained on %d vectors in %.1f s", self.lists, len(sample), time.monotonic() - started)

    @property
    def centroids(self) -> npt.NDArray[np.float32]:
        import faiss

        return faiss.rev_swig_ptr(self.quantizer.get_xb(), self.lists * self.dim).reshape(self.lists, self.dim)

    def _nearest(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        _, found = self.quantizer.search(np.ascontiguousarray(vectors), 1)
        return found[:, 0].astype(np.int64)

    def assign(self, lo: int, vectors: npt.NDArray[np.float32]) -> None:
        """The list of each of the segments ``lo, lo + 1, ...``."""
        self.assigned[lo : lo + len(vectors)] = self._nearest(vectors)

    def write(self, path: Path, chunks: Iterable[tuple[int, npt.NDArray[np.float32]]]) -> None:
        """Write ``ivf.faiss``; ``chunks`` gives every segment's vector again, in id order."""
        if (self.assigned < 0).any():
            raise ValueError("every segment must be assigned before the lists are written")
        started = time.monotonic()
        code_size = int(self.index.code_size)
        sizes = np.bincount(self.assigned, minlength=self.lists).astype(np.int64)
        head = self._header(sizes, code_size)
        starts = len(head) + np.concatenate([[0], np.cumsum(sizes * (code_size + _ID_BYTES))[:-1]])
        code_at = starts.copy()  # each list's next free code, then its ids after all its codes
        id_at = starts + sizes * code_size
        centroids = self.centroids
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, int(starts[-1] + sizes[-1] * (code_size + _ID_BYTES)))
            _write_at(fd, head, 0)
            unsynced = 0
            for lo, vectors in chunks:
                lists = self.assigned[lo : lo + len(vectors)]
                for s in range(0, len(vectors), _SUB_CHUNK):
                    vectors[s : s + _SUB_CHUNK] -= centroids[lists[s : s + _SUB_CHUNK]]
                codes = self.index.sq.compute_codes(vectors)
                order = np.argsort(lists, kind="stable")
                codes, ids, lists = codes[order], (order + lo).astype("<i8"), lists[order]
                bounds = np.flatnonzero(np.diff(lists)) + 1
                for a, b in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(lists)].tolist(), strict=True):
                    k = int(lists[a])
                    _write_at(fd, codes[a:b].data, int(code_at[k]))
                    _write_at(fd, ids[a:b].data, int(id_at[k]))
                    code_at[k] += (b - a) * code_size
                    id_at[k] += (b - a) * _ID_BYTES
                unsynced += len(vectors) * (code_size + _ID_BYTES)
                if unsynced >= SYNC_BYTES:
                    os.fdatasync(fd)
                    unsynced = 0
            os.fsync(fd)
        finally:
            os.close(fd)
        if not np.array_equal(code_at, starts + sizes * code_size):
            raise ValueError("the segments written differ from those assigned")
        log.info("ivf: %d codes written list by list in %.1f s", self.count, time.monotonic() - started)

    def _header(self, sizes: npt.NDArray[np.int64], code_size: int) -> bytes:
        """faiss's serialisation of the trained index, with ``ntotal`` set and the lists' sizes, stored "full"."""
        import faiss

        self.index.ntotal = self.count
        try:
            empty = faiss.serialize_index(self.index).tobytes()
        finally:
            self.index.ntotal = 0
        tail = _EMPTY_LISTS.pack(b"ilar", self.lists, code_size, b"sprs", 0)
        if not empty.endswith(tail):
            raise RuntimeError("this faiss serialises IVF indexes differently: cannot write the lists")
        lists = struct.pack("<4sQQ4sQ", b"ilar", self.lists, code_size, b"full", self.lists)
        return empty[: -len(tail)] + lists + sizes.astype("<u8").tobytes()


def _write_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class IvfWriter:
    """The IVF structure, written by :class:`~musrec.index.ivf_file.IvfFileWriter`: every segment is assigned to
    its list, the held-out ones too; the tuning searches leave those out."""

    def __init__(
        self, path: Path, raw: Path, representation: str, dim: int, lists: int, *, count: int, seed: int
    ) -> None:
        self.path = path
        self.raw = raw
        self.representation = representation
        self.lists = lists
        self.file = IvfFileWriter(dim, lists, count=count, seed=seed, niter=KMEANS_ITERATIONS)

    def train(self, vectors: npt.NDArray[np.float32]) -> None:
        self.file.train(vectors)

    def add(self, lo: int, vectors: npt.NDArray[np.float32], held_out: npt.NDArray[np.int64]) -> None:
        self.file.assign(lo, vectors)

    def tuning_search(
        self,
        embeddings: npt.NDArray[np.uint8],
        representation: str,
        *,
        rerank: int,
        held_out: npt.NDArray[np.int64],
        on_step: Callable[[str], None],
    ) -> SearchAt:
        on_step("write")
        count = len(embeddings)
        chunks = ((lo, represent(rows, representation)) for lo, rows in read_chunks(self.raw, count))
        try:
            self.file.write(self.path, chunks)
        except OSError as err:
            need = count * (self.file.index.code_size + 8)  # the codes and their ids
            if err.errno == errno.ENOSPC or shutil.disk_usage(self.path.parent).free < need:
                raise OSError(errno.ENOSPC, f"no space left writing {self.path.name}: {err}") from None
            raise
        del self.file  # the trained index and the lists' assignment: the file holds them now
        backend = IvfBackend.load(self.path, embeddings, representation, nprobe=1, rerank=rerank, excluded=held_out)

        def search(vector: npt.NDArray[np.float32], n: int, value: int) -> npt.NDArray[np.int64]:
            return backend.search(vector, n, nprobe=value)[0]

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
    ) -> IvfBackend:
        return IvfBackend.load(self.path, embeddings, representation, nprobe=value, rerank=rerank)


def training_vectors(
    raw: Path, count: int, representation: str, held_out: npt.NDArray[np.int64], size: int, seed: int
) -> npt.NDArray[np.float32]:
    """A random sample of the indexed segments (never the held-out ones)."""
    rng = np.random.default_rng((seed, 1))
    pool = np.setdiff1d(np.arange(count, dtype=np.int64), held_out, assume_unique=True)
    chosen = np.sort(rng.choice(pool, size=min(size, len(pool)), replace=False))
    del pool
    out = np.empty((len(chosen), dimension(representation)), dtype=np.float32)  # filled in place: one copy
    done = 0
    for lo, rows in read_chunks(raw, count):
        picked = chosen[(chosen >= lo) & (chosen < lo + len(rows))] - lo
        if len(picked):
            out[done : done + len(picked)] = represent(rows[picked], representation)
            done += len(picked)
    return out
