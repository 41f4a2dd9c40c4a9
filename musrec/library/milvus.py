"""Connecting to Milvus: an embedded Milvus Lite directory or a server, with pymilvus's MilvusClient.

Milvus Lite lets one process hold its directory (an advisory lock in it). pymilvus starts one embedded server per
directory and process and keeps it, with the lock, until the process ends; :func:`release` stops it when the last
store of this process closes, so another process (``musrec library add`` after the bot, or the other way round)
can take the directory at once. Opening a directory another process holds is :class:`LibraryBusyError`, one line.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from musrec.library.errors import LibraryBusyError, LibraryError

log = logging.getLogger(__name__)

# Milvus Lite's servicer logs every call that failed with its traceback (a damaged file's among them): said here in
# one line, and logged so.
QUIET_WITH_LITE = ("milvus_lite.server_manager", "milvus_lite.adapter.grpc.servicer", "grpc._server")
# pymilvus's own handlers print every failed call with its traceback on stderr (musrec says it in one line and logs
# it), and Milvus Lite, embedded or served (``milvus-lite server``), answers a timestamp request the query iterator
# tries first with "not implemented" (the client then uses its own clock), which pymilvus warns of at every listing.
QUIET_ALWAYS = ("pymilvus.decorators", "pymilvus.client.connection_manager", "pymilvus.client.iterator.query_iterator")
CONNECT_FAILED = 2  # pymilvus's code for a connection it could not make (pymilvus.client.types.Status)
TOKEN_VARIABLE = "MUSREC_LIBRARY_TOKEN"  # where a server's token comes from (user:password, or an API key)
# A server with authentication refuses a wrong or missing token before any method runs, Connect included: with gRPC
# status UNAUTHENTICATED (Milvus 2.3.5, tested, and later); earlier 2.3 releases with status UNKNOWN and "auth check
# failure, ..." followed by the user and password they were sent (never shown); Milvus's own code for it, in an
# answer's Status, is 1800.
REFUSED_STATUS = "UNAUTHENTICATED"
REFUSED_TEXT = "auth check failure"
REFUSED_CODE = 1800  # merr.ErrNeedAuthenticate, "user hasn't authenticated"
# A user the server knows but whose roles lack a privilege a call needs: gRPC status PERMISSION_DENIED, its details
# naming the privilege ("PrivilegeLoad: permission deny to USER"); Milvus's code for it in a Status is 1401.
DENIED_STATUS = "PERMISSION_DENIED"
DENIED_CODE = 1401  # merr.ErrPrivilegeNotPermitted
PRIVILEGE = re.compile(r"\bPrivilege([A-Z][A-Za-z]*)")
LOCK_FILE = "LOCK"  # the advisory lock Milvus Lite holds in its data directory while it is open
# Milvus Lite's words when the files of its directory cannot be read as what they should be (its JSON schema and
# manifests, Parquet data, NumPy index files): a damaged store, as a disk or a copy that failed leaves one.
DAMAGED = re.compile(
    r"not valid JSON|JSONDecodeError|magic bytes|Parquet|EOF|corrupt|truncated|unexpected end|checksum|"
    r"cannot (?:be )?(?:read|parse|load)|could not (?:read|parse|load|open)|invalid (?:file|header|data)|"
    r"No such file|failed to load|File exists",  # a collection's directory without its schema: made again, refused
    re.IGNORECASE,
)
WORDS_MAX = 160  # characters of Milvus Lite's words in a line
NO_SPACE = re.compile(r"No space left on device|ENOSPC|Disk quota exceeded", re.IGNORECASE)
NOT_PERMITTED = re.compile(r"Permission denied|Read-only file system|EACCES|EROFS", re.IGNORECASE)

_OPEN: dict[str, int] = {}  # Milvus Lite directories open in this process: how many stores hold each
_OPEN_LOCK = threading.Lock()


def connect(uri: str, *, token: str | None, local: bool, timeout_s: float) -> Any:
    """A MilvusClient at ``uri``. A Milvus Lite directory another process holds is LibraryBusyError, in one line; a
    server that cannot be reached, does not answer in time or refuses the token is LibraryError (:func:`failure`)."""
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
        # A server: a connection of this client's own, closed with it. pymilvus otherwise shares one per server and
        # token and keeps it, pinging, after its last client closes; a server that takes the pings for too many
        # ends it (milvus-lite server does), and the next client meets it broken: "cannot be reached".
        client = MilvusClient(uri=uri, token=token or "", timeout=timeout_s, **({} if local else {"dedicated": True}))
    except (MilvusException, RpcError) as err:
        if local and _locked(Path(uri)):
            raise _busy(uri) from None
        log.info("cannot open the library at %s: %s", uri, logged(err))
        if local:
            raise local_failure("open the library", uri, err) from None
        raise failure("open the library", uri, err, local=False, timeout_s=timeout_s, token=bool(token)) from None
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


def failure(doing: str, uri: str, err: Exception, *, local: bool, timeout_s: float, token: bool) -> LibraryError:
    """A failed call to the store in one line: what could not be done and, for a Milvus server that cannot be
    reached, did not answer in time or refused the token (``token``: whether one was sent), which server and what
    to do. The server's words about a refused token are not repeated: an older server's words name the password sent."""
    if local:
        return local_failure(doing, uri, err)
    if _refusal(err) is not None:
        if token:
            why = (
                f"refused the credentials in {TOKEN_VARIABLE}: check that it holds a user and password "
                '("user:password") or an API key the server accepts'
            )
        else:
            why = f'requires credentials and none were given: set {TOKEN_VARIABLE} to "user:password" or an API key'
        return LibraryError(f"could not {doing}: the Milvus server at {uri} {why}, then try again")
    denied = _denial(err)
    if denied is not None:
        what = f"the privilege {denied}" if denied else "a privilege the library needs"
        return LibraryError(
            f"could not {doing}: the Milvus server at {uri} does not grant the user in {TOKEN_VARIABLE} {what}: grant "
            "it to one of that user's roles (musrec's README lists the privileges a library needs), then try again"
        )
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


def local_failure(doing: str, uri: str, err: Exception) -> LibraryError:
    """A failed call to a Milvus Lite store in one line: a disk that is full or may not be written, a store whose
    files cannot be read (damaged: the way out, which keeps it), or else Milvus Lite's words. Its paths are shown
    relative to the store."""
    said = short_error(err, limit=None).replace(os.path.abspath(uri) + os.sep, "").replace(uri + os.sep, "")
    words = said if len(said) <= WORDS_MAX else said[: WORDS_MAX - 1] + "…"
    if NO_SPACE.search(said):
        return LibraryError(f"could not {doing}: the disk that holds the library {uri} is full: free some space, then "
                            "try again")  # fmt: skip
    if NOT_PERMITTED.search(said):
        return LibraryError(f"could not {doing}: the library {uri} may not be read or written by this user ({words}): "
                            "check its owner and permissions, then try again")  # fmt: skip
    if DAMAGED.search(said):
        return LibraryError(
            f"could not {doing}: the library {uri} is damaged ({words}): keep a copy of it, move it away, and add the "
            "tracks again (`musrec library add`: a new library is made in its place; a track is known by its content)"
        )
    return LibraryError(f"could not {doing}: the library's store answered {words}")


def _refusal(err: BaseException) -> str | None:
    """How the server refused the caller's credentials (a gRPC status or Milvus's code), None if it did not.
    pymilvus raises a refused ``Connect`` as a connection it could not make, with the server's answer as its cause;
    a later call's UNAUTHENTICATED as it came; a later call's UNKNOWN, retried until its deadline, as a
    MilvusException with the server's words in its message (and itself as its cause)."""
    for cause, status, text in _causes(err):
        if status == REFUSED_STATUS or REFUSED_TEXT in text:
            return status or getattr(getattr(cause, "code", None), "name", None) or "refused"
        if getattr(cause, "code", None) == REFUSED_CODE:
            return f"code {REFUSED_CODE}"
    return None


