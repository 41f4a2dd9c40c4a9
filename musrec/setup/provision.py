"""First run: fetch and verify the VGGish files and AudioSet's features, then build the default index.

Everything lands in the data directory (``data.dir``)::

    models/vggish_model.ckpt, models/vggish_pca_params.npz   (or embedder.checkpoint / embedder.pca_params)
    audioset/features.tar.gz  or  audioset/audioset_v1_embeddings/{bal_train,eval,unbal_train}/*.tfrecord
    index/                                                    (or index.path)
    setup-state.json                                          what was verified, and the index setup built

This module runs the stages in order and builds the index: :mod:`musrec.setup.models` fetches the VGGish files and
checks their published sha512, :mod:`musrec.setup.features` fetches or finds the features and reads them through,
and :mod:`musrec.setup.state` remembers what was verified and built, so a rerun re-hashes nothing that is unchanged
and does not rebuild an unchanged index (nor touch an index built elsewhere). Runs sharing a data directory take
turns (a lock file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from musrec.config import Config
from musrec.errors import DataError, MusrecError
from musrec.index.layout import MANIFEST, Manifest, problem, remove_debris
from musrec.index.memory import KilledBuild, killed_build, memory_limit, release_segments, too_small
from musrec.setup.features import ensure_features, record_verified, verified_by_build
from musrec.setup.files import NotInSourceError, Wanted
from musrec.setup.models import MISMATCH, MISSING, VERIFIED, ensure_models, mismatch_message, model_files, model_state
from musrec.setup.options import SetupOptions, Step
from musrec.setup.state import SetupState, changed_keys, describe_changes, now, setup_flags, signature

if TYPE_CHECKING:
    from musrec.audioset.labels import Labels
    from musrec.audioset.records import IngestReport

log = logging.getLogger(__name__)

LOCK_FILE = ".setup.lock"


# ---- public entry points ------------------------------------------------------------------------------------


def setup(config: Config, options: SetupOptions, *, on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """Fetch, verify and build whatever is missing; returns (and reports through ``on_step``) what was done.

    With ``options.source`` (``--from DIR``) nothing is downloaded: what DIR lacks is one
    :class:`~musrec.setup.files.NotInSourceError` at the end, naming every file. Model files in place that are not
    the configured ones are one :class:`~musrec.setup.download.ChecksumMismatchError` naming each; failed downloads
    are a :class:`~musrec.errors.DownloadError` (a :class:`~musrec.setup.download.NetworkError` when probably
    temporary); other trouble with the files or the build is a :class:`~musrec.errors.DataError`.
    """
    steps: list[Step] = []

    def emit(step: Step) -> None:
        steps.append(step)
        log.info("%s", step)
        if on_step is not None:
            on_step(step)

    if options.source is not None and not options.source.is_dir():
        raise DataError(f"--from {options.source}: not a directory")
    wanted: list[Wanted] = []  # what --from lacks, named together at the end
    with _locked(config.data_dir):
        state = SetupState(config.data_dir)
        if options.models:
            wanted += ensure_models(config, state, options, emit)
        _check_labels(emit)
        if options.index:
            try:
                _ensure_index(config, state, options, emit)
            except NotInSourceError as err:
                wanted += err.wanted
    if wanted and options.source is not None:
        raise NotInSourceError(options.source, wanted)
    return steps


def check_ready(config: Config) -> list[str]:
    """One line per thing missing before musrec can answer queries with this configuration; empty when ready."""
    problems = []
    if config.embedder.kind == "local":
        state = SetupState(config.data_dir)
        for ms in (model_state(mf, state) for mf in model_files(config)):
            mf = ms.file
            if ms.status == MISSING:
                problems.append(
                    f"VGGish {mf.name} not found ({mf.path}): run `musrec setup --models-only`, or set {mf.key}"
                )
            elif ms.status == MISMATCH:
                problems.append(mismatch_message([mf], config.file))
            elif ms.status != VERIFIED:
                problems.append(f"VGGish {mf.name} {mf.path} is not verified: run `musrec setup --models-only`")
    trouble = problem(config.index_path)
    if trouble:
        problems.append(trouble)
    return problems


def ensure_ready(config: Config, *, progress: bool) -> None:
    """Do whatever setup is missing (downloads, verification, the index build) and return once musrec is ready.

    Fast when nothing is missing: nothing is hashed or locked (a VGGish file counts as missing until set-up has
    verified it, once: ``setup-state.json`` remembers). An existing index is used as it is, even if the
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


# ---- labels -------------------------------------------------------------------------------------------------


def _check_labels(emit: Callable[[Step], None]) -> None:
    from musrec.audioset.labels import default_labels

    try:
        labels = default_labels()
    except (OSError, DataError, ValueError) as err:
        raise DataError(
            f"AudioSet's label files are missing from this installation ({err}): reinstall musrec"
        ) from None
    emit(Step("labels", "shipped", f"{len(labels.names)} AudioSet classes, {len(labels.music)} in the Music subtree"))


# ---- the index ----------------------------------------------------------------------------------------------


