"""What yt-dlp, run as a library, needs from this process: the JavaScript runtimes it may use, and an environment
for ffmpeg (``ffmpeg`` on PATH, under a memory cap, no ``no_proxy``).

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
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from musrec.audio.decode import DECODER_MEMORY_BYTES

log = logging.getLogger(__name__)

SHELL = "/bin/sh"  # runs the launcher; POSIX systems have it here
LAUNCHER_NAME = "ffmpeg"  # the name yt-dlp looks for on PATH
ULIMIT_UNIT_BYTES = 1024  # ``ulimit -v`` counts KiB
LIMIT_FAILED_STATUS = 126  # the shell's "found but cannot run": the cap cannot be set, so ffmpeg is not run


def js_runtime_config(names: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """yt-dlp's ``js_runtimes``: each runtime found on PATH or beside this Python (the ``deno`` package installs its
    binary there, which is not on PATH when musrec runs as ``.venv/bin/musrec``)."""
    config: dict[str, dict[str, str]] = {}
    beside = Path(sys.executable).parent
    for name in names:
        found = shutil.which(name) or shutil.which(name, path=str(beside))
        config[name] = {"path": found} if found else {}
    return config


_NO_PROXY = ("NO_PROXY", "no_proxy")  # ffmpeg reads only the second; Python's clients both, the second first


class _FfmpegEnvironment:
    """What ffmpeg, started by yt-dlp with a copy of this process's environment, finds there while any fetch runs.

    - A memory cap: ffmpeg reads media from the link, so it gets the decoders' cap (``DECODER_MEMORY_BYTES`` of
      address space). yt-dlp starts it without a hook for ``prlimit``, so what it runs is a launcher: a shell
      script that sets the cap and then becomes ffmpeg (``exec``), in a private directory. The context manager
      gives its path, for yt-dlp's ``ffmpeg_location``; yt-dlp's version check runs it too and reads the real
      ffmpeg's output.
    - That directory first on PATH: yt-dlp decides whether it can download a section by running plain ``ffmpeg``
      from PATH, even when ``ffmpeg_location`` points at a binary with another name (imageio-ffmpeg's).
    - No ``no_proxy``: ffmpeg connects directly, past the address guard (:mod:`musrec.links.guard`), to any host
      that variable names (127.0.0.1 and internal names, usually). ffmpeg reads only the lower-case name, while
      Python's HTTP clients fall back on ``NO_PROXY``, so the value moves there: nothing else in the process sees
      a difference. Where names are case-insensitive (Windows) it cannot be kept for the others, and is removed.

    Where no launcher can run (no ``/bin/sh``, or a temporary directory mounted ``noexec``), a warning is logged
    once and the directory holds a link to ffmpeg itself instead, which then runs without the cap.

    The environment is process-wide, so fetches share one change (and one directory), counted under a lock, and
    the last one out restores it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._dir: str | None = None
        self._ffmpeg = ""
        self._saved: dict[str, str | None] = {}
        self._warned = False

    @contextmanager
    def __call__(self, executable: str) -> Iterator[str]:
        """Prepare the environment for a fetch that runs ``executable``; gives the ffmpeg that yt-dlp should run."""
        with self._lock:
            if self._users == 0:
                self._enter(executable)
            self._users += 1
            ffmpeg = self._ffmpeg
        try:
            yield ffmpeg
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._leave()

    def _enter(self, executable: str) -> None:
        self._dir = tempfile.mkdtemp(prefix="musrec-ffmpeg-")
        self._ffmpeg = self._launcher(self._dir, executable)
        os.environ["PATH"] = os.pathsep.join([self._dir, os.environ.get("PATH", "")])
        self._saved = {name: os.environ.get(name) for name in _NO_PROXY}
        hidden = os.environ.pop("no_proxy", None)
        if hidden is not None:
            os.environ["NO_PROXY"] = hidden
            if "no_proxy" in os.environ:  # the same variable: a case-insensitive environment
                del os.environ["NO_PROXY"]

    def _launcher(self, directory: str, executable: str) -> str:
        """The capped launcher of ``executable`` in ``directory``; or, where none can run, ``executable`` itself,
        linked there as ``ffmpeg``."""
        path = os.path.join(directory, LAUNCHER_NAME)
        problem = _launcher_problem(directory)
        if problem is None:
            try:
                Path(path).write_text(_launcher_script(executable), encoding="utf-8")
                os.chmod(path, 0o700)
                return path
            except OSError as err:
                problem = f"cannot write it: {err}"
        if not self._warned:
            self._warned = True
            log.warning("ffmpeg started by yt-dlp runs without a memory cap (no launcher: %s)", problem)
        os.symlink(executable, path)
        return executable

    def _leave(self) -> None:
        if self._dir is not None:
            paths = os.environ.get("PATH", "").split(os.pathsep)
            os.environ["PATH"] = os.pathsep.join(p for p in paths if p != self._dir)
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _launcher_script(executable: str) -> str:
    """A shell script that caps its address space, then becomes ``executable`` with its own arguments.

    A cap that cannot be set is fine if one at least as low is already set (the hard limit is lower, as
    :func:`musrec.audio.decode.run_decoder` finds too); otherwise ffmpeg is not run at all.
    """
    kib = DECODER_MEMORY_BYTES // ULIMIT_UNIT_BYTES
    return (
        f"#!{SHELL}\n"
        f'ulimit -v {kib} 2>/dev/null || test "$(ulimit -v)" -le {kib} 2>/dev/null || {{\n'
        "    echo 'cannot limit the memory of ffmpeg' >&2\n"
        f"    exit {LIMIT_FAILED_STATUS}\n"
        "}\n"
        f'exec {shlex.quote(executable)} "$@"\n'
    )


def _launcher_problem(directory: str) -> str | None:
    """Why a launcher in ``directory`` could not run, or None."""
    if not os.access(SHELL, os.X_OK):
        return f"no {SHELL}"
    if os.statvfs(directory).f_flag & os.ST_NOEXEC:
        return "the temporary directory is on a file system mounted noexec"
    return None


ffmpeg_environment = _FfmpegEnvironment()
