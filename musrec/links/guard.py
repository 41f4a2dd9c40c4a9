"""The address guard: every TCP connection made for a link goes to an address checked when it is made.

Checking that a link's host resolves to public addresses before yt-dlp runs is not enough. yt-dlp resolves the
name again (a name can answer a public address to the check and 127.0.0.1 to the download: DNS rebinding),
follows redirects wherever they point, and hands media URLs to ffmpeg, which resolves names, follows redirects
and reads HLS segments on its own. So a fetch runs behind :class:`GuardProxy`, a forward proxy on 127.0.0.1 (an
ephemeral port and credentials of its own, one per fetch): for each connection it checks the port, resolves the
host itself (:attr:`AddressPolicy.resolve`), checks every address (:meth:`AddressPolicy.check_address`: public,
and none of this machine's), connects to a checked address itself, directly or through the operator's egress
proxy (:mod:`musrec.links.upstream`), and relays the bytes; otherwise it answers 403 and records the refusal,
which the fetch reports (:data:`~musrec.links.addresses.PRIVATE_ADDRESS`...). A client without the fetch's
credentials gets 407: other local programs cannot spend a fetch's connections and bytes. https goes through HTTP
CONNECT, so TLS stays end to end; a plain http request is
forwarded with ``Connection: close``, so each request comes on a connection of its own (one that a client reused
anyway could only reach the address already checked).

Why a proxy rather than yt-dlp's request handlers: ffmpeg, which downloads the sections, is a separate process
that no Python hook reaches, but it does honour an HTTP proxy, for http and for https (its ``tls`` protocol
tunnels through ``httpproxy`` with CONNECT). yt-dlp hands its ``proxy`` to ffmpeg as ``http_proxy`` in the
environment, and musrec passes ``-http_proxy`` as well; ffmpeg's HLS reader passes it on to every playlist, key
and segment it opens. One mechanism then covers yt-dlp's requests, its redirects, ffmpeg's and ffmpeg's
redirects, and the tests run both clients through it (tests/test_rebinding.py).

What it relies on, and what it does not cover:

- ffmpeg connects directly to hosts named in ``no_proxy``; :mod:`musrec.links.ytdlp_env` starts it without that
  variable.
- Only http(s) is proxied: the fetch refuses media URLs of other schemes before downloading, and ffmpeg's
  protocol whitelist (:data:`FFMPEG_PROTOCOLS`) keeps it from opening others (rtmp, udp, files) on its own.
- yt-dlp's JavaScript runtimes solve YouTube's player challenges without any network: deno runs without network
  permission; node, if used, runs code from YouTube's player, not from the link.
- A proxy in the environment (``https_proxy``) is not used for links: the guard connects itself, or through
  ``[youtube] proxy``.
- Pages are asked for uncompressed (``Accept-Encoding: identity``, by yt-dlp and by the guard on plain http), since
  yt-dlp inflates a compressed page whole, past what the guard counted. On plain http the guard sees the answer,
  and ends the fetch if it comes compressed all the same; over https it sees only encrypted bytes, so a server of
  an allowed host that compresses against the request is not caught here (YouTube's answer as asked).

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
import logging
import secrets
import selectors
import socket
import ssl
import threading
import time
from typing import Final

from musrec.errors import MusrecError, UnsupportedLinkError
from musrec.links.addresses import AddressPolicy, IPAddress
from musrec.links.errors import FetchError, FetchFailure
from musrec.links.proxy_http import (
    CHUNK,
    ProxyRequest,
    answer,
    authorized,
    basic_authorization,
    content_encoding,
    read_request,
)
from musrec.links.upstream import UpstreamProxy, UpstreamRefused

log = logging.getLogger(__name__)

LOOPBACK: Final = "127.0.0.1"
MAX_CONNECTIONS: Final = 32  # at once, per fetch: yt-dlp and ffmpeg open a few at a time
JOIN_S: Final = 5.0  # how long closing waits for each thread, once its sockets are shut
# What ffmpeg may open: http(s) over the proxy (https is tls over httpproxy over tcp), HLS keys and data: URIs.
FFMPEG_PROTOCOLS: Final = "http,https,tls,tcp,httpproxy,crypto,data"
CREDENTIAL_BYTES: Final = 18  # of randomness in each of the user name and password: 24 characters each


class _Refused(Exception):
    """An upstream was not connected to; ``status`` and ``reason`` are the proxy's answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class GuardProxy:
    """A forward proxy on 127.0.0.1 that connects only to addresses ``policy`` allows (see the module docstring),
    directly or through ``upstream``.

    Use it as a context manager; ``url`` is what clients are given, with the credentials only they know.
    ``refused`` lists the hosts refused, ``failure`` is why the first upstream that could not be reached was not,
    ``connections`` counts upstream connections made, ``received`` counts the bytes received from upstreams.
    ``ended`` is why the guard ended the fetch, if it did: ``deadline_s`` (from the start) passed, more than
    ``max_bytes`` came in (None: no bound), or a page came compressed although it was asked for as it is.
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
        upstream: UpstreamProxy | None = None,
    ) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.upstream = upstream
        self.refused: list[str] = []
        self.failure: FetchFailure | None = None
        self.connections = 0
        self.received = 0
        self.ended: FetchFailure | None = None
        self._refusal: MusrecError | None = None
        self._deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()
        self._closed = threading.Event()
        self._listener = socket.create_server((LOOPBACK, 0))  # loopback only: never reachable from outside
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        user, password = secrets.token_urlsafe(CREDENTIAL_BYTES), secrets.token_urlsafe(CREDENTIAL_BYTES)
        self.authorization = basic_authorization(user, password)  # what a client must send as Proxy-Authorization
        self.url = f"http://{user}:{password}@{LOOPBACK}:{self._listener.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="musrec-guard", daemon=True)
        self._acceptor.start()

    def __enter__(self) -> GuardProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def stopped(self) -> MusrecError | None:
        """The first refusal (:data:`~musrec.links.addresses.PRIVATE_ADDRESS`...) if any connection was refused,
        else why the guard ended the fetch: what stands whatever yt-dlp and ffmpeg made of it (they get past some
        failures, and may take a connection the guard shut for the end of the media)."""
        if self._refusal is not None:
            return self._refusal
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
            answer(client, 503, "Service Unavailable")
            client.close()
        else:
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            if self.ended is not None:
                raise _Refused(504, "Gateway Timeout")
            request = read_request(client)
            if request is None:
                raise _Refused(400, "Bad Request")
            if not authorized(request, self.authorization):
                log.debug("guard proxy: a request without this fetch's credentials")
                raise _Refused(407, "Proxy Authentication Required")
            upstream = self._open(request.host, request.port)
            if request.tunnel:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(request.head + request.rest)
            self._relay(client, upstream, request)
        except _Refused as refusal:
            answer(client, refusal.status, refusal.reason)
        except OSError as err:
            log.debug("guard proxy: a connection ended: %s", err)
        except Exception:  # a bug: logged (through the log's redaction), the client told, the guard goes on
            log.exception("guard proxy: a request failed")
            answer(client, 500, "Internal Server Error")
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
            targets: list[IPAddress | str] = list(self._targets(host, port))
        except UnsupportedLinkError as refusal:
            with self._lock:
                self.refused.append(host)
                self._refusal = self._refusal or refusal
            raise _Refused(403, "Forbidden") from None
        except FetchError as err:
            self._fail(err.reason)
            raise _Refused(502, "Bad Gateway") from None
        timed_out = False
        for target in targets:
            with self._lock:
                if self._closed.is_set() or self.ended is not None:
                    break
            try:
                sock = self._connect(target, port)
            except UpstreamRefused as err:  # the operator's proxy said no: its settings, not the link
                log.warning("guard proxy: the egress proxy %s refused %s port %d: %s", self.upstream, host, port, err)
                continue
            except OSError as err:
                timed_out = isinstance(err, TimeoutError)
                log.info("guard proxy: cannot connect to %s port %d: %s", host, port, err)
                continue
            with self._lock:
                self.connections += 1
            log.debug("guard proxy: %s port %d via %s", host, port, target)
            return sock
        self._fail(FetchFailure.TIMEOUT if timed_out else FetchFailure.NETWORK)
        raise _Refused(504, "Gateway Timeout") if timed_out else _Refused(502, "Bad Gateway")

    def _targets(self, host: str, port: int) -> list[IPAddress] | list[str]:
        """What to connect to for ``host``: its checked addresses; or, when the upstream proxy resolves names,
        the name itself, once the port and any local answers passed (a name with none still goes to the proxy)."""
        if self.upstream is None or not self.upstream.resolves_names:
            return self.policy.addresses(host, port)
        self.policy.check_port(port)  # checked here too: a name with no local answer skips the rest
        with contextlib.suppress(FetchError):  # no local answer: the proxy's resolver is the only one
            self.policy.addresses(host, port)
        return [host]

    def _connect(self, target: IPAddress | str, port: int) -> socket.socket:
        """A connection to ``target`` (nothing resolved again for an address), directly or through the upstream;
        registered, so that closing or ending the fetch shuts it."""
        if self.upstream is not None:
            sock = self.upstream.open(str(target), port, timeout_s=self.timeout_s)
            sock.settimeout(self.timeout_s)
        else:
            family = socket.AF_INET6 if ":" in str(target) else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
        with self._lock:
            self._sockets.add(sock)
        if self.upstream is None:
            try:
                sock.connect((str(target), port))
            except OSError:
                with self._lock:
                    self._sockets.discard(sock)
                sock.close()
                raise
        return sock

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

    def _relay(self, client: socket.socket, upstream: socket.socket, request: ProxyRequest) -> None:
        """Copy bytes both ways until the upstream is done, either side fails, or nothing moves for ``timeout_s``.
        A plain-http answer's head is read on the way: a compressed one ends the fetch (it was asked for as is)."""
        peers = {client: upstream, upstream: client}
        head: bytes | None = None if request.tunnel else b""
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
                    data = _receive(source)
                    if data and source is upstream:
                        if not self._count(len(data)):
                            return
                        if head is not None:
                            head += data
                            encoding = content_encoding(head)
                            if encoding not in (None, "", "identity"):
                                self._end(FetchFailure.TOO_MUCH_DATA, f"a page came compressed ({encoding})")
                                return
                            head = None if encoding is not None or len(head) > CHUNK else head
                    if data:
                        peers[source].sendall(data)
                    elif source is upstream:
                        return  # the answer is complete: closing the client tells it so
                    else:
                        selector.unregister(client)  # the client is done sending; the answer may still come
                        if not isinstance(upstream, ssl.SSLSocket):  # TLS to a proxy cannot half-close
                            upstream.shutdown(socket.SHUT_WR)


def _receive(sock: socket.socket) -> bytes:
    """What ``sock`` has: a chunk, and for TLS (to an https proxy) all it has decrypted already, which the selector
    cannot see."""
    data = sock.recv(CHUNK)
    while data and isinstance(sock, ssl.SSLSocket) and sock.pending():
        data += sock.recv(sock.pending())
    return data


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
