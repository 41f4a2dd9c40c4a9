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
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from musrec.config import Config
from musrec.errors import DataError, DownloadError
from musrec.setup.download import CHUNK, ChecksumMismatchError, NotEnoughSpaceError, part_path, publish, sha512_file
from musrec.setup.files import fetch_file, find_file, link_or_copy
from musrec.setup.state import SetupOptions, SetupState, Step

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


def verified_record(mf: ModelFile, state: SetupState) -> dict[str, Any] | None:
    """The state record of ``mf`` if setup verified the file as it is now, against the sha512 configured now."""
    record = state.lookup(mf.path)
    if record is None or record.get("verified") != _how(mf):
        return None
    if mf.sha512 and record.get("sha512") != mf.sha512:
        return None
    return record


def ensure_models(config: Config, state: SetupState, options: SetupOptions, emit: Callable[[Step], None]) -> None:
    """Make both VGGish files present and verified, reporting each through ``emit``; DownloadError if it cannot.

    A file in place that does not match is an error (:class:`ChecksumMismatchError`) and is left as it is.
    """
    try:
        _ensure_models(config, state, options, emit)
    except (NotEnoughSpaceError, ChecksumMismatchError):
        raise
    except DownloadError as err:
        raise type(err)(f"{err}; {FROM_ELSEWHERE}") from None


def _ensure_models(config: Config, state: SetupState, options: SetupOptions, emit: Callable[[Step], None]) -> None:
    s = config.setup
    failed: dict[str, DownloadError] = {}
    for mf in model_files(config):
        record = _verified_file(mf, state, options)
        if record is not None:
            emit(Step(mf.name, "present", f"{mf.path}, {record['verified']}"))
            continue
        found = find_file(options.source, mf.member) if options.source else None
        if found is not None:
            emit(_adopt_file(found, mf, state, progress=options.progress))
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
    if failed:
        wanted = [mf for mf in model_files(config) if mf.name in failed]
        _from_bundle(config, wanted, failed, state, options, emit)


def _verified_file(mf: ModelFile, state: SetupState, options: SetupOptions) -> dict[str, Any] | None:
    """The state record of a present file whose checksum matches (hashing it if unknown), None if there is none.

    A file that does not match raises :class:`ChecksumMismatchError`; it stays as it is, and its sha512 is recorded
    (``musrec doctor`` reports the mismatch, the next run does not hash it again).
    """
    if not mf.path.is_file():
        return None
    record = None if options.recheck else state.lookup(mf.path)
    known = record.get("sha512") if record is not None else None
    digest = known if isinstance(known, str) else sha512_file(mf.path, progress=options.progress)
    source = str(record.get("source", FOUND)) if record is not None else FOUND
    if mf.sha512 and digest != mf.sha512:
        if record is None or record.get("sha512") != digest:
            state.record(mf.path, sha512=digest, verified=f"does not match setup.{mf.sha_key}", source=source)
        raise ChecksumMismatchError(
            f"{mf.path} is not the file [setup] {mf.sha_key} names and was left as it is: for a model of your own, "
            f'set [setup] {mf.sha_key} = ""; to fetch the file it names instead, move this one away and run '
            "`musrec setup --models-only` (without network: `musrec setup --from DIR`)"
        )
    if record is not None and record.get("sha512") == digest and record.get("verified") == _how(mf):
        return record
    return state.record(mf.path, sha512=digest, verified=_how(mf), source=source)


def _how(mf: ModelFile) -> str:
    return "sha512 verified" if mf.sha512 else "no checksum configured"


def _adopt_file(src: Path, mf: ModelFile, state: SetupState, *, progress: bool) -> Step:
    """Use a file the user has: verify it, then hard-link it into place (a copy across file systems)."""
    digest = sha512_file(src, progress=progress)
    if mf.sha512 and digest != mf.sha512:
        raise ChecksumMismatchError(
            f"{src} does not match the published sha512 of {mf.member} (nothing was copied): for a model of your "
            f'own, set [setup] {mf.sha_key} = ""'
        )
    how = link_or_copy(src, mf.path, progress=progress)
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
    local = find_file(options.source, BUNDLE_FILE) if options.source else None
    if local is None and (config.models_dir / BUNDLE_FILE).is_file():
        local = config.models_dir / BUNDLE_FILE  # put there by the user: used, and kept
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
