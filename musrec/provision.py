"""First run: fetch and verify the VGGish files and AudioSet's features, then build the default index.

Everything lands in the data directory (``data.dir``)::

    models/vggish_model.ckpt, models/vggish_pca_params.npz   (or embedder.checkpoint / embedder.pca_params)
    audioset/features.tar.gz  or  audioset/audioset_v1_embeddings/{bal_train,eval,unbal_train}/*.tfrecord
    index/                                                    (or index.path)
    setup-state.json                                          what was verified, and the index setup built

The VGGish files come from Google's URLs, else from IBM's MAX bundle (just the two files are extracted), and must
match their published sha512. The features have no published checksum: their size is checked against the server's
``Content-Length`` and the tarball is read through to the end (gzip CRC, tar structure). ``setup-state.json``
records size, modification time and sha512 of every verified file, so a rerun re-hashes nothing that is unchanged;
it also records the index setup built and the ``[build]`` settings it used, so an unchanged index is not rebuilt,
and an index built elsewhere is left alone. Runs sharing a data directory take turns (a lock file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import logging
import os
import shutil
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

from musrec.config import Config
from musrec.download import (
    CHUNK,
    ChecksumMismatchError,
    Downloaded,
    Meter,
    NotEnoughSpaceError,
    copy_file,
    discard_partial,
    fetch_first,
    human_bytes,
    part_path,
    publish,
    sha512_file,
)
from musrec.errors import DataError, DownloadError, MusrecError
from musrec.index import ANNOY_FILE, SEGMENTS_FILE, Manifest, open_embeddings

log = logging.getLogger(__name__)

STATE_FILE = "setup-state.json"
STATE_VERSION = 1
LOCK_FILE = ".setup.lock"
AUDIOSET_DIR = "audioset"
FEATURES_TARBALL = "features.tar.gz"
EMBEDDINGS_DIR = "audioset_v1_embeddings"
BUNDLE_FILE = "assets.tar.gz"
CHECKPOINT_NAME = "vggish_model.ckpt"
PCA_NAME = "vggish_pca_params.npz"
TFRECORD = ".tfrecord"


@dataclass(frozen=True)
class Step:
    """One thing setup did or found: ``checkpoint: downloaded (289.0 MB from ...; sha512 verified)``."""

    name: str
    action: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.action}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True, kw_only=True)
class SetupOptions:
    models: bool = True  # the VGGish files
    features: bool = True  # may download the features (only ever when an index must be built)
    index: bool = True  # build the default index when it is missing or out of date
    source: Path | None = None  # a directory of files the user already has (--from)
    rebuild: bool = False  # build the index even if it is up to date (or was built elsewhere)
    refresh_index: bool = True  # rebuild an index setup built when the [build] settings changed
    recheck: bool = False  # re-hash files even if the state file says they are verified
    progress: bool = False


@dataclass(frozen=True)
class ModelFile:
    name: str  # "checkpoint" or "pca params"
    path: Path
    urls: tuple[str, ...]
    sha512: str  # "" when no check is configured
    member: str  # file name inside the MAX bundle and in --from directories
    key: str  # the config key that points elsewhere


def model_files(config: Config) -> list[ModelFile]:
    s = config.setup
    return [
        ModelFile(
            "checkpoint",
            config.checkpoint_path,
            s.checkpoint_urls,
            s.checkpoint_sha512.lower(),
            CHECKPOINT_NAME,
            "embedder.checkpoint",
        ),
        ModelFile(
            "pca params", config.pca_params_path, s.pca_urls, s.pca_sha512.lower(), PCA_NAME, "embedder.pca_params"
        ),
    ]


# ---- the state file -----------------------------------------------------------------------------------------


class SetupState:
    """``setup-state.json``: verified files by path (with the size and mtime they had), and the index setup built."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / STATE_FILE
        self.files: dict[str, dict[str, Any]] = {}
        self.index: dict[str, Any] = {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(raw, dict) and raw.get("version") == STATE_VERSION:
            self.files = dict(raw.get("files") or {})
            self.index = dict(raw.get("index") or {})

    def key(self, path: Path) -> str:
        path = path.absolute()
        try:
            return path.relative_to(self.data_dir.absolute()).as_posix()
        except ValueError:
            return str(path)

    def lookup(self, path: Path) -> dict[str, Any] | None:
        """The record of ``path`` if it is unchanged since it was verified."""
        record = self.files.get(self.key(path))
        if record is None or not path.exists():
            return None
        return record if all(record.get(k) == v for k, v in signature(path).items()) else None

    def record(self, path: Path, **facts: Any) -> dict[str, Any]:
        entry = {**signature(path), **facts, "at": _now()}
        self.files[self.key(path)] = entry
        self.save()
        return entry

    def save(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        data = {"version": STATE_VERSION, "files": self.files, "index": self.index}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def signature(path: Path) -> dict[str, int]:
    """Size and modification time of a file; for a directory, of all its TFRecord files together."""
    if path.is_dir():
        files = [p.stat() for p in path.rglob(f"*{TFRECORD}") if p.is_file()]
        return {
            "size": sum(s.st_size for s in files),
            "mtime_ns": max((s.st_mtime_ns for s in files), default=0),
            "files": len(files),
        }
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---- public entry points ------------------------------------------------------------------------------------


def setup(config: Config, options: SetupOptions, *, on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """Fetch, verify and build whatever is missing; returns (and reports through ``on_step``) what was done."""
    steps: list[Step] = []

    def emit(step: Step) -> None:
        steps.append(step)
        log.info("%s", step)
        if on_step is not None:
            on_step(step)

    if options.source is not None and not options.source.is_dir():
        raise DataError(f"--from {options.source}: not a directory")
    with _locked(config.data_dir):
        state = SetupState(config.data_dir)
        if options.models:
            _ensure_models(config, state, options, emit)
        _check_labels(emit)
        if options.index:
            _ensure_index(config, state, options, emit)
    return steps


def check_ready(config: Config) -> list[str]:
    """One line per thing missing before musrec can answer queries with this configuration; empty when ready."""
    problems = []
    if config.embedder.kind == "local":
        for mf in model_files(config):
            if not mf.path.is_file():
                problems.append(
                    f"VGGish {mf.name} not found ({mf.path}): run `musrec setup --models-only`, or set {mf.key}"
                )
    problem = index_problem(config.index_path)
    if problem:
        problems.append(problem)
    return problems


def ensure_ready(config: Config, *, progress: bool) -> None:
    """Do whatever setup is missing (downloads, verification, the index build) and return once musrec is ready.

    Fast when nothing is missing: nothing is hashed or locked. An existing index is used as it is, even if the
    ``[build]`` settings changed since (run ``musrec setup`` to rebuild). With ``embedder.kind = "max"`` the
    VGGish files are not needed and not fetched. Raises a :class:`~musrec.errors.MusrecError` if it cannot.
    """
    if not check_ready(config):
        return
    options = SetupOptions(models=config.embedder.kind == "local", refresh_index=False, progress=progress)
    setup(config, options)
    problems = check_ready(config)
    if problems:
        raise DataError(problems[0])


def index_problem(directory: Path) -> str | None:
    """Why the index at ``directory`` cannot be used (one line), or None."""
    if not directory.exists():
        return f"no index at {directory}: run `musrec setup` (or `musrec index build`)"
    try:
        manifest = Manifest.read(directory)
        for name in (ANNOY_FILE, SEGMENTS_FILE):
            if not (directory / name).is_file():
                return f"the index at {directory} has no {name}: run `musrec setup --rebuild`"
        open_embeddings(directory, manifest.count)
    except MusrecError as err:
        return f"{err} (run `musrec setup`)"
    return None


# ---- models -------------------------------------------------------------------------------------------------


def _ensure_models(config: Config, state: SetupState, options: SetupOptions, emit: Callable[[Step], None]) -> None:
    s = config.setup
    failed: dict[str, DownloadError] = {}
    for mf in model_files(config):
        record = _verified_file(mf, state, options)
        if record is not None:
            emit(Step(mf.name, "present", f"{mf.path}, {record['verified']}"))
            continue
        found = _find(options.source, mf.member) if options.source else None
        if found is not None:
            emit(_adopt_file(found, mf, state, progress=options.progress))
            continue
        try:
            got = fetch_first(
                mf.urls,
                mf.path,
                what=mf.path.name,
                sha512=mf.sha512,
                timeout_s=s.timeout_s,
                retries=s.retries,
                retry_wait_s=s.retry_wait_s,
                progress=options.progress,
            )
        except NotEnoughSpaceError:
            raise
        except DownloadError as err:
            failed[mf.name] = err
            continue
        state.record(mf.path, sha512=got.sha512, verified=_how(mf), source=got.url)
        emit(Step(mf.name, "downloaded", f"{_transfer(got)}; {_how(mf)}"))
    if failed:
        wanted = [mf for mf in model_files(config) if mf.name in failed]
        _from_bundle(config, wanted, failed, state, options, emit)


def _verified_file(mf: ModelFile, state: SetupState, options: SetupOptions) -> dict[str, Any] | None:
    """The state record of a present file whose checksum matches (hashing it if unknown); a bad file is removed."""
    if not mf.path.is_file():
        return None
    record = None if options.recheck else state.lookup(mf.path)
    if record is not None and (not mf.sha512 or record.get("sha512") == mf.sha512):
        return record
    digest = sha512_file(mf.path, progress=options.progress)
    if mf.sha512 and digest != mf.sha512:
        log.warning("%s does not match its published sha512: removed, fetching it again", mf.path)
        mf.path.unlink()
        return None
    return state.record(mf.path, sha512=digest, verified=_how(mf), source="found in place")


def _how(mf: ModelFile) -> str:
    return "sha512 verified" if mf.sha512 else "no checksum configured"


def _adopt_file(src: Path, mf: ModelFile, state: SetupState, *, progress: bool) -> Step:
    """Use a file the user has: verify it, then hard-link it into place (a copy across file systems)."""
    digest = sha512_file(src, progress=progress)
    if mf.sha512 and digest != mf.sha512:
        raise ChecksumMismatchError(f"{src} does not match the published sha512 of {mf.member}")
    how = _link_or_copy(src, mf.path, progress=progress)
    state.record(mf.path, sha512=digest, verified=_how(mf), source=str(src))
    return Step(mf.name, how, f"from {src}; {_how(mf)}")


def _from_bundle(
    config: Config,
    wanted: list[ModelFile],
    failed: dict[str, DownloadError],
    state: SetupState,
    options: SetupOptions,
    emit: Callable[[Step], None],
) -> None:
    """Extract the files Google's URLs did not give from IBM's MAX bundle (``assets.tar.gz``)."""
    s = config.setup
    local = _find(options.source, BUNDLE_FILE) if options.source else None
    if local is None and not s.bundle_urls:
        raise next(iter(failed.values()))
    bundle = local or config.models_dir / BUNDLE_FILE
    origin = str(local) if local else ""
    if local is None:
        log.warning("falling back to the MAX bundle for %s", ", ".join(mf.member for mf in wanted))
        try:
            got = fetch_first(
                s.bundle_urls,
                bundle,
                what="the MAX bundle",
                timeout_s=s.timeout_s,
                retries=s.retries,
                retry_wait_s=s.retry_wait_s,
                progress=options.progress,
            )
        except NotEnoughSpaceError:
            raise
        except DownloadError as err:
            first = next(iter(failed.values()))
            raise type(first)(f"{first}; the MAX bundle failed too: {err}") from None
        origin = got.url
    try:
        by_member = {mf.member: mf for mf in wanted}
        extracted = _extract(bundle, by_member)
        for member, mf in by_member.items():
            if member not in extracted:
                raise DataError(f"the MAX bundle has no {member}")
            part = part_path(mf.path)
            digest = sha512_file(part)
            if mf.sha512 and digest != mf.sha512:
                part.unlink()
                raise ChecksumMismatchError(f"{member} in the MAX bundle does not match its published sha512")
            publish(part, mf.path)
            state.record(mf.path, sha512=digest, verified=_how(mf), source=f"{origin} ({member})")
            emit(Step(mf.name, "extracted", f"{mf.path.name} from the MAX bundle {origin}; {_how(mf)}"))
    finally:
        for mf in wanted:
            part_path(mf.path).unlink(missing_ok=True)
        if local is None:
            bundle.unlink(missing_ok=True)


def _extract(bundle: Path, wanted: dict[str, ModelFile]) -> set[str]:
    """Stream the bundle, writing each wanted member (found by base name) to its ``.part``."""
    found: set[str] = set()
    try:
        with tarfile.open(bundle, mode="r|*") as tar:
            for member in tar:
                name = PurePosixPath(member.name).name
                if not member.isfile() or name not in wanted or name in found:
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                dest = wanted[name].path
                dest.parent.mkdir(parents=True, exist_ok=True)
                with src, part_path(dest).open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                found.add(name)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"the MAX bundle is not a readable tarball: {err}") from None
    return found


# ---- labels -------------------------------------------------------------------------------------------------


def _check_labels(emit: Callable[[Step], None]) -> None:
    from musrec.labels import default_labels

    try:
        labels = default_labels()
    except (OSError, DataError, ValueError) as err:
        raise DataError(
            f"AudioSet's label files are missing from this installation ({err}): reinstall musrec"
        ) from None
    emit(Step("labels", "shipped", f"{len(labels.names)} AudioSet classes, {len(labels.music)} in the Music subtree"))


# ---- features and the index ---------------------------------------------------------------------------------


def _ensure_index(config: Config, state: SetupState, options: SetupOptions, emit: Callable[[Step], None]) -> None:
    path = config.index_path
    wanted = _fingerprint(config)
    ours = state.index.get("path") == str(path.absolute()) and _manifest_stamp(path) == state.index.get("manifest")
    if _occupied(path) and not options.rebuild:
        problem = index_problem(path)
        if problem is None and not ours:
            emit(Step("index", "kept", f"{path} was not built by musrec setup; --rebuild replaces it"))
            return
        if problem is None and state.index.get("build") == wanted:
            emit(Step("index", "up to date", _summary(Manifest.read(path), path)))
            return
        if problem is None and not options.refresh_index:
            emit(Step("index", "kept", f"{path}, built with other [build] settings; `musrec setup` rebuilds it"))
            return
        if problem is not None and not ours:
            raise DataError(f"{problem}; `musrec setup --rebuild` replaces it")
    source = _features(config, state, options, emit)
    if source is None:
        emit(Step("index", "skipped", "no AudioSet features here: run `musrec setup` without --skip-features"))
        return
    manifest = _build(config, source, progress=options.progress)
    state.index = {"path": str(path.absolute()), "build": wanted, "manifest": _manifest_stamp(path), "at": _now()}
    state.save()
    emit(Step("index", "built", f"{_summary(manifest, path)}, in {manifest.build_seconds:.1f} s"))


def _occupied(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def _fingerprint(config: Config) -> dict[str, Any]:
    """The [build] settings, as JSON would give them back (tuples become lists)."""
    loaded: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config.build), sort_keys=True))
    return loaded


