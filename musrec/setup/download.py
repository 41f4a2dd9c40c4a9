"""Resumable, verified HTTP downloads: nothing half-written ever sits under a final name.

A file is fetched into ``NAME.part``; an interrupted transfer is resumed with an HTTP ``Range`` request (guarded
by ``If-Range`` with the validator the server gave, so a file changed on the server starts again rather than being
spliced). A server that ignores ``Range`` answers 200, and the transfer starts again from zero. When the transfer is
complete its size is checked against ``Content-Length``, its sha512 against the expected value (a mismatch deletes
the ``.part``: a bad file is never resumed), and only then is the file renamed into place with :func:`os.replace`.
A file without a published sha512 is not read again here: what uses it checks its content as it reads it (the features
tarball is read to its end by the build).

Connection errors, timeouts, cut-off transfers and 5xx answers are retried (each attempt resumes); 4xx answers
and unknown host names move on to the next URL at once. When every URL failed for reasons of the network (no
network, DNS, refused or timed-out connections, cut transfers, server errors), the error is a
:class:`NetworkError`: probably temporary, and the caller can say how to do without the download. Progress is a
tqdm bar on stderr when stderr is a terminal, else a log line now and then.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musrec import __version__
from musrec.errors import DataError, DownloadError, is_disk_full
from musrec.progress import Meter, human_bytes

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PART_SUFFIX = ".part"
META_SUFFIX = ".part.json"  # where a partial transfer came from, to resume it safely
USER_AGENT = f"musrec/{__version__}"
DISK_MARGIN = 64 << 20  # bytes left free beyond a download's size
MAX_RETRY_WAIT_S = 30.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")


class ChecksumMismatchError(DownloadError):
    """A downloaded or supplied file does not have the expected sha512."""


class NotEnoughSpaceError(DownloadError):
    """The disk cannot hold the file: no other URL will help."""


class NetworkError(DownloadError):
    """No URL gave the file, for reasons that usually pass: no network, DNS, refused or timed-out connections,
    transfers cut short, server errors (5xx)."""


class _Unavailable(Exception):
    """This URL will not serve the file (4xx): try the next one."""


class _Transient(Exception):
    """A failure worth another attempt at the same URL (it resumes); ``received`` bytes had arrived."""

    def __init__(self, message: str, *, received: int = 0) -> None:
        super().__init__(message)
        self.received = received


class _UnknownHost(Exception):
    """The host name does not resolve: no network, or a wrong URL. Not worth another attempt at this URL."""


@dataclass(frozen=True)
class Downloaded:
    """A file fetched and verified: where from, how much came over the network and how fast."""

    path: Path
    url: str
    size: int
    sha512: str
    resumed_from: int  # bytes already on disk when the last attempt started
    transferred: int  # bytes received over the network, all attempts together
    seconds: float  # spent transferring (not verifying)
    size_checked: bool  # the size matched the server's Content-Length

    @property
    def rate(self) -> float:
        """Bytes per second over the network."""
        return self.transferred / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for people: ``289.0 MB from URL: 289.0 MB in 12.3 s, 23.5 MB/s`` (and where it resumed)."""
        fetched = f"{human_bytes(self.transferred)} in {self.seconds:.1f} s, {human_bytes(self.rate)}/s"
        if self.resumed_from:
            return f"{human_bytes(self.size)} from {self.url}, resumed at {human_bytes(self.resumed_from)}: {fetched}"
        return f"{human_bytes(self.size)} from {self.url}: {fetched}"


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PART_SUFFIX)


def meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + META_SUFFIX)


def discard_partial(dest: Path) -> None:
    """Remove ``dest``'s partial download, if any."""
    for path in (part_path(dest), meta_path(dest)):
        path.unlink(missing_ok=True)


# ---- hashing and publishing ---------------------------------------------------------------------------------


def sha512_file(path: Path, *, progress: bool = False, name: str | None = None) -> str:
    """The hex sha512 of a file (read in 1 MiB chunks); ``name`` labels the progress bar."""
    digest = hashlib.sha512()
    meter = Meter(f"checking {name or path.name}", total=path.stat().st_size, enabled=progress)
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                meter.update(len(chunk))
    finally:
        meter.close()
    return digest.hexdigest()


