"""The address guard: every TCP connection made for a link goes to an address checked when it is made.

Checking that a link's host resolves to public addresses before yt-dlp runs is not enough. yt-dlp resolves the
name again (a name can answer a public address to the check and 127.0.0.1 to the download: DNS rebinding),
follows redirects wherever they point, and hands media URLs to ffmpeg, which resolves names, follows redirects
and reads HLS segments on its own. So a fetch runs behind :class:`GuardProxy`, a forward proxy on 127.0.0.1 (an
ephemeral port, one per fetch): for each connection it resolves the host itself (:attr:`AddressPolicy.resolve`),
checks every address (:attr:`AddressPolicy.allowed`), connects to a checked address itself and relays the
bytes; otherwise it answers 403 and records the refusal, which the fetch reports as
:data:`PRIVATE_ADDRESS`. https goes through HTTP CONNECT, so TLS stays end to end; a plain http request is
forwarded with ``Connection: close``, so each request comes on a connection of its own (one that a client reused
anyway could only reach the address already checked).

Why a proxy rather than yt-dlp's request handlers: ffmpeg, which downloads the sections, is a separate process
that no Python hook reaches, but it does honour an HTTP proxy, for http and for https (its ``tls`` protocol
tunnels through ``httpproxy`` with CONNECT). yt-dlp hands its ``proxy`` to ffmpeg as ``http_proxy`` in the
environment, and musrec passes ``-http_proxy`` as well; ffmpeg's HLS reader passes it on to every playlist, key
and segment it opens. One mechanism then covers yt-dlp's requests, its redirects, ffmpeg's and ffmpeg's
redirects, and the tests run both clients through it (tests/test_rebinding.py).

What it relies on, and what it does not cover:

- ffmpeg connects directly to hosts named in ``no_proxy``; :mod:`musrec.links.ytdlp_env` hides that variable from
  it while fetches run.
- Only http(s) is proxied: the fetch refuses media URLs of other schemes before downloading, and ffmpeg's
  protocol whitelist (:data:`FFMPEG_PROTOCOLS`) keeps it from opening others (rtmp, udp, files) on its own.
- yt-dlp's JavaScript runtimes solve YouTube's player challenges without any network: deno runs without network
  permission; node, if used, runs code from YouTube's player, not from the link.
- An upstream proxy in the environment (``https_proxy``) is no longer used for links: the guard connects itself.

The guard also bounds a fetch as a whole, in time and in bytes; the thread that runs yt-dlp cannot be stopped, so
these are what end a fetch that a server drags out:

- ``timeout_s`` ends a connection on which nothing moved for that long, but a server that sends a byte now and then
  keeps one open for ever: each such link would hold one of the bot's workers. After ``deadline_s`` the guard ends
  the fetch (a timeout).
- yt-dlp keeps whole pages in memory (a generic link's page, with no limit), and ``max_filesize`` bounds only the
  media it downloads. Past ``max_bytes`` received in all, the guard ends the fetch (too much data).

Ending a fetch shuts every connection and refuses new ones (504), so yt-dlp and ffmpeg fail or stop; :attr:`ended`
says why.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import urlsplit

from musrec.errors import MusrecError, UnsupportedLinkError
from musrec.links.errors import FetchError, FetchFailure
from musrec.links.parse import is_public_address, normal_host

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[IPAddress]]

PRIVATE_ADDRESS: Final = "this link points to a private network address, which is not allowed"
LOOPBACK: Final = "127.0.0.1"
MAX_HEAD_BYTES: Final = 64 * 1024  # a request line and headers; yt-dlp's and ffmpeg's are well under 8 KiB
MAX_CONNECTIONS: Final = 32  # at once, per fetch: yt-dlp and ffmpeg open a few at a time
CHUNK: Final = 64 * 1024
JOIN_S: Final = 5.0  # how long closing waits for each thread, once its sockets are shut
# What ffmpeg may open: http(s) over the proxy (https is tls over httpproxy over tcp), HLS keys and data: URIs.
FFMPEG_PROTOCOLS: Final = "http,https,tls,tcp,httpproxy,crypto,data"
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade"})


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """The addresses of ``host``, from the system's resolver and in its order (OSError if there are none)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    return list(dict.fromkeys(found))


def _any_address(address: IPAddress) -> bool:
    return True