def _manifest_stamp(directory: Path) -> dict[str, Any] | None:
    try:
        manifest = Manifest.read(directory)
    except MusrecError:
        return None
    return {"built_at": manifest.built_at, "count": manifest.count, **signature(directory / "manifest.json")}


def _summary(m: Manifest, path: Path) -> str:
    splits = ", ".join(m.filters.get("splits", [])) or "all splits"
    music = ", music only" if m.filters.get("music_only") else ""
    return (
        f"{m.count:,} segments at {path} ({splits}{music}); {m.representation} {m.dimension}-d, "
        f"search_k {m.search_k}, recall@10 {m.recall_at_10:.3f}"
    )


def _features(config: Config, state: SetupState, options: SetupOptions, emit: Callable[[Step], None]) -> Path | None:
    """A verified features source in the data directory (a directory of TFRecords, or the tarball), or None."""
    audioset = config.data_dir / AUDIOSET_DIR
    tree, tarball = audioset / EMBEDDINGS_DIR, audioset / FEATURES_TARBALL
    for candidate in (tree, tarball):
        if not candidate.exists():
            continue
        record = None if options.recheck else state.lookup(candidate)
        if record is None:
            try:
                record = state.record(candidate, **_check_features(candidate, progress=options.progress))
            except DataError as err:
                if candidate == tree:
                    raise
                log.warning("%s: %s; fetching it again", candidate, err)
                candidate.unlink()
                continue
        emit(Step("features", "present", f"{candidate}, {record['verified']}"))
        return candidate
    found = (_find(options.source, FEATURES_TARBALL) or _find_tree(options.source)) if options.source else None
    if found is not None:
        facts = _check_features(found, progress=options.progress)
        dest = tree if found.is_dir() else tarball
        how = _link_tree(found, dest) if found.is_dir() else _link_or_copy(found, dest, progress=options.progress)
        state.record(dest, **facts, source=str(found))
        emit(Step("features", how, f"from {found}; {facts['verified']}"))
        return dest
    if not options.features:
        return None
    return _download_features(config, tarball, state, options, emit)


