"""What the programs yt-dlp starts for a fetch run as: ffmpeg under a memory cap, and ffmpeg and the JavaScript
runtimes with an environment of the fetch's own, which holds no secrets and sends everything through the guard.

yt-dlp starts ffmpeg (its version check, then the section's download) and a JavaScript runtime (deno or node, for
YouTube's player challenges) with a copy of this process's environment, and offers no hook for either. So each
fetch gets a private directory of launchers: shell scripts that set what the program needs and then become it
(``exec``), and yt-dlp is told to run those (``ffmpeg_location``, ``js_runtimes``). Each launcher replaces the
whole environment (``env -i``) with the fetch's:

- this process's environment without its secrets (:func:`musrec.childenv.child_environment`): the Discord token,
  API keys and passwords never reach a program that parses media or scripts from a stranger;
- no proxy variables of its own, and the fetch's guard (:mod:`musrec.links.guard`) as ``http_proxy`` and
  ``https_proxy``: in particular no ``no_proxy``, through which ffmpeg would connect directly, past the guard, to
  the hosts it names (127.0.0.1 and internal names, usually).

ffmpeg's launcher also caps its address space at the decoders' cap (``DECODER_MEMORY_BYTES``): ffmpeg reads media
from the link. (A JavaScript runtime reserves far more address space than it uses, so it gets no cap.)

Nothing here changes ``os.environ``: fetches in several threads, and the other programs the process starts, see
no difference. yt-dlp decides whether it can download a section by looking for ffmpeg where its own command line
would have set it (the ``ffmpeg_location`` context variable of its ffmpeg post-processor, else plain ``ffmpeg`` on
PATH); :func:`fetch_environment` sets that variable, for the calling thread only, to the launcher.

Where no launcher can run (no ``/bin/sh`` or ``env``, or a temporary directory mounted ``noexec``), a warning is
logged once and the programs run as themselves, without the cap and with this process's environment; a fetch is
then refused if that environment has ``no_proxy``, which would open a way around the guard.

The binaries may not be where yt-dlp looks: the ``deno`` package installs beside this Python rather than on PATH,
and imageio-ffmpeg ships ffmpeg under another name.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from musrec.audio.runner import DECODER_MEMORY_BYTES
from musrec.childenv import child_environment
from musrec.links.errors import FetchError, FetchFailure

log = logging.getLogger(__name__)

SHELL = "/bin/sh"  # runs the launchers; POSIX systems have it here
FFMPEG_NAME: Final = "ffmpeg"  # the launcher's name: yt-dlp finds the program's kind in it
ULIMIT_UNIT_BYTES = 1024  # ``ulimit -v`` counts KiB
LIMIT_FAILED_STATUS = 126  # the shell's "found but cannot run": the cap cannot be set, so ffmpeg is not run
PROXY_VARIABLES: Final = frozenset({"http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy"})  # any case


def find_js_runtimes(names: tuple[str, ...]) -> dict[str, str]:
    """Each of the JavaScript runtimes ``names`` found on PATH or beside this Python (the ``deno`` package installs
    its binary there, which is not on PATH when musrec runs as ``.venv/bin/musrec``): name -> path."""
    beside = str(Path(sys.executable).parent)
    found = {name: shutil.which(name) or shutil.which(name, path=beside) for name in names}
    return {name: path for name, path in found.items() if path}


def fetch_child_environment(proxy: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the programs a fetch starts: ``base`` (``os.environ``) without secrets and without
    proxy variables, then ``proxy`` (the guard) as the proxy for http and https, in both cases of the names."""
    clean = {k: v for k, v in (os.environ if base is None else base).items() if k.lower() not in PROXY_VARIABLES}
    proxies = {name: proxy for lower in ("http_proxy", "https_proxy") for name in (lower, lower.upper())}
    return child_environment(clean, **proxies)


@dataclass(frozen=True)
class FetchEnvironment:
    """What yt-dlp is given for one fetch: the ffmpeg to run (``ffmpeg_location``), its ``js_runtimes``, and the
    environment those programs get (``environ``; empty where no launcher can run, and they get this process's)."""

    ffmpeg: str
    js_runtimes: dict[str, dict[str, str]]
    environ: dict[str, str] = field(repr=False)


