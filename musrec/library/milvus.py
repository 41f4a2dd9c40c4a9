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

QUIET_WITH_LITE = ("milvus_lite.server_manager", "grpc._server")
# pymilvus's own handlers print every failed call with its traceback on stderr (musrec says it in one line and logs
# it), and Milvus Lite, embedded or served (``milvus-lite server``), answers a timestamp request the query iterator
# tries first with "not implemented" (the client then uses its own clock), which pymilvus warns of at every listing.
QUIET_ALWAYS = ("pymilvus.decorators", "pymilvus.client.connection_manager", "pymilvus.client.iterator.query_iterator")
CONNECT_FAILED = 2  # pymilvus's code for a connection it could not make (pymilvus.client.types.Status)
LOCK_FILE = "LOCK"  # the advisory lock Milvus Lite holds in its data directory while it is open

_OPEN: dict[str, int] = {}  # Milvus Lite directories open in this process: how many stores hold each
_OPEN_LOCK = threading.Lock()


def connect(uri: str, *, token: str | None, local: bool, timeout_s: float) -> Any:
    """A MilvusClient at ``uri``. A Milvus Lite directory another process holds is LibraryBusyError, in one line."""
    from grpc import RpcError
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    if local:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    # Milvus Lite in this process: its start-up failure is said below in one line (not its traceback). None of what
    # is quieted is the user's to act on.
    for name in QUIET_ALWAYS + (QUIET_WITH_LITE if local else ()):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        client = MilvusClient(uri=uri, token=token or "", timeout=timeout_s)
    except (MilvusException, RpcError) as err:
        if local and _locked(Path(uri)):
            raise _busy(uri) from None
        log.info("cannot open the library at %s: %s", uri, err)
        if local:
            raise LibraryError(f"could not open the library file at {uri}: {short_error(err)}") from None
        raise failure("open the library", uri, err, local=False, timeout_s=timeout_s) from None
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


def failure(doing: str, uri: str, err: Exception, *, local: bool, timeout_s: float) -> LibraryError:
    """A failed call to the store in one line: what could not be done and, for a Milvus server that cannot be
    reached or did not answer in time, which server and what to do."""
    if local:
        return LibraryError(f"could not {doing}: the library's store answered {short_error(err)}")
    code = _status(err)
    if code == "DEADLINE_EXCEEDED":
        why = f"did not answer within {timeout_s:g} s ([library] timeout_s)"
    elif code == "UNAVAILABLE" or getattr(err, "code", None) == CONNECT_FAILED:
        why = "cannot be reached"
    else:
        return LibraryError(f"could not {doing}: the Milvus server at {uri} answered {short_error(err)}")
    return LibraryError(
        f"could not {doing}: the Milvus server at {uri} {why}: check that it is running and that [library] uri "
        "names it, then try again"
    )


def _status(err: Exception) -> str | None:
    """The gRPC status of a call that failed in transport (grpc.RpcError), else None."""
    code = getattr(err, "code", None)
    status = code() if callable(code) else None
    return getattr(status, "name", None)


def short_error(err: Exception) -> str:
    details = getattr(err, "details", None)
    if callable(details):  # grpc.RpcError: its status and details, not its multi-line repr
        text = f"{_status(err) or 'error'}: {details()}"
    else:
        text = " ".join(str(getattr(err, "message", "") or err).split())
    return text[:200] or type(err).__name__