def _ensure_index(config: Config, state: SetupState, options: SetupOptions, emit: Callable[[Step], None]) -> None:
    path = config.index_path
    killed = killed_build(path)  # a killed build's record says so before anything starts again
    if killed is None:
        remove_debris(path)
    wanted = _fingerprint(config)
    ours = state.index.get("path") == str(path.absolute()) and _manifest_stamp(path) == state.index.get("manifest")
    if _occupied(path) and not options.rebuild:
        trouble = problem(path)
        if trouble is None and not ours:
            emit(Step("index", "kept", f"{path} was not built by musrec setup; --rebuild replaces it"))
            return
        built_with = state.index.get("build") or {}
        if trouble is None and built_with == wanted:
            emit(Step("index", "up to date", _summary(Manifest.read(path), path)))
            return
        changes = describe_changes(built_with, wanted)
        if trouble is None and not options.refresh_index:
            emit(
                Step(
                    "index",
                    "kept",
                    f"{path}, built with other [build] settings ({changes}): `musrec setup --rebuild` applies them",
                )
            )
            return
        chosen = set(state.index.get("chosen") or ())
        if trouble is None and not options.chosen and set(changed_keys(built_with, wanted)) <= chosen:
            # Built with options given to an earlier `musrec setup`: a plain rerun keeps that choice.
            flags = setup_flags({key: built_with[key] for key in chosen if key in built_with})
            emit(
                Step(
                    "index",
                    "kept",
                    f"{_summary(Manifest.read(path), path)}, as `musrec setup {flags}` chose; the [build] settings "
                    f"would change {changes}: `musrec setup --rebuild` builds that",
                )
            )
            return
        if trouble is not None and not ours:
            raise DataError(trouble)
        if trouble is None and ours:
            emit(Step("index", "rebuilding", f"[build] settings changed: {changes}"))
    _refuse_to_build(config, killed, options)
    features = ensure_features(config, state, options, emit)
    if features is None:
        emit(Step("index", "skipped", "no AudioSet features here: run `musrec setup` without --skip-features"))
        return
    with verified_by_build(features, state, emit):  # one read of a tarball: the build's
        manifest, report = _build(config, features.path, progress=options.progress)
    record_verified(features, report, state, emit)
    state.index = {
        "path": str(path.absolute()),
        "build": wanted,
        "chosen": sorted(options.chosen),
        "manifest": _manifest_stamp(path),
        "at": now(),
    }
    state.save()
    emit(Step("index", "built", f"{_summary(manifest, path)}, in {manifest.build_seconds:.1f} s"))


def _refuse_to_build(config: Config, killed: KilledBuild | None, options: SetupOptions) -> None:
    """Before the features are read: refuse a build that the last one's kill says would be killed again (unless
    ``--rebuild``), or one that needs more memory than this machine gives (with ``--skip-features`` and no
    ``--from``, features in place are checked first: the build itself refuses before it reads them)."""
    from musrec.index.build import build_estimate

    if killed is not None and not options.rebuild:
        killed.prune()
        raise DataError(killed.message(retry="`musrec setup --rebuild`"))
    if not options.features and options.source is None:
        return  # nothing will be fetched, and maybe nothing built
    limit = memory_limit()
    need = build_estimate(release_segments(config.build.splits), config.build, limit)
    trouble = too_small(need, limit, what=f"the index at {config.index_path}")
    if trouble is not None:
        raise DataError(trouble)


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
    return {"built_at": manifest.built_at, "count": manifest.count, **signature(directory / MANIFEST)}


def _summary(m: Manifest, path: Path) -> str:
    music = ", music only" if m.filters.get("music_only") else ""
    return (
        f"{m.count:,} segments at {path} ({m.splits()}{music}); {m.representation} {m.dimension}-d, "
        f"{m.structure()}, recall@10 {m.recall_at_10:.3f}"
    )


def build_from_config(
    config: Config,
    sources: Sequence[Path],
    out: Path,
    *,
    labels: Labels,
    force: bool,
    progress: Callable[[int], None] | None = None,
) -> tuple[Manifest, IngestReport]:
    """Build ``out`` from ``sources`` with the ``[build]`` options and filters: ``setup`` and ``index build``."""
    from musrec.index.build import build_from_sources

    b = config.build
    return build_from_sources(
        sources, out, labels=labels, options=b, segment_filter=b.segment_filter(labels), force=force, progress=progress
    )


def _build(config: Config, source: Path, *, progress: bool) -> tuple[Manifest, IngestReport]:
    from musrec.audioset.labels import default_labels

    bar: Any = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit=" segments", unit_scale=True, desc="indexing", file=sys.stderr, mininterval=0.5, leave=False)
    try:
        return build_from_config(
            config,
            [source],
            config.index_path,
            labels=default_labels(),
            force=True,
            progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()


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


# SetupOptions and Step live in musrec.setup.state; callers of setup() take them from here.
__all__ = ["SetupOptions", "Step", "build_from_config", "check_ready", "ensure_ready", "setup"]
