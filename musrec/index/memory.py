"""A build's memory: how much it needs, how much this machine gives it, and what a build that was killed left behind.

A build is refused before it reads a feature when the memory it may use (the memory cgroup's limit: cgroup v2
``memory.max`` or v1 ``memory.limit_in_bytes``, the tightest up the tree; else the physical memory) is below its
estimated peak, with one line giving both figures and the ways out. The estimate follows the build's structure, and
its constants were measured (``bench/fullsize_bench.py --memory-limit``): the runtime (Python, numpy, faiss and
the record reader), the chunks each pass holds, the IVF training sample or the Annoy forest, and the float
matrix that times exact search for indexes under 250,000 segments.

A build records in its hidden directory (``.NAME.building-PID/build-state.json``) the step it is in. A build killed
anyway (the kernel's out-of-memory killer sends SIGKILL: nothing runs after it) leaves that directory behind, and the
next start finds it there and says so, instead of building again to be killed again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from musrec.audioset.records import split_of
from musrec.audioset.representation import dimension
from musrec.index.backends import READ_CHUNK
from musrec.index.layout import _pid_alive, debris
from musrec.index.structures import AUTO_IVF_MIN_COUNT, IVF_TRAIN_PER_LIST, choose_ann, ivf_list_count

log = logging.getLogger(__name__)

STATE_FILE = "build-state.json"
# The release's segments per split (REFERENCE.md section 5): what a build of those splits reads at most.
RELEASE_SEGMENTS = {"bal_train": 22_160, "eval": 20_371, "unbal_train": 2_040_000}
SMALL_SPLITS = ("eval", "bal_train")
# Python, numpy, faiss and the record reader (measured: 720-830 MiB RSS through the ingest of 2M segments,
# bench/fullsize_bench.py, when the reader was TensorFlow's, about 590 MiB of it; reading records no longer loads
# TensorFlow, so this is that much above what a build now holds: kept until measured again at full size).
_RUNTIME = 760 << 20
# Pages written but not yet synced (a pass syncs every 64 MiB), SQLite's cache and the tarball's shard being read.
_PAGES = 96 << 20
_PER_SEGMENT = 48  # a list number, label offsets, the music flag, the sample's bookkeeping
_CHUNK_COPIES = 2  # a pass holds a chunk's float vectors and a temporary of the same size (codes, kept rows)
# A segment's record is about 1,400 bytes (10 rows of 128 bytes, its context, the TFRecord framing); gzip barely
# shrinks embeddings (the release: 2.4 GB for 2.08M segments). Lower bounds, so counts from sizes are upper bounds.
_RECORD_BYTES = 1_300
_COMPRESSED_RECORD_BYTES = 500


@dataclass(frozen=True)
class MemoryLimit:
    bytes: int
    source: str  # "cgroup v2 memory.max", "cgroup v1 memory.limit_in_bytes" or "physical memory"

    def __str__(self) -> str:
        return f"{in_memory_units(self.bytes)} ({self.source})"


@dataclass(frozen=True)
class Estimate:
    count: int
    ann: str
    peak: int  # bytes
    exact_matrix: bool  # whether the float matrix that times exact search is held


def memory_limit() -> MemoryLimit:
    """The memory this process may use: its memory cgroup's limit where one is set, else the physical memory."""
    physical = MemoryLimit(_physical_memory(), "physical memory")
    limits = [limit for limit in _cgroup_limits() if limit.bytes < physical.bytes]
    return min(limits, key=lambda limit: limit.bytes, default=physical)


