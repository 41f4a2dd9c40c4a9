"""``musrec doctor``: is this installation ready? One finding per check, each saying what to do about a problem.

Checks: the configuration (loads, from where), the data directory, ffmpeg (system or bundled), mpg123 (optional),
the VGGish files (present, their checksum state as ``musrec setup`` recorded it), the index (loads; a summary of
its manifest), whether this machine has the memory to build the configured index (and whether the last build was
killed), how many of its videos have been checked and what share is gone, the store of ``musrec library`` (made
yet; opens: its libraries and tracks, or why not, a damaged one included), the MAX servers when they are the
embedder, the Discord token (present or not: never shown), TensorFlow and Annoy. Annoy is tried in a child
process: a build compiled for another CPU dies of an illegal instruction, and the doctor must live to say so.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from musrec.config import Config, load_config, user_config_file
from musrec.config.values import ENV_PREFIX, ENV_RESERVED
from musrec.errors import MusrecError

OK, WARN, PROBLEM = "ok", "warn", "problem"
TOKEN_ENV = "MUSREC_DISCORD_TOKEN"
SUBPROCESS_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 5.0
LIBRARY_TIMEOUT_S = 10.0  # each call to a library's Milvus server (the health check allows 60 s in all)
# Build a two-item Annoy index and query it: exercises the compiled code, not just the import.
_ANNOY_SMOKE = (
    "from annoy import AnnoyIndex\n"
    "a = AnnoyIndex(16, 'angular')\n"
    "[a.add_item(i, [float(i + j) for j in range(16)]) for i in range(2)]\n"
    "a.build(2)\n"
    "assert a.get_nns_by_item(0, 2) and len(a.get_nns_by_vector([1.0] * 16, 1)) == 1\n"
)


@dataclass(frozen=True)
class Check:
    """One finding: ``status`` is ok, warn (works, but worth knowing) or problem (something needed is wrong)."""

    name: str
    status: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status:<8} {self.name:<11} {self.detail}"


def diagnose(
    config_path: Path | None, *, environ: Mapping[str, str] | None = None, quick: bool = False, bot: bool = False
) -> list[Check]:
    """Run every check. ``quick`` skips importing TensorFlow (seconds); ``bot`` makes a missing token a problem."""
    env = os.environ if environ is None else environ
    checks: list[Check] = []
    config, check = _config(config_path, env)
    checks.append(check)
    checks.append(_data_dir(config))
    checks.append(_ffmpeg())
    checks.append(_mpg123())
    checks.extend(_models(config))
    annoy = _annoy()
    checks.append(_index(config, annoy_works=annoy.status == OK))
    checks.append(_build_memory(config))
    checks.append(_videos(config, env))
    checks.append(_library(config, env))
    if config.embedder.kind == "max":
        checks.append(_max_servers(config))
    checks.extend(_links(config, env))
    checks.append(_token(env, bot=bot))
    checks.append(_tensorflow(config, quick=quick))
    checks.append(annoy)
    return checks


def failed(checks: list[Check]) -> bool:
    return any(c.status == PROBLEM for c in checks)


def _config(path: Path | None, env: Mapping[str, str]) -> tuple[Config, Check]:
    try:
        config = load_config(path, env)
    except MusrecError as err:
        return Config(), Check("config", PROBLEM, f"{err} (the other checks use the defaults)")
    if path is None:
        where = f"no config file (no ./config.toml, no {user_config_file(env)}): defaults and MUSREC_* variables"
    else:
        where = str(path) + (" (no ./config.toml here)" if path == user_config_file(env) else "")
    overrides = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in ENV_RESERVED)
    return config, Check("config", OK, where + (f"; environment: {', '.join(overrides)}" if overrides else ""))


def _data_dir(config: Config) -> Check:
    path = config.data_dir
    if not path.exists():
        return Check("data", WARN, f"{path} does not exist yet: `musrec setup` creates it")
    if not os.access(path, os.W_OK):
        return Check("data", PROBLEM, f"{path} is not writable by this user: fix its owner or set data.dir")
    free = shutil.disk_usage(path).free
    return Check("data", OK, f"{path} ({free / 1e9:.1f} GB free)")


def _ffmpeg() -> Check:
    from musrec.audio.decode import ffmpeg_executable

    try:
        exe = ffmpeg_executable()
    except MusrecError:
        return Check("ffmpeg", PROBLEM, "not found: install imageio-ffmpeg (pip) or ffmpeg (apt-get install ffmpeg)")
    if os.environ.get("MUSREC_FFMPEG"):
        kind = "MUSREC_FFMPEG"
    else:
        kind = "system" if shutil.which("ffmpeg") == exe else "bundled by imageio-ffmpeg"
    try:
        out = subprocess.run(
            [exe, "-hide_banner", "-version"], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return Check("ffmpeg", PROBLEM, f"{exe} ({kind}) does not run: {err}")
    version = out.splitlines()[0].split(" Copyright")[0] if out else "unknown version"
    return Check("ffmpeg", OK, f"{exe} ({kind}): {version}")


def _mpg123() -> Check:
    from musrec.audio.runner import mpg123_executable

    exe = mpg123_executable()
    if exe is None:  # optional: ffmpeg does the same, slower
        return Check("mpg123", OK, "not installed (optional: `apt-get install mpg123` decodes MP3s faster)")
    return Check("mpg123", OK, f"{exe}: finds the loudest window of long MP3s, decodes MP3s from their start")


def _models(config: Config) -> list[Check]:
    """What the bot's start (``check_ready``) sees of each VGGish file: a file it refuses is a problem here too."""
    from musrec.progress import human_bytes
    from musrec.setup.models import CHANGED, MISMATCH, MISSING, VERIFIED, mismatch_message, model_files, model_state
    from musrec.setup.state import SetupState

    needed = config.embedder.kind == "local"
    state = SetupState(config.data_dir)
    checks = []
    for ms in (model_state(mf, state) for mf in model_files(config)):
        mf = ms.file
        if ms.status == MISSING:
            if needed:
                checks.append(Check(mf.name, PROBLEM, f"{mf.path} is missing: run `musrec setup --models-only`"))
            else:
                checks.append(Check(mf.name, WARN, f"{mf.path} is missing (not needed: embedder.kind = max)"))
            continue
        size = human_bytes(mf.path.stat().st_size)
        if ms.status == MISMATCH:
            detail = f"{mismatch_message([mf], config.file)} ({size})"
            checks.append(Check(mf.name, PROBLEM if needed else WARN, detail))
        elif ms.status == VERIFIED and ms.record is not None:
            record = ms.record
            checks.append(Check(mf.name, OK, f"{mf.path} ({size}), {record.get('verified')} on {record.get('at')}"))
        else:
            detail = "changed since it was verified" if ms.status == CHANGED else "not verified"
            checks.append(Check(mf.name, WARN, f"{mf.path} ({size}), {detail}: run `musrec setup`"))
    if needed and all(c.status != PROBLEM for c in checks):
        trouble = _unloadable(config)
        if trouble is not None:
            checks.append(Check("model", PROBLEM, trouble))
    return checks


