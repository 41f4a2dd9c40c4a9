"""What several benchmarks share: a warm median of a call, VGGish with random weights, a configuration that keeps
every file under a scratch directory, a cold page cache, and a memory cgroup to run a command as a small machine.

Random weights in the official layout have the real model's shapes, so the same cost.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from musrec.config import Config
    from musrec.embedding.local import LocalEmbedder


def median_s(fn: Callable[[], Any], repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``fn``, after one call to warm it up."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def random_embedder(directory: Path) -> LocalEmbedder:
    """VGGish with random weights (its checkpoint and PCA files written into ``directory``), warmed up."""
    from musrec.embedding.local import LocalEmbedder
    from musrec.vggish.checkpoint import write_random_checkpoint, write_random_pca_params

    embedder = LocalEmbedder(
        write_random_checkpoint(directory / "vggish_model.ckpt"),
        write_random_pca_params(directory / "vggish_pca_params.npz"),
    )
    embedder.warm_up()
    return embedder


def scratch_config(base: Config, tmp: Path) -> Config:
    """``base`` with the index at ``tmp/index`` and all a bot writes (its data directory: the searches behind its
    buttons; the link cache) under ``tmp``: a benchmark never touches the real home's musrec directories."""
    from dataclasses import replace

    return replace(
        base,
        index=replace(base.index, path=tmp / "index"),
        youtube=replace(base.youtube, cache_path=tmp / "cache.sqlite3"),
        data=replace(base.data, dir=tmp / "data"),
    )


def evict_page_cache(paths: list[Path]) -> tuple[int, int]:
    """Drop the cached pages of every file under ``paths`` (posix_fadvise DONTNEED: no privileges needed), as after a
    reboot; (files, bytes) asked. Pages mapped by a running process stay: run no other user of these files."""
    files = size = 0
    for root in paths:
        for path in [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                files += 1
                size += os.fstat(fd).st_size
            finally:
                os.close(fd)
    return files, size


class MemoryCgroup:
    """A memory cgroup of its own, under this process's, limited to ``limit`` bytes with no swap: a command run in
    it (``preexec``) meets the memory of a small machine. Made with :meth:`create`, which gives None where no cgroup
    can be made (not root, no writable memory hierarchy, cgroup v2 without delegation): callers then skip."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind

    @classmethod
    def create(cls, limit: int, name: str) -> MemoryCgroup | None:
        from musrec.index.memory import cgroup_dirs

        limit = -(-limit // os.sysconf("SC_PAGE_SIZE")) * os.sysconf("SC_PAGE_SIZE")  # the kernel rounds down
        for kind, _, parent in cgroup_dirs():
            path = parent / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
            try:
                path.mkdir()
            except OSError:
                continue
            group = cls(path, kind)
            try:
                if kind == "v1":
                    (path / "memory.limit_in_bytes").write_text(str(limit))
                    with contextlib.suppress(OSError):  # absent without swap accounting
                        (path / "memory.memsw.limit_in_bytes").write_text(str(limit))
                else:
                    (path / "memory.max").write_text(str(limit))
                    (path / "memory.swap.max").write_text("0")
            except OSError:
                group.remove()
                continue
            return group
        return None

    def preexec(self) -> None:
        """For ``subprocess.Popen(preexec_fn=...)``: the child moves itself in before it runs the command."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def _read(self, v1: str, v2: str, key: str | None = None) -> int:
        text = (self.path / (v1 if self.kind == "v1" else v2)).read_text()
        if key is None:
            return int(text.strip())
        return next((int(v) for k, _, v in (line.partition(" ") for line in text.splitlines()) if k == key), 0)

    def usage(self) -> int:
        return self._read("memory.usage_in_bytes", "memory.current")

    def peak(self) -> int:
        """The most this cgroup has held (anonymous memory and page cache, file pages included)."""
        return self._read("memory.max_usage_in_bytes", "memory.peak")

    def oom_kills(self) -> int:
        return self._read("memory.oom_control", "memory.events", "oom_kill")

    def remove(self) -> None:
        for _ in range(50):  # a process that just exited can take a moment to leave
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
