"""The HTTP the address guard (:mod:`musrec.links.guard`) speaks as a forward proxy: reading a client's request,
answering it, and reading an upstream's answer far enough to see its encoding.

Every value here comes from yt-dlp or ffmpeg, or from a stranger's server: parsing never raises for bad input, it
gives None (the guard answers 400).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import socket
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from musrec.links.parse import normal_host

MAX_HEAD_BYTES: Final = 64 * 1024  # a request line and headers; yt-dlp's and ffmpeg's are well under 8 KiB
CHUNK: Final = 64 * 1024
REALM: Final = "musrec"
# Asked of every server: a compressed page is inflated whole by yt-dlp, past what the guard counted.
IDENTITY: Final = "Accept-Encoding: identity"
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade"})
_DROPPED = _HOP_BY_HOP | {"accept-encoding"}


@dataclass(frozen=True)
class ProxyRequest:
    """What a client asked the proxy for: a tunnel (CONNECT) or one plain-http request to forward.

    ``authorization`` is the client's ``Proxy-Authorization`` value ("" if none).
    """

    host: str
    port: int
    tunnel: bool
    authorization: str = ""
    head: bytes = b""  # the request to send upstream (plain http only)
    rest: bytes = b""  # bytes that arrived after the head: the start of a body


def basic_authorization(user: str, password: str) -> str:
    """The ``Proxy-Authorization`` value for ``user`` and ``password`` (Basic)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def authorized(request: ProxyRequest, expected: str) -> bool:
    """Whether the request carries the ``expected`` authorization (compared in constant time)."""
    return hmac.compare_digest(request.authorization.encode("latin-1"), expected.encode("latin-1"))


def read_request(client: socket.socket) -> ProxyRequest | None:
    """The request at the start of ``client``'s stream: CONNECT host:port, or an absolute http URL; None if neither
    (a port that is not ASCII digits, a head past :data:`MAX_HEAD_BYTES`, garbage). A plain-http request is
    rewritten for its upstream: hop-by-hop headers and the client's ``Accept-Encoding`` dropped, ``Connection:
    close`` and :data:`IDENTITY` added."""
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
    fields = [(line.split(":", 1)[0].strip().lower(), line) for line in lines[1:]]
    authorization = next((line.split(":", 1)[1].strip() for n, line in fields if n == "proxy-authorization"), "")
    if method.upper() == "CONNECT":
        host, _, number = target.rpartition(":")
        tunnel_port = _port(number)
        if not host or tunnel_port is None:
            return None
        return ProxyRequest(normal_host(host), tunnel_port, tunnel=True, authorization=authorization)
    try:
        url = urlsplit(target)
        port: int | None = url.port or 80
    except ValueError:
        return None
    if url.scheme.lower() != "http" or not url.hostname or port is None:
        return None
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    headers = [line for name, line in fields if name not in _DROPPED]
    upstream_head = "\r\n".join([f"{method} {path} {version}", *headers, IDENTITY, "Connection: close", "", ""])
    return ProxyRequest(
        normal_host(url.hostname), port, tunnel=False, authorization=authorization,
        head=upstream_head.encode("latin-1"), rest=rest,
    )  # fmt: skip


def _port(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        return None
    return int(text)


def content_encoding(head: bytes) -> str | None:
    """The ``Content-Encoding`` of an answer whose head (up to the blank line) is ``head``: "" if none, None if the
    head is not complete yet."""
    if b"\r\n\r\n" not in head:
        return None
    for line in head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-encoding":
            return value.strip().lower()
    return ""


def answer(client: socket.socket, status: int, reason: str) -> None:
    """A complete answer of the proxy's own, then the connection is done (407 says how to sign in)."""
    body = f"{status} {reason}\n".encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    if status == 407:
        head += f'Proxy-Authenticate: Basic realm="{REALM}"\r\n'
    with contextlib.suppress(OSError):
        client.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