def _unloadable(config: Config) -> str | None:
    """What the in-process embedder refuses before it loads the network (files swapped, a PCA file that does not
    read), which stops the bot's start; None when it would go on. Cheap: file heads and a 128x128 array."""
    from musrec.vggish.checkpoint import check_model_files
    from musrec.vggish.postprocess import load_pca_params

    try:
        check_model_files(config.checkpoint_path, config.pca_params_path)
        load_pca_params(config.pca_params_path)
    except MusrecError as err:
        return f"{err}: the bot's start stops there"
    return None


def _index(config: Config, *, annoy_works: bool) -> Check:
    from musrec.index.layout import Manifest, debris, problem
    from musrec.index.search import Index

    path = config.index_path
    trouble = problem(path)
    if trouble is not None:
        return Check("index", PROBLEM, trouble)
    m = Manifest.read(path)
    # Annoy is tried in a child process first: loading a forest with a build that crashes would kill the doctor.
    if m.ann != "annoy" or annoy_works:
        try:
            Index(path, backend=m.ann).close()
        except MusrecError as err:
            return Check("index", PROBLEM, f"{path} does not load: {err} (run `musrec setup --rebuild`)")
    music = ", music only" if m.filters.get("music_only") else ""
    detail = (
        f"{path}: {m.count:,} segments ({m.splits()}{music}), {m.representation} {m.dimension}-d, {m.structure()}, "
        f"recall@10 {m.recall_at_10:.3f}, {m.preferred_backend} preferred, built {m.built_at}"
    )
    left = debris(path)
    if left:
        size = sum(f.stat().st_size for d in left for f in d.rglob("*") if f.is_file())
        return Check(
            "index",
            WARN,
            f"{detail}; {len(left)} unfinished build(s) beside it ({size / 1e9:.1f} GB): "
            "`musrec setup` removes them unless a build is running",
        )
    return Check("index", OK, detail)


