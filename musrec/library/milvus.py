"""Connecting to Milvus: an embedded Milvus Lite directory or a server, with pymilvus's MilvusClient.

Milvus Lite lets one process hold its directory (an advisory lock in it). pymilvus starts one embedded server per
directory and process and keeps it, with the lock, until the process ends; :func:`release` stops it when the last
store of this process closes, so another process (``musrec library add`` after the bot, or the other way round)
can take the directory at once. Opening a directory another process holds is :class:`LibraryBusyError`, one line.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from musrec.library.errors import LibraryBusyError, LibraryError

log = logging.getLogger(__name__)

QUIET_WITH_LITE = ("milvus_lite.server_manager", "grpc._server", "pymilvus.client.iterator.query_iterator")
LOCK_FILE = "LOCK"  # the advisory lock Milvus Lite holds in its data directory while it is open

_OPEN: dict[str, int] = {}  # Milvus Lite directories open in this process: how many stores hold each
_OPEN_LOCK = threading.Lock()


def connect(uri: str, *, token: str | None, local: bool, timeout_s: float) -> Any:
    """A MilvusClient at ``uri``. A Milvus Lite directory another process holds is LibraryBusyError, in one line."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    if local:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        # Milvus Lite runs in this process: its start-up failure is said below in one line (not its traceback), it
        # answers a timestamp request the client tries first with "not implemented" (the client then uses its own
        # clock), and pymilvus warns of that at every listing. None of it is the user's to act on.
        for name in QUIET_WITH_LITE:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        client = MilvusClient(uri=uri, token=token or "", timeout=timeout_s)
    except MilvusException as err:
        if local and _locked(Path(uri)):
            raise _busy(uri) from None
        log.warning("cannot open the library at %s: %s", uri, err)
        what = "open the library file" if local else "reach the Milvus server"
        raise LibraryError(f"could not {what} at {uri}: {short_error(err)}") from None
    if local:
        with _OPEN_LOCK:
            _OPEN[os.path.abspath(uri)] = _OPEN.get(os.path.abspath(uri), 0) + 1
    return client


def release(uri: str) -> None:
    """One store of a Milvus Lite directory closed: the last one stops the embedded server (pymilvus starts one per
    directory and process, and keeps it, with the lock, until the process ends)."""
    path = os.path.abspath(uri)
    with _OPEN_LOCK:
        left = _OPEN.get(path, 1) - 1
        if left > 0:
            _OPEN[path] = left
            return
        _OPEN.pop(path, None)
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(path)


def _locked(path: Path) -> bool:
    """Whether a process holds the Milvus Lite directory's lock (asked after this process failed to open it, so
    another one does)."""
    import fcntl

    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _busy(uri: str) -> LibraryBusyError:
    return LibraryBusyError(
        f"the library {uri} is in use by another process (the bot, or another musrec library command): stop it "
        "or wait for it to finish, then try again; to share a library, serve it with Milvus ([library] uri)"
    )


def short_error(err: Exception) -> str:
    text = " ".join(str(getattr(err, "message", "") or err).split())
    return text[:200] or type(err).__name__
