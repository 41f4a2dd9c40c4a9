"""The index directory: the one place that knows its files, which files each structure needs, how to check one, and
how a new one replaces a live one.

An index is a directory::

    manifest.json      format version, representation, dimension, count, the approximate structure (``ann``) and its
                       tuned search parameter, recall measured at build time, sources, filters, build time
    embeddings.u8      the raw uint8 rows, [count, 10, 128]: exact search, re-ranking, query-by-segment
    segments.sqlite    item -> video id, start, end, labels, split
    music.u8           the music flag of each item, one byte each (optional: older indexes scan the table)
    labels.npz         every item's label indices, flat, with offsets (optional: older indexes read the table)
    annoy.ann          ann = "annoy": the Annoy forest (angular metric)
    holdout.npy        ann = "annoy": the segments held out of the forest while tuning (optional: older indexes)
    ivf.faiss          ann = "ivf": the faiss inverted-file index with 8-bit codes

Every file is memory-mapped or opened read-only, and every file is readable by everyone the directory is: an index
built on a host serves a container's user.

A build writes into a hidden sibling, ``.NAME.building-PID``, guarded by a lock file beside it that the building
process holds until it is done. A later build (or ``musrec setup``) removes the siblings whose lock nobody holds:
the debris of builds that were killed. Publishing swaps the new directory with the old one in one atomic step
(``renameat2(RENAME_EXCHANGE)`` on Linux), so the path never stands empty, and a process that has the old index
open keeps answering from it (its files stay mapped after they are removed).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from musrec.audioset.representation import SEGMENT_ROWS
from musrec.errors import IndexFormatError, IndexNotFoundError, MusrecError
from musrec.vggish.postprocess import EMBEDDING_SIZE

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EMBEDDINGS_FILE = "embeddings.u8"
SEGMENTS_FILE = "segments.sqlite"
MUSIC_FILE = "music.u8"
LABELS_FILE = "labels.npz"
ANNOY_FILE = "annoy.ann"
HOLDOUT_FILE = "holdout.npy"
IVF_FILE = "ivf.faiss"

# What each approximate structure needs besides the files every index has.
STRUCTURE_FILES = {"annoy": (ANNOY_FILE,), "ivf": (IVF_FILE,)}
COMMON_FILES = (MANIFEST, EMBEDDINGS_FILE, SEGMENTS_FILE)

_BUILDING = "building"
_LEGACY_OLD = "old"  # swapped-out indexes of builds before the atomic exchange
_LOCK_SUFFIX = ".lock"


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
        if not isinstance(data, dict):
            raise IndexFormatError(f"{path} is malformed: not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFormatError(f"index format {version} is not supported (expected {FORMAT_VERSION}): rebuild it")
        try:
            return cls(**data)
        except TypeError as err:
            raise IndexFormatError(f"{path} is malformed: {err}") from None

    def splits(self) -> str:
        """The AudioSet splits the index holds, for people: "eval 120, bal_train 80", counted when it was built
        (splits asked for but absent from the sources are not listed). Indexes built before the count say which
        splits their build asked for."""
        counted = self.ingest.get("splits")
        if not isinstance(counted, dict):
            return ", ".join(self.filters.get("splits", [])) + " (asked for; not counted by this build)"
        named = {split or "no split named": n for split, n in counted.items()}
        return ", ".join(f"{split} {n:,}" for split, n in sorted(named.items(), key=lambda kv: -kv[1])) or "none"

    def structure(self) -> str:
        """The approximate structure and its tuned parameter, for people: "ivf, 2048 lists, nprobe 6, ..."."""
        if self.ann == "ivf":
            return f"ivf, {self.ivf_lists} lists, nprobe {self.nprobe}, re-ranking {self.rerank}"
        return f"annoy, {self.trees} trees, search_k {self.search_k}"


def required_files(manifest: Manifest) -> tuple[str, ...]:
    """The files an index with this manifest cannot be loaded without."""
    if manifest.ann not in STRUCTURE_FILES:
        raise IndexFormatError(f"unknown index structure {manifest.ann!r}: rebuild the index")
    return COMMON_FILES + STRUCTURE_FILES[manifest.ann]


def open_embeddings(directory: Path, count: int) -> npt.NDArray[np.uint8]:
    path = directory / EMBEDDINGS_FILE
    expected = count * SEGMENT_ROWS * EMBEDDING_SIZE
    if not path.is_file() or path.stat().st_size != expected:
        raise IndexFormatError(f"{EMBEDDINGS_FILE} is missing or has the wrong size: rebuild the index")
    if count == 0:
        return np.empty((0, SEGMENT_ROWS, EMBEDDING_SIZE), dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(count, SEGMENT_ROWS, EMBEDDING_SIZE))


def check(directory: Path) -> Manifest:
    """The manifest of a complete index at ``directory``; an :class:`IndexNotFoundError` or
    :class:`IndexFormatError` naming what is wrong otherwise. Cheap: it reads the manifest and looks at file sizes."""
    manifest = Manifest.read(directory)
    for name in required_files(manifest):
        if not (directory / name).is_file():
            raise IndexFormatError(f"the index at {directory} has no {name}")
    open_embeddings(directory, manifest.count)
    return manifest


def problem(directory: Path) -> str | None:
    """Why the index at ``directory`` cannot be used, as one line that says what to do; None when it can."""
    if not directory.exists():
        return f"no index at {directory}: run `musrec setup` (or `musrec index build`)"
    try:
        check(directory)
    except MusrecError as err:
        return f"{err} (run `musrec setup --rebuild`, or `musrec index build --force`)"
    return None


# ---- building beside a live index ------------------------------------------------------------------------------


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A fresh hidden directory beside ``out`` to build into, locked for as long as the block runs.

    The debris of killed builds of ``out`` is removed first. The directory is removed when the block fails; when it
    succeeds, the caller has published it (:func:`publish`), or it is removed.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_debris(out)
    tmp = out.parent / f".{out.name}.{_BUILDING}-{os.getpid()}"
    lock_path = tmp.with_name(tmp.name + _LOCK_SUFFIX)
    with lock_path.open("a+") as lock:
        _flock(lock, blocking=True)
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                yield tmp
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            lock_path.unlink(missing_ok=True)


def publish(tmp: Path, out: Path) -> None:
    """Put the finished index ``tmp`` at ``out``. An existing index is swapped out atomically, then removed;
    ``tmp`` is gone afterwards (it holds the old index until it is removed)."""
    readable_by_all(tmp)
    if not out.exists():
        tmp.rename(out)
        return
    if not out.is_dir() or (not (out / MANIFEST).is_file() and any(out.iterdir())):
        raise IndexFormatError(f"{out} exists and is not a musrec index: refusing to replace it")
    if not _exchange(tmp, out):
        # No atomic exchange on this system: two renames, with a moment between them when out is missing.
        old = out.parent / f".{out.name}.{_LEGACY_OLD}-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        tmp = old
    shutil.rmtree(tmp, ignore_errors=True)


def remove_debris(out: Path) -> list[Path]:
    """Remove what killed builds of ``out`` left beside it; returns what was removed. Running builds are left."""
    removed = []
    for path in debris(out):
        lock_path = path.with_name(path.name + _LOCK_SUFFIX)
        with contextlib.ExitStack() as stack:
            if lock_path.exists():
                lock = stack.enter_context(lock_path.open("a+"))
                if not _flock(lock, blocking=False):
                    continue  # its build is still running
            elif _pid_alive(path.name.rpartition("-")[2]):
                continue  # written before the lock files: judged by its process
            log.warning("removing %s, left by a build that did not finish", path)
            shutil.rmtree(path, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
            removed.append(path)
    for lock_path in out.parent.glob(f".{out.name}.{_BUILDING}-*{_LOCK_SUFFIX}"):
        if not lock_path.with_name(lock_path.name[: -len(_LOCK_SUFFIX)]).exists():
            with lock_path.open("a+") as lock:
                if _flock(lock, blocking=False):
                    lock_path.unlink(missing_ok=True)  # its build was killed after removing its directory
    return removed


def debris(out: Path) -> list[Path]:
    """Hidden build and swap directories of ``out``, finished or not."""
    if not out.parent.is_dir():
        return []
    prefixes = tuple(f".{out.name}.{kind}-" for kind in (_BUILDING, _LEGACY_OLD))
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(prefixes) and not p.name.endswith(_LOCK_SUFFIX))


def readable_by_all(directory: Path) -> None:
    """Give the index's files the modes a plain write would (0644 under the usual umask).

    Annoy writes its forest 0600, which a container user, or any other account than the builder's, cannot read.
    """
    mask = _umask()
    directory.chmod(0o777 & ~mask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~mask)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _flock(f: Any, *, blocking: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX: no locks, and nothing is judged abandoned while its lock file exists
        return blocking
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _pid_alive(text: str) -> bool:
    try:
        pid = int(text)
    except ValueError:
        return False
    if pid == os.getpid():
        return False  # our own leftover from an earlier build in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot swap {a.name} into place: {os.strerror(code)}")