def publish(part: Path, dest: Path) -> None:
    """Rename a finished file into place, durably."""
    os.replace(part, dest)
    with contextlib.suppress(OSError):
        fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- downloading --------------------------------------------------------------------------------------------


def fetch_first(
    urls: Sequence[str],
    dest: Path,
    *,
    what: str,
    sha512: str = "",
    timeout_s: float = 60.0,
    retries: int = 3,
    retry_wait_s: float = 2.0,
    progress: bool = False,
) -> Downloaded:
    """Fetch ``dest`` from the first of ``urls`` that serves it whole and verified; DownloadError if none does."""
    if not urls:
        raise DownloadError(f"no URL configured for {what}")
    failures: list[str] = []
    mismatch = False
    network = True  # every failure so far is a NetworkError
    for url in urls:
        try:
            return fetch(
                url,
                dest,
                sha512=sha512,
                timeout_s=timeout_s,
                retries=retries,
                retry_wait_s=retry_wait_s,
                progress=progress,
            )
        except NotEnoughSpaceError:
            raise
        except ChecksumMismatchError as err:
            mismatch = True
            network = False
            failures.append(str(err))  # names the URL
        except (DownloadError, DataError) as err:
            failures.append(f"{url}: {err}")
            network = network and isinstance(err, NetworkError)
        log.warning("%s: %s", what, failures[-1])
    if mismatch and len(failures) == 1:
        raise ChecksumMismatchError(failures[0])
    kind = ChecksumMismatchError if mismatch else NetworkError if network else DownloadError
    raise kind(f"could not fetch {what}: {'; '.join(failures)}")