def _denial(err: BaseException) -> str | None:
    """The privilege the server refused the caller (its name, or "" if the answer names none), None if it refused
    none."""
    for cause, status, text in _causes(err):
        if status == DENIED_STATUS or getattr(cause, "code", None) == DENIED_CODE:
            named = PRIVILEGE.search(text)
            return named.group(1) if named else ""
    return None


def _causes(err: BaseException) -> Iterator[tuple[BaseException, str | None, str]]:
    """``err`` and its causes, each once: (the exception, its gRPC status, the server's words)."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        details = getattr(cause, "details", None)
        text = details() if callable(details) else getattr(cause, "message", "")  # after retries: a MilvusException
        yield cause, _status(cause), str(text or "")
        cause = cause.__cause__


def logged(err: Exception) -> str:
    """The store's error for the log: in full, except a refusal of credentials, whose words may name them."""
    refusal = _refusal(err)
    return str(err) if refusal is None else f"the server refused the credentials ({refusal})"


def _status(err: BaseException) -> str | None:
    """The gRPC status of a call that failed in transport (grpc.RpcError), else None."""
    code = getattr(err, "code", None)
    status = code() if callable(code) else None
    return getattr(status, "name", None)


def short_error(err: Exception, *, limit: int | None = 200) -> str:
    """The error's words on one line, at most ``limit`` characters."""
    details = getattr(err, "details", None)
    if callable(details):  # grpc.RpcError: its status and details, not its multi-line repr
        text = f"{_status(err) or 'error'}: {details()}"
    else:
        text = " ".join(str(getattr(err, "message", "") or err).split())
    return text[:limit] or type(err).__name__
