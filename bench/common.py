"""What several benchmarks share: a warm median of a call, VGGish with random weights, a configuration that keeps
every file under a scratch directory, and a cold page cache.

Random weights in the official layout have the real model's shapes, so the same cost.
"""

from __future__ import annotations

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
