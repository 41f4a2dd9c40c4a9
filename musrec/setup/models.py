"""The VGGish files (checkpoint and PCA parameters): found in place, taken from ``--from``, or fetched, then verified.

They come from Google's URLs, else from IBM's MAX bundle (just the two files are extracted), and must match their
published sha512.
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


def ensure_models(config: Config, state: SetupState, options: SetupOptions, emit: Callable[[Step], None]) -> None:
    """Make both VGGish files present and verified, reporting each through ``emit``; DownloadError if it cannot."""
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