def estimate(
    count: int,
    *,
    representation: str,
    backend: str,
    ivf_lists: int,
    trees: int,
    queries: int,
    limit: MemoryLimit | None = None,
) -> Estimate:
    """The peak memory of a build of ``count`` segments, counting the file pages it writes as it goes.

    Under 250,000 segments a build also holds every float vector, to time exact search, which can be the faster
    default there; where ``limit`` (default: this machine's) is too small for that, it does not, and the estimate
    says so (``exact_matrix``)."""
    dim = dimension(representation)
    ann = choose_ann(backend, count)
    chunk = min(count, READ_CHUNK) * dim * 4 * _CHUNK_COPIES
    truth = 2 * queries * min(count, READ_CHUNK) * 4 * 2  # exact scores of the recall sample, and a partition
    fixed = _RUNTIME + _PAGES + count * _PER_SEGMENT + truth
    if ann == "ivf":
        lists = ivf_list_count(count, ivf_lists)
        structure = max(min(count, lists * IVF_TRAIN_PER_LIST) * dim * 4, chunk)
    else:
        # Annoy builds its forest in a file it maps: every page of it is written while the trees grow.
        structure = chunk + int(count * (4 * dim + 12) * (1 + 4 * trees / (dim + 2)))
    matrix = count * dim * 4 if count < AUTO_IVF_MIN_COUNT else 0
    with_matrix = Estimate(count, ann, fixed + structure + matrix, exact_matrix=matrix > 0)
    if matrix and with_matrix.peak > (limit or memory_limit()).bytes:
        return Estimate(count, ann, fixed + structure, exact_matrix=False)  # exact search is then not timed
    return with_matrix


def release_segments(splits: tuple[str, ...] | frozenset[str]) -> int:
    """How many segments AudioSet's release has in ``splits``: a build of them reads at most this many."""
    return sum(RELEASE_SEGMENTS.get(split, 0) for split in splits)


