"""What yt-dlp, run as a library, needs from this process: the JavaScript runtimes it may use, and ``ffmpeg`` on PATH.

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


class _FfmpegPath:
    """Puts a directory holding an ``ffmpeg`` link on PATH while any fetch runs.

    yt-dlp decides whether it can download a section by running plain ``ffmpeg`` from PATH, even when
    ``ffmpeg_location`` points at a binary with another name (imageio-ffmpeg's). PATH is process-wide, so
    fetches share one directory, counted under a lock, and the last one out restores PATH.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._dir: str | None = None

    @contextmanager
    def __call__(self, executable: str) -> Iterator[None]:
        with self._lock:
            if self._users == 0 and shutil.which("ffmpeg") is None:
                self._dir = tempfile.mkdtemp(prefix="musrec-ffmpeg-")
                os.symlink(executable, os.path.join(self._dir, "ffmpeg"))
                os.environ["PATH"] = os.pathsep.join([self._dir, os.environ.get("PATH", "")])
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._dir is not None:
                    paths = os.environ.get("PATH", "").split(os.pathsep)
                    os.environ["PATH"] = os.pathsep.join(p for p in paths if p != self._dir)
                    shutil.rmtree(self._dir, ignore_errors=True)
                    self._dir = None


ffmpeg_on_path = _FfmpegPath()
