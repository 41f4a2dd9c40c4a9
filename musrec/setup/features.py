"""AudioSet's features in the data directory: the tarball or its unpacked tree, found, from ``--from``, or fetched.

The features have no published checksum: their size is checked against the server's ``Content-Length`` and the
tarball is read through to the end (gzip CRC, tar structure); an unpacked tree has each TFRecord file's header
checked. A tree from ``--from`` is mirrored with hard links (copies across file systems).

A tarball already on this machine (in place, or from ``--from``) is not read once to check it and again to build:
the build reads it to the end of its gzip stream and refuses an index of part of it
(:class:`~musrec.audioset.records.DamagedArchiveError`, which :func:`verified_by_build` words as the check did), and
:func:`record_verified` records it as verified after a build that read it whole. A download is still checked before
it is published.

Features in place that fail their check are left as they are (set-up stops and says so): they may be the user's,
and a download is only ever published once it has passed the same check.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from musrec.config import Config
from musrec.errors import DataError, DownloadError
from musrec.progress import Meter
from musrec.setup.download import CHUNK, ChecksumMismatchError, NotEnoughSpaceError
from musrec.setup.files import NotInSourceError, Wanted, fetch_file, find_file, link_or_copy
from musrec.setup.options import SetupOptions, Step
from musrec.setup.state import TFRECORD, SetupState

if TYPE_CHECKING:
    from musrec.audioset.records import IngestReport

log = logging.getLogger(__name__)

AUDIOSET_DIR = "audioset"
FEATURES_TARBALL = "features.tar.gz"
EMBEDDINGS_DIR = "audioset_v1_embeddings"
# Appended to a failed download: the ways to set up without one.
FROM_ELSEWHERE = (
    f"if this machine cannot download them, copy {FEATURES_TARBALL} (or {EMBEDDINGS_DIR}/) from one that can into "
    "a directory DIR and run `musrec setup --from DIR`; with an index built elsewhere in place, "
    "`musrec setup --models-only` is all the set-up needed"
)


@dataclass(frozen=True)
class Features:
    """A features source in the data directory. ``verified`` False: a tarball the build is to read to its end before
    it counts as verified (``source``: where it was linked or copied from; ``url``: where this run downloaded it
    from; both None if it was in place)."""

    path: Path
    verified: bool = True
    source: Path | None = None
    url: str | None = None


def ensure_features(
    config: Config, state: SetupState, options: SetupOptions, emit: Callable[[Step], None]
) -> Features | None:
    """The features source in the data directory (a directory of TFRecords, or the tarball), or None: verified, or a
    tarball whose check is the build's reading of it (see :func:`verified_by_build`)."""
    audioset = config.data_dir / AUDIOSET_DIR
    tree, tarball = audioset / EMBEDDINGS_DIR, audioset / FEATURES_TARBALL
    for candidate in (tree, tarball):
        if not candidate.exists():
            continue
        record = None if options.recheck else state.lookup(candidate)
        if record is None and candidate == tarball:
            emit(Step("features", "present", f"{candidate}, to be read to the end as the index builds"))
            return Features(candidate, verified=False)
        if record is None:
            try:
                record = state.record(candidate, **_check_features(candidate, progress=options.progress))
            except DataError as err:
                raise DataError(
                    f"{err} (in {audioset}, left as it is): move it away and run `musrec setup` again"
                ) from None
        emit(Step("features", "present", f"{candidate}, {record['verified']}"))
        return Features(candidate)
    found = (find_file(options.source, FEATURES_TARBALL) or _find_tree(options.source)) if options.source else None
    if found is not None and not found.is_dir():
        how = link_or_copy(found, tarball, progress=options.progress)
        emit(Step("features", how, f"from {found}; to be read to the end as the index builds"))
        return Features(tarball, verified=False, source=found)
    if found is not None:
        facts = _check_features(found, progress=options.progress)
        how = _link_tree(found, tree)
        state.record(tree, **facts, source=str(found))
        emit(Step("features", how, f"from {found}; {facts['verified']}"))
        return Features(tree)
    if not options.features:
        return None
    if options.source is not None:  # --from: nothing is downloaded
        url = next(iter(config.setup.features_urls), "")
        raise NotInSourceError(
            options.source, [Wanted(f"{FEATURES_TARBALL} (2.4 GB) or its unpacked {EMBEDDINGS_DIR}/", url)]
        )
    return _download_features(config, tarball, options, emit)


@contextlib.contextmanager
def verified_by_build(features: Features, state: SetupState, emit: Callable[[Step], None]) -> Iterator[None]:
    """Around the build from ``features``: an unverified tarball read whole is recorded as verified; one that ends
    early or is damaged is refused as its own check refused it (left as it is when it was in place, removed when
    set-up linked or copied it from ``--from``). The build's report gives what the tarball holds."""
    from musrec.audioset.records import DamagedArchiveError

    if features.verified:
        yield
        return
    path = features.path
    try:
        yield
    except DamagedArchiveError as err:
        reason = "; ".join(err.reasons) or str(err)
        if features.url is not None:  # a download that fails its check is not kept
            path.unlink(missing_ok=True)
            raise DownloadError(
                f"could not fetch the AudioSet features: {features.url}: the download is not a complete tarball: "
                f"{reason} (the download was discarded; run `musrec setup` again, or {FROM_ELSEWHERE})"
            ) from None
        if features.source is not None:
            path.unlink(missing_ok=True)
            raise DataError(f"{features.source.name} is not a complete tarball: {reason}") from None
        raise DataError(
            f"{path.name} is not a complete tarball: {reason} (in {path.parent}, left as it is): move it away and "
            "run `musrec setup` again"
        ) from None


