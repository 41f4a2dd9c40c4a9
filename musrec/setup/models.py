"""The VGGish files (checkpoint and PCA parameters): found in place, taken from ``--from``, or fetched, then verified.

They come from Google's URLs, else from IBM's MAX bundle (just the two files are extracted), and must match the
sha512 in ``[setup]``: Google's published values by default, ``""`` for a model of your own (any file will do).
A file's sha512 is remembered in ``setup-state.json``, so a file is hashed once, not at every start.

Nothing here deletes or replaces a file that is in place. A file that does not match its sha512 is left exactly as
it is, and set-up stops with a :class:`~musrec.setup.download.ChecksumMismatchError` saying what to do: set the
sha512 to ``""`` to use the file, or move it away and run ``musrec setup --models-only`` (``musrec setup --from DIR``
without network) to get Google's file. That holds for a file musrec downloaded itself and that was damaged or replaced
since: a path, a size and a time cannot tell it from a file of the user's, so every file in place is the user's.
Only musrec's own leftovers are removed: the ``.part`` files of unfinished downloads and extractions, and a MAX
bundle it fetched to extract from (a bundle found in the models directory is used and kept).

With ``--from DIR`` nothing is downloaded: the files come from DIR (or a MAX bundle in it), and those it lacks are
named with where to get them (:class:`~musrec.setup.files.NotInSourceError`). :func:`model_state` is what set-up
knows of a file without hashing it: ``check_ready`` (the bot's start) and ``musrec doctor`` both ask it.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from musrec.config import Config, user_config_file
from musrec.config.values import env_name
from musrec.errors import DataError, DownloadError
from musrec.setup.download import CHUNK, ChecksumMismatchError, NotEnoughSpaceError, part_path, publish, sha512_file
from musrec.setup.files import Wanted, fetch_file, find_file, link_or_copy
from musrec.setup.options import SetupOptions, Step
from musrec.setup.state import SetupState

log = logging.getLogger(__name__)

BUNDLE_FILE = "assets.tar.gz"
CHECKPOINT_NAME = "vggish_model.ckpt"
PCA_NAME = "vggish_pca_params.npz"
FOUND = "found in place"
# Appended to a failed download: the way to set up without one.
FROM_ELSEWHERE = (
    f"if this machine cannot download them, copy {CHECKPOINT_NAME} and {PCA_NAME} (or MAX's {BUNDLE_FILE}) "
    "from one that can into a directory DIR and run `musrec setup --from DIR --models-only`"
)


@dataclass(frozen=True)
class ModelFile:
    name: str  # "checkpoint" or "pca params"
    path: Path
    urls: tuple[str, ...]
    sha512: str  # "" when no check is configured
    member: str  # file name inside the MAX bundle and in --from directories
    key: str  # the config key that points elsewhere
    sha_key: str  # the [setup] key that holds its sha512


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
            "checkpoint_sha512",
        ),
        ModelFile(
            "pca params",
            config.pca_params_path,
            s.pca_urls,
            s.pca_sha512.lower(),
            PCA_NAME,
            "embedder.pca_params",
            "pca_sha512",
        ),
    ]


# What a model file in place is, as far as set-up knows without hashing it again.
MISSING, UNVERIFIED, CHANGED, MISMATCH, VERIFIED = "missing", "not verified", "changed", "mismatch", "verified"


@dataclass(frozen=True)
class ModelFileState:
    """A VGGish file in place and what ``setup-state.json`` says of it: ``status`` is one of MISSING, UNVERIFIED
    (never hashed, or checked against other [setup] settings), CHANGED (since it was verified), MISMATCH (its
    recorded sha512 is not the configured one: set-up and the bot's start refuse it) or VERIFIED."""

    file: ModelFile
    status: str
    record: dict[str, Any] | None = None


def model_state(mf: ModelFile, state: SetupState) -> ModelFileState:
    """What set-up knows of ``mf`` now (nothing is hashed): the one answer for ``check_ready`` and the doctor."""
    if not mf.path.is_file():
        return ModelFileState(mf, MISSING)
    record = state.lookup(mf.path)
    if record is None:
        return ModelFileState(mf, CHANGED if state.key(mf.path) in state.files else UNVERIFIED)
    if mf.sha512 and record.get("sha512") != mf.sha512:
        return ModelFileState(mf, MISMATCH, record)
    return ModelFileState(mf, VERIFIED if verified_record(mf, state) else UNVERIFIED, record)


def mismatch_message(files: Sequence[ModelFile], config_file: Path | None) -> str:
    """What to do about model files in place that are not the ones ``[setup]`` names, all of them in one line."""
    where = str(config_file) if config_file is not None else f"{user_config_file()} or ./config.toml"
    settings = " and ".join(f'{mf.sha_key} = ""' for mf in files)
    variables = " ".join(f"{env_name(f'setup.{mf.sha_key}')}=" for mf in files)
    what = ", and ".join(f"{mf.path} is not the file [setup] {mf.sha_key} names" for mf in files)
    them = "them" if len(files) > 1 else "it"
    return (
        f"{what}; left as {'they are' if len(files) > 1 else 'it is'}. For a model of your own, set {settings} "
        f"under [setup] in {where} (or {variables} in the environment); to fetch the published "
        f"{'files' if len(files) > 1 else 'file'} instead, move {them} away and run `musrec setup --models-only` "
        "(without network: `musrec setup --from DIR`)"
    )


def verified_record(mf: ModelFile, state: SetupState) -> dict[str, Any] | None:
    """The state record of ``mf`` if setup verified the file as it is now, against the sha512 configured now."""
    record = state.lookup(mf.path)
    if record is None or record.get("verified") != _how(mf):
        return None
    if mf.sha512 and record.get("sha512") != mf.sha512:
        return None
    return record


def ensure_models(
    config: Config, state: SetupState, options: SetupOptions, emit: Callable[[Step], None]
) -> list[Wanted]:
    """Make both VGGish files present and verified, reporting each through ``emit``; DownloadError if it cannot.

    Files in place that do not match are one error (:class:`ChecksumMismatchError`, naming each) and are left as
    they are. With ``options.source`` nothing is downloaded: the files it lacks are returned (empty: none).
    """
    try:
        return _ensure_models(config, state, options, emit)
    except (NotEnoughSpaceError, ChecksumMismatchError):
        raise
    except DownloadError as err:
        raise type(err)(f"{err}; {FROM_ELSEWHERE}") from None


def _ensure_models(
    config: Config, state: SetupState, options: SetupOptions, emit: Callable[[Step], None]
) -> list[Wanted]:
    s = config.setup
    files = model_files(config)
    # Every file in place is checked before anything is fetched, and every mismatch is named at once.
    present = {mf.name: _verified_file(mf, state, options) for mf in files if mf.path.is_file()}
    wrong = [mf for mf in files if mf.name in present and present[mf.name] is None]
    if wrong:
        raise ChecksumMismatchError(mismatch_message(wrong, config.file))
    failed: dict[str, DownloadError] = {}
    supplied_wrong: list[str] = []
    absent: list[ModelFile] = []
    for mf in files:
        record = present.get(mf.name)
        if record is not None:
            emit(Step(mf.name, "present", f"{mf.path}, {record['verified']}"))
            continue
        found = find_file(options.source, mf.member) if options.source else None
        if found is not None:
            step = _adopt_file(found, mf, state, progress=options.progress)
            if isinstance(step, str):
                supplied_wrong.append(step)
            else:
                emit(step)
            continue
        if options.source is not None:
            absent.append(mf)
            continue
        try:
            got = fetch_file(s, mf.urls, mf.path, what=mf.path.name, sha512=mf.sha512, progress=options.progress)
        except NotEnoughSpaceError:
            raise
        except DownloadError as err:
            failed[mf.name] = err
            continue
        state.record(mf.path, sha512=got.sha512, verified=_how(mf), source=got.url)
        emit(Step(mf.name, "downloaded", f"{got.summary()}; {_how(mf)}"))
    if supplied_wrong:
        raise ChecksumMismatchError("; ".join(supplied_wrong) + " (nothing was copied)")
    if absent:
        bundle = _local_bundle(config, options)
        if bundle is None:
            return _wanted(config, absent)
        _from_bundle(config, absent, {}, state, options, emit, local=bundle)
    if failed:
        wanted = [mf for mf in files if mf.name in failed]
        _from_bundle(config, wanted, failed, state, options, emit, local=_local_bundle(config, options))
    return []


def _wanted(config: Config, absent: list[ModelFile]) -> list[Wanted]:
    """What to fetch for the files ``--from`` lacks: each file, and MAX's bundle that holds both."""
    wanted = [Wanted(mf.member, next(iter(mf.urls), "")) for mf in absent]
    if config.setup.bundle_urls:
        both = " (instead of both files)" if len(absent) > 1 else f" (instead of {absent[0].member})"
        wanted.append(Wanted(f"or MAX's {BUNDLE_FILE}{both}", config.setup.bundle_urls[0]))
    return wanted


def _verified_file(mf: ModelFile, state: SetupState, options: SetupOptions) -> dict[str, Any] | None:
    """The state record of a present file whose checksum matches (hashing it if unknown), None if it does not
    match: the file stays as it is, and its sha512 is recorded (``musrec doctor`` and the bot's start see the
    mismatch without hashing it again)."""
    record = None if options.recheck else state.lookup(mf.path)
    known = record.get("sha512") if record is not None else None
    digest = known if isinstance(known, str) else sha512_file(mf.path, progress=options.progress)
    source = str(record.get("source", FOUND)) if record is not None else FOUND
    if mf.sha512 and digest != mf.sha512:
        if record is None or record.get("sha512") != digest:
            state.record(mf.path, sha512=digest, verified=f"does not match setup.{mf.sha_key}", source=source)
        return None
    if record is not None and record.get("sha512") == digest and record.get("verified") == _how(mf):
        return record
    return state.record(mf.path, sha512=digest, verified=_how(mf), source=source)


def _how(mf: ModelFile) -> str:
    return "sha512 verified" if mf.sha512 else "no checksum configured"


def _adopt_file(src: Path, mf: ModelFile, state: SetupState, *, progress: bool) -> Step | str:
    """Use a file the user has: verify it, then hard-link it into place (a copy across file systems). A file that
    does not match is not used: what to do about it is returned instead."""
    digest = sha512_file(src, progress=progress)
    if mf.sha512 and digest != mf.sha512:
        return (
            f"{src} does not match the published sha512 of {mf.member}: for a model of your own, set "
            f'[setup] {mf.sha_key} = "" (or {env_name(f"setup.{mf.sha_key}")}= in the environment)'
        )
    how = link_or_copy(src, mf.path, progress=progress)
    state.record(mf.path, sha512=digest, verified=_how(mf), source=str(src))
    return Step(mf.name, how, f"from {src}; {_how(mf)}")


def _local_bundle(config: Config, options: SetupOptions) -> Path | None:
    """MAX's bundle in ``--from DIR``, else one the user put in the models directory (used, and kept)."""
    local = find_file(options.source, BUNDLE_FILE) if options.source else None
    if local is None and (config.models_dir / BUNDLE_FILE).is_file():
        local = config.models_dir / BUNDLE_FILE
    return local


def _from_bundle(
    config: Config,
    wanted: list[ModelFile],
    failed: dict[str, DownloadError],
    state: SetupState,
    options: SetupOptions,
    emit: Callable[[Step], None],
    *,
    local: Path | None,
) -> None:
    """Extract the files Google's URLs (or ``--from``) did not give from IBM's MAX bundle (``assets.tar.gz``):
    ``local`` when the user has one, else downloaded."""
    s = config.setup
    if local is None and not s.bundle_urls:
        raise next(iter(failed.values()))
    bundle = local or config.models_dir / BUNDLE_FILE
    origin = str(local) if local else ""
    if local is None:
        log.warning("falling back to the MAX bundle for %s", ", ".join(mf.member for mf in wanted))
        try:
            got = fetch_file(s, s.bundle_urls, bundle, what="the MAX bundle", progress=options.progress)
        except NotEnoughSpaceError:
            raise
        except DownloadError as err:
            first = next(iter(failed.values()))
            kind = type(first) if isinstance(err, type(first)) else DownloadError
            raise kind(f"{first}; the MAX bundle failed too: {err}") from None
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