def _download_features(
    config: Config, tarball: Path, state: SetupState, options: SetupOptions, emit: Callable[[Step], None]
) -> Path:
    s = config.setup
    facts: dict[str, Any] = {}

    def check(part: Path) -> None:
        facts.update(_check_features(part, progress=options.progress, name="the download"))

    got = fetch_first(
        s.features_urls,
        tarball,
        what="the AudioSet features",
        sha512=s.features_sha512,
        timeout_s=s.timeout_s,
        retries=s.retries,
        retry_wait_s=s.retry_wait_s,
        progress=options.progress,
        check=check,
    )
    size = "size matches Content-Length" if got.size_checked else "no size announced by the server"
    facts["verified"] = ("sha512 verified; " if s.features_sha512 else "") + f"{size}; {facts['verified']}"
    state.record(tarball, sha512=got.sha512, source=got.url, **facts)
    emit(Step("features", "downloaded", f"{_transfer(got)}; {facts['verified']}"))
    return tarball


def _check_features(path: Path, *, progress: bool, name: str | None = None) -> dict[str, Any]:
    """Read a features tarball through (gzip CRC, tar structure), or look over a directory; count TFRecord files."""
    from musrec.audioset import looks_like_tfrecord, split_of

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
    total = sum(counts.values())
    if total == 0:
        raise DataError(f"{name or path.name} holds no {TFRECORD} files")
    by_split = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return {"tfrecords": counts, "verified": f"{what}: {total:,} TFRecord files ({by_split})"}