def fetch(
    url: str,
    dest: Path,
    *,
    sha512: str = "",
    timeout_s: float = 60.0,
    retries: int = 3,
    retry_wait_s: float = 2.0,
    progress: bool = False,
) -> Downloaded:
    """Fetch one URL into ``dest`` through ``dest.part``, resuming a partial file and retrying transient errors."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    transferred, seconds, attempt = 0, 0.0, 0
    while True:
        attempt += 1
        started = time.monotonic()
        try:
            received, resumed_from, total = _attempt(url, dest, timeout_s=timeout_s, progress=progress)
        except _Unavailable as err:
            raise DownloadError(str(err)) from None
        except _UnknownHost as err:
            raise NetworkError(str(err)) from None
        except OSError as err:  # writing, not the network: those become _Transient
            if not is_disk_full(err):
                raise
            saved = human_bytes(part.stat().st_size) if part.exists() else "nothing"
            raise NotEnoughSpaceError(
                f"the disk filled up while writing {dest.name} in {dest.parent} ({saved} kept): free some space and "
                "run again to resume"
            ) from None
        except _Transient as err:
            transferred += err.received
            seconds += time.monotonic() - started
            if attempt > retries:
                kept = part.stat().st_size if part.exists() else 0
                again = f"; {human_bytes(kept)} kept, run again to resume" if kept else ""
                tries = f"after {attempt} attempts" if attempt > 1 else "no retries left"
                raise NetworkError(f"{err} ({tries}{again})") from None
            wait = min(MAX_RETRY_WAIT_S, retry_wait_s * 2 ** (attempt - 1))
            log.warning("%s: %s; retrying in %.0f s (attempt %d of %d)", dest.name, err, wait, attempt + 1, retries + 1)
            time.sleep(wait)
            continue
        transferred += received
        seconds += time.monotonic() - started
        break
    size = part.stat().st_size
    if total is not None and size != total:
        discard_partial(dest)
        raise DownloadError(f"{dest.name}: got {size} bytes where the server announced {total}")
    digest = _hash_part(part, progress=progress) if sha512 else ""  # one more read of the file: only if asked
    if sha512 and digest != sha512.lower():
        discard_partial(dest)
        raise ChecksumMismatchError(f"{dest.name} from {url} does not match its sha512 (the download was discarded)")
    publish(part, dest)
    meta_path(dest).unlink(missing_ok=True)
    log.info(
        "%s: %s from %s (%s fetched in %.1f s)", dest.name, human_bytes(size), url, human_bytes(transferred), seconds
    )
    return Downloaded(
        path=dest,
        url=url,
        size=size,
        sha512=digest,
        resumed_from=resumed_from,
        transferred=transferred,
        seconds=seconds,
        size_checked=total is not None,
    )


def _hash_part(part: Path, *, progress: bool) -> str:
    name = part.name.removesuffix(PART_SUFFIX)
    return sha512_file(part, progress=progress and part.stat().st_size > 64 * CHUNK, name=name)


def _attempt(url: str, dest: Path, *, timeout_s: float, progress: bool) -> tuple[int, int, int | None]:
    """One request; returns (bytes received, the offset it resumed from, the total size or None)."""
    part, meta = part_path(dest), meta_path(dest)
    have = part.stat().st_size if part.exists() else 0
    known = _read_meta(meta) if have else {}
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        # If-Range: resume only if the file is unchanged on the server (a weak ETag cannot say so).
        etag = known.get("etag")
        validator = etag if isinstance(etag, str) and not etag.startswith("W/") else known.get("last_modified")
        if isinstance(validator, str) and known.get("url") == url:
            headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        with contextlib.closing(err):
            if err.code == 416 and have:
                # The part is complete already, or longer than the file: keep the first, start the second afresh.
                match = _UNSATISFIED_RANGE.fullmatch(err.headers.get("Content-Range", "") or "")
                if match and int(match.group(1)) == have:
                    return 0, have, have
                log.warning("%s: the partial file does not fit the server's file: starting again", dest.name)
                discard_partial(dest)
                return _attempt(url, dest, timeout_s=timeout_s, progress=progress)
            if err.code in (408, 429) or err.code >= 500:
                raise _Transient(f"HTTP {err.code} {err.reason}") from None
            raise _Unavailable(f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, socket.gaierror) and reason.errno == socket.EAI_NONAME:
            raise _UnknownHost(f"unknown host ({reason.strerror}): no network?") from None
        raise _Transient(f"connection failed: {reason}") from None
    with contextlib.closing(response):
        try:
            start, total = _plan(response, have=have)
        except _Transient:
            discard_partial(dest)  # the server resumes somewhere else: start again from zero
            raise
        if start == 0 and have:
            log.warning("%s: the server did not resume the transfer; starting from zero", dest.name)
        _write_meta(meta, url=url, response=response, total=total)
        _check_space(dest, total=total, start=start)
        received = 0
        meter = Meter(dest.name, total=total, initial=start, enabled=progress)
        try:
            with part.open("r+b" if start else "wb") as out:
                out.seek(start)
                out.truncate()
                for chunk in _chunks(response):
                    out.write(chunk)
                    received += len(chunk)
                    meter.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except _Transient as err:
            raise _Transient(str(err), received=received) from None
        finally:
            meter.close()
    done = start + received
    if total is not None and done < total:
        raise _Transient(f"the transfer stopped at {human_bytes(done)} of {human_bytes(total)}", received=received)
    return received, start, total


def _plan(response: Any, *, have: int) -> tuple[int, int | None]:
    """Where the body starts in the file, and the file's total size if the server said."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "") or "")
        if match is None or int(match.group(1)) != have:
            raise _Transient(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
        return have, None if match.group(3) == "*" else int(match.group(3))
    if response.status != 200:
        raise _Unavailable(f"HTTP {response.status}")
    return 0, int(length) if length and length.isdigit() else None


def _chunks(response: Any) -> Iterator[bytes]:
    while True:
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as err:
            raise _Transient(f"the transfer was cut: {type(err).__name__}") from None
        if not chunk:
            return
        yield chunk


def _check_space(dest: Path, *, total: int | None, start: int) -> None:
    if total is None:
        return
    need = total - start
    free = shutil.disk_usage(dest.parent).free
    if free < need + DISK_MARGIN:
        raise NotEnoughSpaceError(
            f"not enough disk space for {dest.name}: it needs {human_bytes(need)}, {human_bytes(free)} free "
            f"in {dest.parent}"
        )


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_meta(path: Path, *, url: str, response: Any, total: int | None) -> None:
    data = {
        "url": url,
        "etag": response.headers.get("ETag"),
        "last_modified": response.headers.get("Last-Modified"),
        "total": total,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