_warned: set[str] = set()  # what was said once already


@contextmanager
def fetch_environment(ffmpeg: str, *, proxy: str, js_runtimes: tuple[str, ...] = ()) -> Iterator[FetchEnvironment]:
    """Launchers for ``ffmpeg`` and the runtimes found of ``js_runtimes``, for one fetch behind ``proxy``; yt-dlp's
    ffmpeg check, in this thread, finds the launcher. The directory is removed on exit.

    Raises FetchError (NO_FFMPEG) where no launcher can run and ``no_proxy`` is set (see the module docstring).
    """
    from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

    runtimes = find_js_runtimes(js_runtimes)
    directory = tempfile.mkdtemp(prefix="musrec-fetch-")
    try:
        environ = fetch_child_environment(proxy)
        problem = _launcher_problem(directory)
        if problem is None:
            try:
                got = FetchEnvironment(
                    _write(directory, FFMPEG_NAME, _launcher_script(ffmpeg, environ, cap=True)),
                    {n: {"path": _write(directory, n, _launcher_script(p, environ))} for n, p in runtimes.items()},
                    environ,
                )
            except OSError as err:
                problem = f"cannot write it: {err}"
        if problem is not None:
            got = _without_launchers(ffmpeg, runtimes, problem)
        # yt-dlp's own command line sets this for --ffmpeg-location; a context variable, so only this thread sees it.
        location = getattr(FFmpegPostProcessor, "_ffmpeg_location", None)
        if location is None:  # another yt-dlp: its check for ffmpeg looks on PATH, so sections may be refused
            _warn_once("this yt-dlp has no ffmpeg_location context variable: sections need ffmpeg on PATH")
            yield got
            return
        token = location.set(got.ffmpeg)
        try:
            yield got
        finally:
            location.reset(token)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _without_launchers(ffmpeg: str, runtimes: dict[str, str], problem: str) -> FetchEnvironment:
    _warn_once(
        "programs started by yt-dlp run without a memory cap and with this process's environment"
        f" (no launcher: {problem})"
    )
    if "no_proxy" in os.environ:
        log.error("links cannot be fetched: ffmpeg would read no_proxy and connect past the address guard")
        raise FetchError(FetchFailure.NO_FFMPEG)
    return FetchEnvironment(ffmpeg, {name: {"path": path} for name, path in runtimes.items()}, {})


def _write(directory: str, name: str, script: str) -> str:
    path = os.path.join(directory, name)
    Path(path).write_text(script, encoding="utf-8")
    os.chmod(path, 0o700)
    return path


def _launcher_script(executable: str, environ: Mapping[str, str], *, cap: bool = False) -> str:
    """A shell script that (with ``cap``) caps its address space, then becomes ``executable`` with its own arguments
    and ``environ`` as its whole environment.

    A cap that cannot be set is fine if one at least as low is already set (the hard limit is lower, as
    :func:`musrec.audio.runner.run_decoder` finds too); otherwise ffmpeg is not run at all.
    """
    kib = DECODER_MEMORY_BYTES // ULIMIT_UNIT_BYTES
    limit = (
        f'ulimit -v {kib} 2>/dev/null || test "$(ulimit -v)" -le {kib} 2>/dev/null || {{\n'
        "    echo 'cannot limit the memory of ffmpeg' >&2\n"
        f"    exit {LIMIT_FAILED_STATUS}\n"
        "}\n"
    )
    assignments = " ".join(shlex.quote(f"{name}={value}") for name, value in sorted(environ.items()))
    env = shlex.quote(shutil.which("env") or "env")
    return f'#!{SHELL}\n{limit if cap else ""}exec {env} -i {assignments} {shlex.quote(executable)} "$@"\n'


def _launcher_problem(directory: str) -> str | None:
    """Why a launcher in ``directory`` could not run, or None."""
    if not os.access(SHELL, os.X_OK):
        return f"no {SHELL}"
    if shutil.which("env") is None:
        return "no env program"
    if os.statvfs(directory).f_flag & os.ST_NOEXEC:
        return "the temporary directory is on a file system mounted noexec"
    return None