def _read_tarball(path: Path, *, progress: bool, name: str) -> dict[str, int]:
    from musrec.audioset import split_of

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


def _build(config: Config, source: Path, *, progress: bool) -> Manifest:
    from musrec.audioset import IngestReport, SegmentFilter, read_segments
    from musrec.build import BuildOptions, build_index
    from musrec.labels import default_labels

    b = config.build
    labels = default_labels()
    filt = SegmentFilter(
        splits=frozenset(b.splits),
        music_only=b.music_only,
        include_labels=labels.indices_of(b.include_labels),
        exclude_labels=labels.indices_of(b.exclude_labels),
        min_seconds=b.min_seconds,
        short_segments=b.short_segments,
    )
    report = IngestReport()
    bar: Any = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit=" segments", unit_scale=True, desc="indexing", file=sys.stderr, mininterval=0.5, leave=False)
    try:
        return build_index(
            read_segments([source], labels=labels, filt=filt, report=report),
            config.index_path,
            labels=labels,
            options=BuildOptions(
                representation=b.representation,
                trees=b.trees,
                target_recall=b.target_recall,
                recall_queries=b.recall_queries,
                seed=b.seed,
            ),
            sources=[str(source)],
            filters={
                "splits": sorted(b.splits),
                "music_only": b.music_only,
                "include_labels": list(b.include_labels),
                "exclude_labels": list(b.exclude_labels),
                "min_seconds": b.min_seconds,
                "short_segments": b.short_segments,
            },
            report=report,
            force=True,
            progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()


# ---- files the user already has -----------------------------------------------------------------------------


def _find(directory: Path | None, name: str) -> Path | None:
    if directory is None:
        return None
    direct = directory / name
    if direct.is_file():
        return direct
    return next((p for p in sorted(directory.rglob(name)) if p.is_file()), None)


def _find_tree(directory: Path) -> Path | None:
    """An ``audioset_v1_embeddings`` directory: ``directory`` itself, or one inside it."""
    if directory.name == EMBEDDINGS_DIR or any((directory / split).is_dir() for split in ("bal_train", "eval")):
        return directory
    return next((p for p in sorted(directory.rglob(EMBEDDINGS_DIR)) if p.is_dir()), None)


def _link_or_copy(src: Path, dest: Path, *, progress: bool) -> str:
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


def _transfer(got: Downloaded) -> str:
    fetched = f"{human_bytes(got.transferred)} in {got.seconds:.1f} s, {human_bytes(got.rate)}/s"
    if got.resumed_from:
        return f"{human_bytes(got.size)} from {got.url}, resumed at {human_bytes(got.resumed_from)}: {fetched}"
    return f"{human_bytes(got.size)} from {got.url}: {fetched}"


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """One setup at a time per data directory (bots sharing a volume all start at once)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with (data_dir / LOCK_FILE).open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another musrec setup in %s to finish", data_dir)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
