"""What yt-dlp, run as a library, needs from this process: the JavaScript runtimes it may use, and an environment
for ffmpeg (``ffmpeg`` on PATH, no ``no_proxy``).

The binaries may not be where yt-dlp looks: the ``deno`` package installs beside this Python rather than on PATH,
and imageio-ffmpeg ships ffmpeg under another name.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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

    - ``ffmpeg`` on PATH: yt-dlp decides whether it can download a section by running plain ``ffmpeg`` from PATH,
      even when ``ffmpeg_location`` points at a binary with another name (imageio-ffmpeg's).
    - No ``no_proxy``: ffmpeg connects directly, past the address guard (:mod:`musrec.links.guard`), to any host
      that variable names (127.0.0.1 and internal names, usually). ffmpeg reads only the lower-case name, while
      Python's HTTP clients fall back on ``NO_PROXY``, so the value moves there: nothing else in the process sees
      a difference. Where names are case-insensitive (Windows) it cannot be kept for the others, and is removed.

    The environment is process-wide, so fetches share one change, counted under a lock, and the last one out
    restores it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._dir: str | None = None
        self._saved: dict[str, str | None] = {}

    @contextmanager
    def __call__(self, executable: str) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._enter(executable)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._leave()

    def _enter(self, executable: str) -> None:
        if shutil.which("ffmpeg") is None:
            self._dir = tempfile.mkdtemp(prefix="musrec-ffmpeg-")
            os.symlink(executable, os.path.join(self._dir, "ffmpeg"))
            os.environ["PATH"] = os.pathsep.join([self._dir, os.environ.get("PATH", "")])
        self._saved = {name: os.environ.get(name) for name in _NO_PROXY}
        hidden = os.environ.pop("no_proxy", None)
        if hidden is not None:
            os.environ["NO_PROXY"] = hidden
            if "no_proxy" in os.environ:  # the same variable: a case-insensitive environment
                del os.environ["NO_PROXY"]

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


ffmpeg_environment = _FfmpegEnvironment()