def _videos(config: Config, env: Mapping[str, str]) -> Check:
    """How many of the index's videos have been checked, and what share of them is gone."""
    from musrec.index.layout import SEGMENTS_FILE, problem
    from musrec.index.store import SegmentStore
    from musrec.videos.status import API_KEY_ENV
    from musrec.videos.store import read_counts

    if not config.videos.check:
        return Check("videos", OK, "not checked (videos.check = false): gone videos are shown too")
    source = f"the YouTube Data API ({API_KEY_ENV} is set)" if env.get(API_KEY_ENV) else "YouTube oEmbed"
    if not config.videos_path.is_file():
        return Check("videos", OK, f"none checked yet (checked by {source} as answers need them; "
                     "`musrec videos check` checks the whole index ahead)")  # fmt: skip
    counts = read_counts(config.videos_path)
    if counts is None:
        return Check("videos", WARN, f"{config.videos_path} cannot be read: it is started afresh at the next answer")
    of = ""
    if problem(config.index_path) is None:
        segments = SegmentStore(config.index_path / SEGMENTS_FILE)
        try:
            of = f" of {segments.video_count():,} in the index"
        finally:
            segments.close()
    return Check("videos", OK, f"{counts.checked:,} videos checked{of}, {100 * counts.gone_share:.1f}% of them gone "
                 f"(by {source}; `musrec videos check` checks the rest)")  # fmt: skip


def _library(config: Config, env: Mapping[str, str]) -> Check:
    """The store of ``musrec library``: not made yet, or its libraries and tracks, or why it cannot be opened (a
    warning: library commands and the bot's /library would fail alike, but searching AudioSet needs no library, so
    the bot's health check does not fail for it). Nothing is made or written: a Milvus Lite directory that does not
    exist is not created, nor are a server's collections. A server is given at most LIBRARY_TIMEOUT_S."""
    from musrec.config.library import is_local
    from musrec.library.errors import LibraryBusyError, LibraryError
    from musrec.library.milvus import TOKEN_VARIABLE
    from musrec.library.store import MilvusStore

    options = config.library
    uri = config.library_uri
    local = is_local(uri)
    made_by = "`musrec library add` or the bot's /library add makes it"
    if local and not Path(uri).exists():
        return Check("library", OK, f"none yet at {uri} ({made_by})")
    try:
        store = MilvusStore(uri, token=env.get(TOKEN_VARIABLE), prefix=options.collection, index=options.index,
                            timeout_s=min(options.timeout_s, LIBRARY_TIMEOUT_S), create=False)  # fmt: skip
    except LibraryBusyError:
        return Check("library", OK, f"{uri} is open in another process (the bot, or a library command): not checked")
    except LibraryError as err:
        return Check("library", WARN, str(err))
    where = uri if local else f"{options.collection}_* on the Milvus server at {uri}"
    try:
        if not store.made:
            return Check("library", OK, f"none yet in {where} ({made_by})")
        counts = store.counts()
        recall = store.recorded_recall()
    except LibraryError as err:
        return Check("library", WARN, str(err))
    finally:
        store.close()
    measured = f" (its index: recall@10 {recall:.3f})" if recall is not None else ""
    return Check("library", OK, f"{where}: {len(counts)} libraries, {sum(counts.values()):,} tracks{measured}; "
                 "`musrec library check` finds tracks a damaged store lost")  # fmt: skip