def segments_in_sources(sources: Sequence[Path], splits: frozenset[str]) -> int:
    """At most how many segments ``sources`` hold in ``splits``, from their sizes alone (nothing is read)."""
    total = 0
    for source in sources:
        if source.is_dir():
            files = (p for p in source.rglob("*.tfrecord") if not split_of(p) or split_of(p) in splits)
            total += sum(p.stat().st_size for p in files if p.is_file()) // _RECORD_BYTES
        elif source.name.endswith((".tar.gz", ".tgz", ".tar")) and source.is_file():
            per = _RECORD_BYTES if source.name.endswith(".tar") else _COMPRESSED_RECORD_BYTES
            total += min(release_segments(splits), source.stat().st_size // per)
        elif source.is_file():
            total += source.stat().st_size // _RECORD_BYTES
    return total


_WAYS_OUT = (
    f"build fewer segments (`--splits {' '.join(SMALL_SPLITS)}`: {release_segments(SMALL_SPLITS):,} at most), build "
    "the index on a larger machine and copy it here (`musrec setup --from DIR`, with the index in DIR), or give "
    "this machine more memory"
)


def in_memory_units(n: int) -> str:
    """Bytes of memory for people: "1.6 GiB", "750 MiB"."""
    return f"{n / 2**30:.1f} GiB" if n >= 1 << 30 else f"{n / 2**20:.0f} MiB"


def too_small(need: Estimate, limit: MemoryLimit, *, what: str) -> str | None:
    """One line saying the build does not fit and what to do, or None when it fits."""
    if need.peak <= limit.bytes:
        return None
    return (
        f"not enough memory to build {what}: about {need.count:,} segments need about {in_memory_units(need.peak)}, "
        f"and this machine gives {limit}. {_WAYS_OUT[0].upper()}{_WAYS_OUT[1:]}"
    )


# ---- what a build records as it goes, and what a killed one left -------------------------------------------------


class BuildState:
    """The step a build is in, written to its hidden directory (``tmp``) as each step starts, with the memory
    used so far, so that a build killed anyway can be told apart from one that stopped with an error."""

    def __init__(self, tmp: Path, need: Estimate | None, limit: MemoryLimit) -> None:
        self.path = tmp / STATE_FILE
        self.started = time.time()
        self.facts = {
            "pid": os.getpid(),
            "process_started": _process_start(os.getpid()),
            "started": self.started,
            "limit": limit.bytes,
            "limit_source": limit.source,
            "estimate": need.peak if need is not None else None,
            "count": need.count if need is not None else None,
            "oom_kills": _oom_kills(),
        }

    def step(self, name: str) -> None:
        peak = _peak_rss()
        log.info("build step %s: peak RSS so far %s", name, in_memory_units(peak))
        data = {**self.facts, "step": name, "at": time.time(), "peak_rss": peak}
        part = self.path.with_name(self.path.name + ".part")
        part.write_text(json.dumps(data), encoding="utf-8")
        os.replace(part, self.path)

    def done(self) -> None:
        """The build is complete: its directory is about to become the index, without this file."""
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class KilledBuild:
    directory: Path
    step: str
    seconds: float
    peak_rss: int
    limit: int
    oom: bool  # the cgroup counted an out-of-memory kill since the build started

    def prune(self) -> None:
        """Remove what the killed build wrote (it can be gigabytes) but its record, which stays until a build is
        tried again (and removes it)."""
        for path in self.directory.iterdir():
            if path.name != STATE_FILE:
                with contextlib.suppress(OSError):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()

    def message(self, *, retry: str) -> str:
        how = "was killed for lack of memory" if self.oom else "was killed, most likely for lack of memory,"
        return (
            f"the last index build {how} in its {self.step} step after {self.seconds:.0f} s (peak RSS "
            f"{in_memory_units(self.peak_rss)} by then; this machine gives {in_memory_units(self.limit)}). "
            f"Building again would end the same way: {_WAYS_OUT}; {retry} tries again"
        )


def killed_build(out: Path) -> KilledBuild | None:
    """The last build of ``out`` that was killed, from what it left beside ``out``; None if there is none."""
    found = []
    for directory in debris(out):
        try:
            data = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _running(pid, data.get("process_started")):
            continue
        found.append((float(data.get("at", 0.0)), directory, data))
    if not found:
        return None
    at, directory, data = max(found, key=lambda entry: entry[0])
    kills = _oom_kills()
    return KilledBuild(
        directory=directory,
        step=str(data.get("step", "first")),
        seconds=at - float(data.get("started", at)),
        peak_rss=int(data.get("peak_rss") or 0),
        limit=int(data.get("limit") or memory_limit().bytes),
        oom=kills is not None and data.get("oom_kills") is not None and kills > int(data["oom_kills"]),
    )


# ---- reading the system -----------------------------------------------------------------------------------------


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: no limit is claimed


def cgroup_dirs() -> list[tuple[str, Path, Path]]:
    """("v1" or "v2", where the hierarchy is mounted, this process's memory cgroup in it), for each one found."""
    try:
        own = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    paths = {}
    for line in own:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["v1"] = path
    found = []
    for line in mounts:
        fields, _, fs = line.partition(" - ")
        parts, fs_parts = fields.split(), fs.split()
        if len(parts) < 5 or len(fs_parts) < 3:
            continue
        root, point, fstype, options = parts[3], parts[4], fs_parts[0], fs_parts[2]
        kind = "v2" if fstype == "cgroup2" else "v1" if fstype == "cgroup" and "memory" in options.split(",") else ""
        if kind and kind in paths:
            relative = os.path.relpath(paths[kind], root)
            if not relative.startswith(".."):
                found.append((kind, Path(point), Path(point) / relative if relative != "." else Path(point)))
    return found


def _cgroup_limits() -> list[MemoryLimit]:
    limits = []
    for kind, mount, directory in cgroup_dirs():
        name = "memory.max" if kind == "v2" else "memory.limit_in_bytes"
        levels = [directory, *directory.parents]
        for level in levels[: levels.index(mount) + 1] if mount in levels else [directory]:
            try:
                text = (level / name).read_text().strip()
            except OSError:
                continue  # the root of a hierarchy has no limit file
            if text.isdigit():
                limits.append(MemoryLimit(int(text), f"cgroup {kind} {name}"))
    return limits


def _oom_kills() -> int | None:
    """Processes this cgroup's out-of-memory killer has killed, where the kernel counts them."""
    for kind, _, directory in cgroup_dirs():
        name = "memory.events" if kind == "v2" else "memory.oom_control"
        try:
            for line in (directory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def _running(pid: int, started: int | None) -> bool:
    """Whether the build process ``pid`` still runs: the same number and, where /proc tells, the same start."""
    if pid == os.getpid():
        return False  # a build of this process that did not finish
    now = _process_start(pid)
    if now is not None or started is not None:
        return now is not None and now == started
    return _pid_alive(str(pid))  # no /proc: its number alone


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), to tell it from a later process with its number."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def _peak_rss() -> int:
    try:
        import resource
    except ImportError:  # not POSIX
        return 0
    usage = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return usage if sys.platform == "darwin" else usage * 1024  # bytes on macOS, kilobytes on Linux