def record_verified(features: Features, report: IngestReport, state: SetupState, emit: Callable[[Step], None]) -> None:
    """Record an unverified tarball that a build has read to its end (``report.archived``) as verified."""
    if features.verified:
        return
    facts = _facts(report.archived, "tarball reads to the end (as the index built)", name=features.path.name)
    origin = features.url or (str(features.source) if features.source is not None else None)
    source = {"source": origin} if origin is not None else {}
    state.record(features.path, **facts, **source)
    emit(Step("features", "verified", f"{features.path}, {facts['verified']}"))


def _download_features(config: Config, tarball: Path, options: SetupOptions, emit: Callable[[Step], None]) -> Features:
    """The features tarball downloaded (size checked against Content-Length, sha512 if one is configured), to be read
    to its end by the build that follows (:func:`verified_by_build`): one read of 2.4 GB, not one more to check it."""
    s = config.setup
    try:
        got = fetch_file(
            s,
            s.features_urls,
            tarball,
            what="the AudioSet features",
            sha512=s.features_sha512,
            progress=options.progress,
        )
    except (NotEnoughSpaceError, ChecksumMismatchError):
        raise
    except DownloadError as err:
        raise type(err)(f"{err}; {FROM_ELSEWHERE}") from None
    size = "size matches Content-Length" if got.size_checked else "no size announced by the server"
    checked = ("sha512 verified; " if s.features_sha512 else "") + size
    emit(Step("features", "downloaded", f"{got.summary()}; {checked}; to be read to the end as the index builds"))
    return Features(tarball, verified=False, url=got.url)


def _check_features(path: Path, *, progress: bool, name: str | None = None) -> dict[str, Any]:
    """Read a features tarball through (gzip CRC, tar structure), or look over a directory; count TFRecord files."""
    from musrec.audioset.records import looks_like_tfrecord, split_of

    counts: dict[str, int] = {}
    if path.is_dir():
        for file in sorted(path.rglob(f"*{TFRECORD}")):
            if not looks_like_tfrecord(file):
                raise DataError(f"{file} is not a TFRecord file")
            split = split_of(file) or "other"
            counts[split] = counts.get(split, 0) + 1
        what = "TFRecord headers check"
    else:
        counts = _read_tarball(path, progress=progress, name=name or path.name)
        what = "tarball reads to the end"
    return _facts(counts, what, name=name or path.name)


def _facts(counts: dict[str, int], what: str, *, name: str) -> dict[str, Any]:
    """What the state records of verified features: TFRecord files by split, and how they were checked."""
    total = sum(counts.values())
    if total == 0:
        raise DataError(f"{name} holds no {TFRECORD} files")
    by_split = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return {"tfrecords": counts, "verified": f"{what}: {total:,} TFRecord files ({by_split})"}


def _read_tarball(path: Path, *, progress: bool, name: str) -> dict[str, int]:
    from musrec.audioset.records import split_of

    counts: dict[str, int] = {}
    meter = Meter(f"checking {path.name.removesuffix('.part')}", total=path.stat().st_size, enabled=progress)
    try:
        with path.open("rb") as raw:
            reader = _MeteredReader(raw, meter)
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream: Any = gzip.GzipFile(fileobj=cast(Any, reader), mode="rb") if gzipped else reader
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if member.isfile() and member.name.endswith(TFRECORD):
                        split = split_of(PurePosixPath(member.name)) or "other"
                        counts[split] = counts.get(split, 0) + 1
                # Past the end-of-archive marker, to the gzip trailer: its CRC covers every byte.
                while stream.read(CHUNK):
                    pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"{name} is not a complete tarball: {err}") from None
    finally:
        meter.close()
    return counts


class _MeteredReader:
    def __init__(self, raw: BinaryIO, meter: Meter) -> None:
        self.raw = raw
        self.meter = meter

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.meter.update(len(data))
        return data


def _find_tree(directory: Path) -> Path | None:
    """An ``audioset_v1_embeddings`` directory: ``directory`` itself, or one inside it."""
    if directory.name == EMBEDDINGS_DIR or any((directory / split).is_dir() for split in ("bal_train", "eval")):
        return directory
    return next((p for p in sorted(directory.rglob(EMBEDDINGS_DIR)) if p.is_dir()), None)


def _link_tree(src: Path, dest: Path) -> str:
    """Mirror a directory of TFRecord files into ``dest`` with hard links (copies across file systems)."""
    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    how = "linked"
    for file in sorted(src.rglob(f"*{TFRECORD}")):
        target = part / file.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(file, target)
        except OSError:
            shutil.copyfile(file, target)
            how = "copied"
    if dest.exists():
        shutil.rmtree(dest)
    part.rename(dest)
    return how