def _build_memory(config: Config) -> Check:
    """Can this machine build the configured index: its memory against the build's estimated peak, and whether the
    last build was killed. A problem where there is no usable index (setup would build one), else a warning."""
    from musrec.index.build import build_estimate
    from musrec.index.layout import problem
    from musrec.index.memory import in_memory_units, killed_build, memory_limit, release_segments, too_small

    limit = memory_limit()
    need = build_estimate(release_segments(config.build.splits), config.build, limit)
    status = PROBLEM if problem(config.index_path) is not None else WARN
    killed = killed_build(config.index_path)
    if killed is not None:
        return Check("memory", status, killed.message(retry="`musrec setup --rebuild`"))
    trouble = too_small(need, limit, what=f"the index at {config.index_path}")
    if trouble is not None:
        return Check("memory", status, trouble)
    splits = " ".join(config.build.splits)
    needs = in_memory_units(need.peak)
    return Check("memory", OK, f"{limit}; building {splits} ({need.count:,} segments) needs about {needs}")


def _max_servers(config: Config) -> Check:
    bad = []
    for url in config.max.urls:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/model/metadata", timeout=MAX_TIMEOUT_S) as response:
                json.loads(response.read(1 << 16))
        except (OSError, ValueError, urllib.error.URLError) as err:
            bad.append(f"{url} ({getattr(err, 'reason', err)})")
    if len(bad) == len(config.max.urls):
        return Check("max", PROBLEM, f"no MAX server answers: {', '.join(bad)}; start one or fix max.urls")
    if bad:
        return Check("max", WARN, f"not answering: {', '.join(bad)}")
    return Check("max", OK, f"{len(config.max.urls)} server(s) answer /model/metadata")


def _links(config: Config, env: Mapping[str, str]) -> list[Check]:
    """Fetching links from this server: yt-dlp's age, the JavaScript runtime, cookies, proxy, PO-token provider."""
    from musrec.links.health import link_findings

    return [Check(f.name, f.status, f.detail) for f in link_findings(config.youtube, env)]


def _token(env: Mapping[str, str], *, bot: bool) -> Check:
    token = env.get(TOKEN_ENV)
    if not token:
        return Check("token", PROBLEM if bot else WARN, f"{TOKEN_ENV} is not set: the Discord bot needs it")
    if token != token.strip() or token[:1] in "\"'":
        return Check("token", PROBLEM, f"{TOKEN_ENV} has surrounding spaces or quotes: remove them")
    return Check("token", OK, f"{TOKEN_ENV} is set")


def _tensorflow(config: Config, *, quick: bool) -> Check:
    level = PROBLEM if config.embedder.kind == "local" else WARN
    if quick:
        if importlib.util.find_spec("tensorflow") is None:
            return Check("tensorflow", level, "not installed: `pip install tensorflow`")
        return Check("tensorflow", OK, f"installed ({_version('tensorflow')}; not imported: --quick)")
    from musrec.vggish.tfutil import import_tensorflow

    try:
        tf = import_tensorflow()
    except Exception as err:  # an import can fail in many ways (missing libraries, CPU features)
        return Check("tensorflow", level, f"does not import: {type(err).__name__}: {err}")
    return Check("tensorflow", OK, f"{tf.__version__} imports")


def _annoy() -> Check:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _ANNOY_SMOKE], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError) as err:
        return Check("annoy", PROBLEM, f"could not be tried: {err}")
    if done.returncode == -signal.SIGILL:
        return Check(
            "annoy",
            PROBLEM,
            "crashes with an illegal instruction: it was compiled for another CPU (-march=native); "
            "reinstall it on this machine, or build it with portable ANNOY_COMPILER_ARGS (see the Dockerfile)",
        )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return Check("annoy", PROBLEM, f"does not work: {last}; `pip install --force-reinstall annoy`")
    return Check("annoy", OK, f"{_version('annoy')} builds and queries an index")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"
