"""Where ``musrec serve`` listens, and how many connections it keeps and for how long.

- **The port first.** :func:`listen` binds the address before anything slow happens, so a port in use is one line
  at once (which port, and ``--port``), not an ``OSError`` after the model has loaded for seconds.
- **A bounded number of connections.** :class:`ConnectionCap` hands new connections to aiohttp's server while fewer
  than ``max_connections`` are open; beyond that a connection is answered 503 (MAX's error shape, with
  ``Retry-After``) and closed, before a byte of its request is parsed.
- **A deadline for a request's head.** A connection must send a whole request line and headers within
  ``header_timeout_s`` of opening (or of its previous answer), else it is closed: a client that trickles its headers
  a byte at a time (slowloris) cannot hold a connection for long. This is aiohttp's ``keepalive_timeout``, which
  applies to a connection's first request from aiohttp 3.14.4 on. Bodies have their own deadline (the predict
  handler's ``read_timeout_s``).

A server facing the internet belongs behind a reverse proxy all the same (the README shows one): it buffers slow
clients, terminates TLS and can limit clients per address, which this server does not try to do.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import signal
import socket
import time
from collections.abc import Callable, Sequence

from aiohttp import web

from musrec.errors import ConfigError

log = logging.getLogger(__name__)

BACKLOG = 128  # pending connections the kernel queues (aiohttp's and asyncio's default)
DEFAULT_MAX_CONNECTIONS = 64
# Longer than the idle time of aiohttp clients' pooled connections (15 s, musrec's MAX client among them), so a client
# closes an idle connection before the server does and never sends a request on a connection being closed under it.
DEFAULT_HEADER_TIMEOUT_S = 30.0
REFUSAL_GRACE_S = 1.0  # how long a refused connection may still send before it is closed (so the 503 is read)
REFUSAL_LOG_S = 60.0  # refused connections are logged as a count, at most this often
MSG_TOO_MANY_CONNECTIONS = "Server busy: too many connections; try again shortly."
SHUTDOWN_TIMEOUT_S = 5.0  # what requests in flight get to finish when the server is stopped


def listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for ``host`` and ``port`` (one per address the host has: IPv4, IPv6).

    ConfigError, in one line saying what to change, when the port is in use, needs privileges, or the host is no
    address of this machine.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ConfigError(f"cannot listen on {host}: no such address; choose another with --host") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            # As asyncio does: a port whose last server left connections in TIME_WAIT can be bound again at once
            # (a port with a listening server still cannot).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as err:
        for sock in sockets:
            sock.close()
        raise _cannot_listen(err, host, port) from None
    return sockets


def _cannot_listen(err: OSError, host: str, port: int) -> ConfigError:
    if err.errno == errno.EADDRINUSE:
        return ConfigError(
            f"port {port} on {host} is already in use (another musrec serve or MAX server?): stop it, or choose "
            "another port with --port"
        )
    if err.errno == errno.EACCES:
        return ConfigError(
            f"no permission to listen on port {port} (ports under 1024 need it): choose another with --port"
        )
    if err.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"{host} is not an address of this machine: choose another with --host")
    return ConfigError(f"cannot listen on {host} port {port}: {err.strerror or err}")


def urls(sockets: Sequence[socket.socket]) -> list[str]:
    """``http://host:port`` of each socket, with the port the system chose for port 0."""
    out = []
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        out.append(f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}")
    return out


class ConnectionCap:
    """A protocol factory for ``loop.create_server``: aiohttp's server while fewer than ``max_connections`` are open,
    else a connection that is answered 503 and closed."""

    def __init__(self, server: web.Server, max_connections: int) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self.server = server
        self.max_connections = max_connections
        self.refused = 0  # since the last log line about them
        self._logged_at = -math.inf

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.server.connections) < self.max_connections:
            return self.server()
        self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= REFUSAL_LOG_S:
            log.warning("refused %d connection(s) since the last note: %d open", self.refused, self.max_connections)
            self.refused, self._logged_at = 0, now
        return _Refusal()


class _Refusal(asyncio.Protocol):
    """Answers 503 at once, reads away what the client sends for a moment (so it sees the answer rather than a
    reset), then closes."""

    BODY = json.dumps({"status": "error", "message": MSG_TOO_MANY_CONNECTIONS}).encode()
    ANSWER = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.ANSWER)
        self._close = asyncio.get_running_loop().call_later(REFUSAL_GRACE_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # discarded

    def connection_lost(self, exc: Exception | None) -> None:
        self._close.cancel()


def serve(
    app: web.Application,
    sockets: Sequence[socket.socket],
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    on_ready: Callable[[list[str]], None] | None = None,
) -> None:
    """Serve ``app`` on ``sockets`` until SIGINT or SIGTERM; ``on_ready`` gets the URLs once they accept."""
    if not header_timeout_s > 0:
        raise ValueError(f"header_timeout_s must be positive, not {header_timeout_s}")
    asyncio.run(_serve(app, sockets, max_connections, header_timeout_s, on_ready))


async def _serve(
    app: web.Application,
    sockets: Sequence[socket.socket],
    max_connections: int,
    header_timeout_s: float,
    on_ready: Callable[[list[str]], None] | None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=header_timeout_s,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    servers: list[asyncio.AbstractServer] = []
    try:
        assert runner.server is not None
        cap = ConnectionCap(runner.server, max_connections)
        for sock in sockets:
            servers.append(await loop.create_server(cap, sock=sock, backlog=BACKLOG))
        if on_ready is not None:
            on_ready(urls(sockets))
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        await runner.cleanup()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


__all__ = ["ConnectionCap", "listen", "serve", "urls"]
