"""Getting a file setup needs into the data directory: downloaded, or taken from files the user already has.

Downloads use the ``[setup]`` timeout and retries. A file the user has (``musrec setup --from DIR``) is found by
name and goes in through a ``.part``, like a download, so nothing half-written ever sits under a final name: a
hard link where the file systems allow one (instant, no extra space), else a copy. With ``--from`` nothing is ever
downloaded: what DIR lacks is a :class:`NotInSourceError` naming each file and where to get it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from musrec.config import SetupConfig
from musrec.errors import DataError
from musrec.progress import Meter
from musrec.setup.download import CHUNK, Downloaded, discard_partial, fetch_first, part_path, publish


def fetch_file(
    settings: SetupConfig,
    urls: Sequence[str],
    dest: Path,
    *,
    what: str,
    sha512: str = "",
    progress: bool,
) -> Downloaded:
    """:func:`~musrec.setup.download.fetch_first` with the ``[setup]`` timeout and retry settings."""
    return fetch_first(
        urls,
        dest,
        what=what,
        sha512=sha512,
        timeout_s=settings.timeout_s,
        retries=settings.retries,
        retry_wait_s=settings.retry_wait_s,
        progress=progress,
    )


@dataclass(frozen=True)
class Wanted:
    """A file set-up needs that ``--from DIR`` does not hold: what it is called there, and where to get it."""

    names: str  # "vggish_model.ckpt", "features.tar.gz (2.4 GB) or its unpacked audioset_v1_embeddings/"
    url: str

    def __str__(self) -> str:
        return f"{self.names} from {self.url}" if self.url else self.names


class NotInSourceError(DataError):
    """``--from DIR`` lacks files set-up needs; nothing was downloaded. ``wanted`` names each (several stages add
    theirs, so one run names everything missing)."""

    def __init__(self, source: Path, wanted: Sequence[Wanted]) -> None:
        self.source = source
        self.wanted = tuple(wanted)
        super().__init__(
            f"--from {source} does not hold what set-up still needs, and nothing was downloaded: "
            + "; ".join(str(w) for w in self.wanted)
            + f". Copy them into {source} (any folder below it will do) from a machine with network; or let "
            "`musrec setup` without --from download them"
        )


def find_file(directory: Path | None, name: str) -> Path | None:
    """``directory/name``, else the first file called ``name`` below ``directory``."""
    if directory is None:
        return None
    direct = directory / name
    if direct.is_file():
        return direct
    return next((p for p in sorted(directory.rglob(name)) if p.is_file()), None)


def link_or_copy(src: Path, dest: Path, *, progress: bool) -> str:
    """Hard-link ``src`` to ``dest`` (through a ``.part``), or copy it where a link is impossible."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if dest.exists() and os.path.samefile(src, dest):
            return "linked"
    part = part_path(dest)
    discard_partial(dest)
    try:
        os.link(src, part)
        how = "linked"
    except OSError:
        copy_file(src, part, progress=progress)
        how = "copied"
    publish(part, dest)
    return how


def copy_file(src: Path, dest: Path, *, progress: bool = False) -> None:
    """Copy ``src`` to ``dest`` (which must not be a final name: callers copy to a ``.part``)."""
    meter = Meter(f"copying {src.name}", total=src.stat().st_size, enabled=progress)
    try:
        with src.open("rb") as fin, dest.open("wb") as fout:
            while chunk := fin.read(CHUNK):
                fout.write(chunk)
                meter.update(len(chunk))
            fout.flush()
            os.fsync(fout.fileno())
    finally:
        meter.close()
