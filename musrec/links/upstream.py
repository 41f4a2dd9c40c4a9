"""An egress proxy for link traffic (``[youtube] proxy``): the address guard connects through it instead of directly.

YouTube answers requests from datacenter addresses with "Sign in to confirm you're not a bot"; sending the traffic
out through another address is what still works when cookies and PO tokens do not. The guard (:mod:`musrec.links.
guard`) keeps doing its checks and opens each checked connection through the proxy:

- ``http://`` and ``https://`` (TLS to the proxy itself): an HTTP ``CONNECT`` tunnel for every connection, https
  and plain http alike;
- ``socks5://``: a SOCKS5 ``CONNECT``.

The guard resolves names itself and asks the proxy for the checked address, so rebinding and redirects are refused
as without a proxy. ``socks5h://`` asks the proxy for the name instead (for a server without DNS of its own, or to
get the CDN nearest the proxy): the guard still refuses a name whose local answers are not public, but what the
proxy's resolver answers, and so what the proxy connects to, it cannot see.

The URL holds no credentials (it is configuration, shown and logged): they come from the environment only,
``MUSREC_YOUTUBE_PROXY_USER`` and ``MUSREC_YOUTUBE_PROXY_PASSWORD`` (Basic for HTTP proxies, username/password
for SOCKS5).
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

PROXY_SCHEMES: Final = ("http", "https", "socks5", "socks5h")
USER_ENV: Final = "MUSREC_YOUTUBE_PROXY_USER"
PASSWORD_ENV: Final = "MUSREC_YOUTUBE_PROXY_PASSWORD"
MAX_ANSWER_BYTES: Final = 16 * 1024  # a proxy's answer to CONNECT: a status line and a few headers
SOCKS_VERSION: Final = 5
_SOCKS_NO_AUTH, _SOCKS_PASSWORD, _SOCKS_NONE_ACCEPTABLE = 0, 2, 0xFF
_SOCKS_CONNECT, _SOCKS_IPV4, _SOCKS_NAME, _SOCKS_IPV6 = 1, 1, 3, 4
_SOCKS_REPLIES: Final = {
    1: "general failure",
    2: "not allowed by its rules",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


class UpstreamRefused(Exception):
    """The proxy answered, but did not connect; the message says why, without credentials."""


def check_proxy_url(url: str) -> tuple[str, str, int]:
    """The scheme, host and port of a proxy URL; ValueError, saying what is wrong, for anything else."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise ValueError(f"must start with {', '.join(s + '://' for s in PROXY_SCHEMES)}")
    if "@" in parts.netloc:
        raise ValueError(f"must not hold credentials: set {USER_ENV} and {PASSWORD_ENV} instead")
    if not parts.hostname or port is None:
        raise ValueError("needs a host and a port, e.g. socks5://proxy.example:1080")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be scheme://host:port, without a path")
    return scheme, parts.hostname, port


@dataclass(frozen=True)
class UpstreamProxy:
    """Where link traffic leaves: a proxy at ``host``:``port`` speaking ``scheme`` (see the module docstring)."""

    scheme: str
    host: str
    port: int
    user: str = ""
    password: str = field(default="", repr=False)
    tls: ssl.SSLContext | None = field(default=None, repr=False, compare=False)  # for https:// (None: the default)

    @property
    def resolves_names(self) -> bool:
        """Whether the proxy, not the guard, resolves the names connected to."""
        return self.scheme == "socks5h"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def open(self, host: str, port: int, *, timeout_s: float) -> socket.socket:
        """A connection to ``host`` (an address, or a name when the proxy resolves names) through the proxy.

        OSError if the proxy cannot be reached or fails on the way; UpstreamRefused if it answers no.
        """
        sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        try:
            if self.scheme == "https":
                context = self.tls or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=self.host)
            if self.scheme.startswith("socks5"):
                _socks5_connect(sock, host, port, self.user, self.password)
            else:
                _http_connect(sock, host, port, self.user, self.password)
        except BaseException:
            sock.close()
            raise
        return sock


def upstream_proxy(url: str | None, environ: Mapping[str, str]) -> UpstreamProxy | None:
    """The proxy of ``[youtube] proxy`` (None: connect directly), with its credentials from ``environ``."""
    if not url:
        return None
    scheme, host, port = check_proxy_url(url)
    return UpstreamProxy(scheme, host, port, environ.get(USER_ENV, ""), environ.get(PASSWORD_ENV, ""))


def _target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _http_connect(sock: socket.socket, host: str, port: int, user: str, password: str) -> None:
    target = _target(host, port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if user or password:
        lines.append("Proxy-Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    answer = b""
    while b"\r\n\r\n" not in answer:  # byte by byte: what follows the head is the tunnel's
        if len(answer) > MAX_ANSWER_BYTES:
            raise UpstreamRefused("the proxy's answer to CONNECT is too long")
        byte = sock.recv(1)
        if not byte:
            raise UpstreamRefused("the proxy closed the connection")
        answer += byte
    status = answer.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise UpstreamRefused(f"the proxy answered {' '.join(status[1:])[:100]}")


def _socks5_connect(sock: socket.socket, host: str, port: int, user: str, password: str) -> None:
    methods = bytes([_SOCKS_NO_AUTH, _SOCKS_PASSWORD]) if user or password else bytes([_SOCKS_NO_AUTH])
    sock.sendall(bytes([SOCKS_VERSION, len(methods)]) + methods)
    version, method = _read(sock, 2)
    if version != SOCKS_VERSION or method == _SOCKS_NONE_ACCEPTABLE or method not in methods:
        raise UpstreamRefused("the SOCKS proxy accepts none of the offered ways to sign in")
    if method == _SOCKS_PASSWORD:
        name, secret = user.encode(), password.encode()
        sock.sendall(bytes([1, len(name)]) + name + bytes([len(secret)]) + secret)
        if _read(sock, 2)[1] != 0:
            raise UpstreamRefused("the SOCKS proxy refused the user name and password")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        encoded = host.encode("idna")
        destination = bytes([_SOCKS_NAME, len(encoded)]) + encoded
    else:
        destination = bytes([_SOCKS_IPV4 if address.version == 4 else _SOCKS_IPV6]) + address.packed
    sock.sendall(bytes([SOCKS_VERSION, _SOCKS_CONNECT, 0]) + destination + port.to_bytes(2, "big"))
    version, reply, _, kind = _read(sock, 4)
    if version != SOCKS_VERSION or reply != 0:
        raise UpstreamRefused(f"the SOCKS proxy did not connect: {_SOCKS_REPLIES.get(reply, f'reply {reply}')}")
    size = {_SOCKS_IPV4: 4, _SOCKS_IPV6: 16}.get(kind) or _read(sock, 1)[0]
    _read(sock, size + 2)  # the address and port the proxy bound: not needed


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise UpstreamRefused("the proxy closed the connection")
        data += chunk
    return data