@dataclass(frozen=True)
class AddressPolicy:
    """Where connections made for a link may go: ``resolve`` turns a host name into addresses, ``allowed`` says
    whether one address may be connected to. The default is the production policy: the system's resolver, public
    addresses only (:func:`~musrec.links.parse.is_public_address`)."""

    resolve: Resolver = resolve_host
    allowed: Callable[[IPAddress], bool] = is_public_address

    def allowing_private(self) -> AddressPolicy:
        """The same resolver, every address allowed: for tests against a loopback server only."""
        return replace(self, allowed=_any_address)

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for ``host``: all it resolves to, each allowed.

        UnsupportedLinkError (:data:`PRIVATE_ADDRESS`) if any is not; FetchError (NETWORK) if there are none.
        """
        name = normal_host(host)
        try:
            found: list[IPAddress] = [ipaddress.ip_address(name)]
        except ValueError:
            try:
                found = list(self.resolve(name, port))
            except (OSError, UnicodeError) as err:
                log.info("cannot resolve %s: %s", name, err)
                raise FetchError(FetchFailure.NETWORK) from None
        if not found:
            raise FetchError(FetchFailure.NETWORK)
        for address in found:
            if not self.allowed(address):
                log.warning("refused %s: it resolves to %s", name, address)
                raise UnsupportedLinkError(PRIVATE_ADDRESS)
        return found


@dataclass
class _Request:
    """What a client asked the proxy for: a tunnel (CONNECT) or one plain-http request to forward."""

    host: str
    port: int
    tunnel: bool
    head: bytes = b""  # the request to send upstream (plain http only)
    rest: bytes = b""  # bytes that arrived after the head: the start of a body


class _Refused(Exception):
    """An upstream was not connected to; ``status`` and ``reason`` are the proxy's answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class GuardProxy:
    """A forward proxy on 127.0.0.1 that connects only to addresses ``policy`` allows (see the module docstring).

    Use it as a context manager; ``url`` is what clients are given. ``refused`` lists the hosts refused,
    ``failure`` is why the first upstream that could not be reached was not, ``connections`` counts upstream
    connections made, ``received`` counts the bytes received from upstreams. ``ended`` is why the guard ended the
    fetch, if it did: ``deadline_s`` (from the start) passed, or more than ``max_bytes`` came in (None: no bound).
    Closing shuts every connection and joins every thread.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        timeout_s: float,
        deadline_s: float | None = None,
        max_bytes: int | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.refused: list[str] = []
        self.failure: FetchFailure | None = None
        self.connections = 0
        self.received = 0
        self.ended: FetchFailure | None = None
        self._deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()
        self._closed = threading.Event()
        self._listener = socket.create_server((LOOPBACK, 0))  # loopback only: never reachable from outside
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self.url = f"http://{LOOPBACK}:{self._listener.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="musrec-guard", daemon=True)
        self._acceptor.start()

    def __enter__(self) -> GuardProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stopped(self) -> MusrecError | None:
        """The refusal (:data:`PRIVATE_ADDRESS`) if any connection was refused, else why the guard ended the fetch:
        what stands whatever yt-dlp and ffmpeg made of it (they get past some failures, and may take a connection
        the guard shut for the end of the media)."""
        if self.refused:
            return UnsupportedLinkError(PRIVATE_ADDRESS)
        return FetchError(self.ended) if self.ended is not None else None

    def error(self) -> MusrecError | None:
        """What :meth:`stopped` says, else why a connection could not be made."""
        return self.stopped() or (FetchError(self.failure) if self.failure is not None else None)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake_w.send(b"x")
        self._acceptor.join(JOIN_S)
        with self._lock:
            for sock in self._sockets:
                _shut(sock)
            threads = list(self._threads)
        for thread in threads:
            thread.join(JOIN_S)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._closed.is_set():
                left = None if self._deadline is None or self.ended else self._deadline - time.monotonic()
                if left is not None and left <= 0:
                    self._end(FetchFailure.TIMEOUT, "the fetch took longer than its deadline")
                    continue
                for key, _ in selector.select(left):
                    if key.fileobj is self._listener and not self._closed.is_set():
                        self._accept()

    def _end(self, reason: FetchFailure, why: str) -> None:
        """End the fetch: shut every connection; :meth:`_serve` refuses those that come after."""
        with self._lock:
            if self.ended is not None:
                return
            self.ended = reason
            sockets = list(self._sockets)
        log.info("guard proxy: %s; closing %d connections", why, len(sockets))
        for sock in sockets:
            _shut(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        client.setblocking(True)
        client.settimeout(self.timeout_s)
        thread = threading.Thread(target=self._serve, args=(client,), name="musrec-guard-conn", daemon=True)
        with self._lock:
            busy = len(self._threads) >= self.max_connections
            if not busy:
                self._threads.add(thread)
                self._sockets.add(client)
        if busy:
            log.warning("guard proxy: too many connections at once")
            _answer(client, 503, "Service Unavailable")
            client.close()
        else:
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            if self.ended is not None:
                raise _Refused(504, "Gateway Timeout")
            request = _read_request(client)
            if request is None:
                raise _Refused(400, "Bad Request")
            upstream = self._open(request.host, request.port)
            if request.tunnel:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(request.head + request.rest)
            self._relay(client, upstream)
        except _Refused as refusal:
            _answer(client, refusal.status, refusal.reason)
        except OSError as err:
            log.debug("guard proxy: a connection ended: %s", err)
        finally:
            with self._lock:
                for sock in (client, upstream):
                    if sock is not None:
                        self._sockets.discard(sock)
                        sock.close()
                self._threads.discard(threading.current_thread())

    def _open(self, host: str, port: int) -> socket.socket:
        """A connection to a checked address of ``host``; _Refused (and recorded) if there is none."""
        try:
            addresses = self.policy.addresses(host, port)
        except UnsupportedLinkError:
            with self._lock:
                self.refused.append(host)
            raise _Refused(403, "Forbidden") from None
        except FetchError as err:
            self._fail(err.reason)
            raise _Refused(502, "Bad Gateway") from None
        timed_out = False
        for address in addresses:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            with self._lock:
                if self._closed.is_set() or self.ended is not None:
                    sock.close()
                    break
                self._sockets.add(sock)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect((str(address), port))  # the checked address itself: nothing is resolved again
            except OSError as err:
                timed_out = isinstance(err, TimeoutError)
                log.info("guard proxy: cannot connect to %s port %d: %s", host, port, err)
                with self._lock:
                    self._sockets.discard(sock)
                sock.close()
                continue
            with self._lock:
                self.connections += 1
            log.debug("guard proxy: %s port %d via %s", host, port, address)
            return sock
        self._fail(FetchFailure.TIMEOUT if timed_out else FetchFailure.NETWORK)
        raise _Refused(504, "Gateway Timeout") if timed_out else _Refused(502, "Bad Gateway")

    def _count(self, size: int) -> bool:
        """Count ``size`` bytes received from an upstream; False (and the fetch ended) past ``max_bytes``."""
        with self._lock:
            self.received += size
            over = self._max_bytes is not None and self.received > self._max_bytes
        if over:
            self._end(FetchFailure.TOO_MUCH_DATA, f"more than {self._max_bytes:,} bytes received")
        return not over

    def _fail(self, reason: FetchFailure) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = reason

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy bytes both ways until the upstream is done, either side fails, or nothing moves for ``timeout_s``."""
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while not self._closed.is_set():
                ready = selector.select(self.timeout_s)
                if not ready:
                    log.info("guard proxy: a connection stalled for %.0f s", self.timeout_s)
                    return
                for key, _ in ready:
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    data = source.recv(CHUNK)
                    if data and source is upstream and not self._count(len(data)):
                        return
                    if data:
                        peers[source].sendall(data)
                    elif source is upstream:
                        return  # the answer is complete: closing the client tells it so
                    else:
                        selector.unregister(client)  # the client is done sending; the answer may still come
                        upstream.shutdown(socket.SHUT_WR)


def _read_request(client: socket.socket) -> _Request | None:
    """The request at the start of ``client``'s stream: CONNECT host:port, or an absolute http URL; None if neither."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            return None
        chunk = client.recv(CHUNK)
        if not chunk:
            return None
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if method.upper() == "CONNECT":
        host, _, number = target.rpartition(":")
        if not host or not number.isdigit() or not 0 < int(number) < 65536:
            return None
        return _Request(normal_host(host), int(number), tunnel=True)
    try:
        url = urlsplit(target)
        port = url.port or 80
    except ValueError:
        return None
    if url.scheme.lower() != "http" or not url.hostname:
        return None
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    headers = [line for line in lines[1:] if line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
    upstream_head = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close", "", ""])
    return _Request(normal_host(url.hostname), port, tunnel=False, head=upstream_head.encode("latin-1"), rest=rest)


def _answer(client: socket.socket, status: int, reason: str) -> None:
    body = f"{status} {reason}\n".encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    with contextlib.suppress(OSError):
        client.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
