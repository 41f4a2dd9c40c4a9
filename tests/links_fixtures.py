"""Loopback stand-ins for the link guard's tests: names only the tests resolve, a "public" server and a trap at one
port, and egress proxies (HTTP CONNECT and SOCKS5) that count what goes through them.

127.0.0.2 counts as public (an injected classifier) and 127.0.0.3 as private: a server on each serves the same
files at the same port, so a connection that slipped past the guard would reach the trap and be counted.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import selectors
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from youtube_fixtures import WAIT_S, MediaServer, media_server, read_request_head, socket_server_running

from musrec.links.addresses import AddressPolicy, IPAddress

PUBLIC = "127.0.0.2"  # counted as public by the injected classifier
TRAP = "127.0.0.3"  # counted as private: nothing may ever reach it


class FakeDNS:
    """Answers for names only the tests know: each name gives its answers in turn, then its last one for good.

    An answer is a comma-separated list of addresses; other names do not resolve. ``asked`` counts lookups.
    """

    def __init__(self, **rebinding: Sequence[str]) -> None:
        self.names: dict[str, Sequence[str]] = {
            "media.test": [PUBLIC],
            "trap.test": [TRAP],
            "mixed.test": [f"{PUBLIC},{TRAP}"],
            **{f"{name}.test": answers for name, answers in rebinding.items()},
        }
        self.asked: Counter[str] = Counter()

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = self.names[host]
        answer = answers[min(self.asked[host], len(answers) - 1)]
        self.asked[host] += 1
        return [ipaddress.ip_address(a) for a in answer.split(",")]


def counted_public(address: IPAddress) -> bool:
    return str(address) == PUBLIC


def policy(dns: FakeDNS) -> AddressPolicy:
    """Addresses as in production but for what counts as public; any port, as the servers' are ephemeral."""
    return AddressPolicy(resolve=dns, allowed=counted_public, ports=None)


@dataclass
class Servers:
    """The "public" server on 127.0.0.2 and the trap on 127.0.0.3, at one port, serving the same files."""

    public: MediaServer
    trap: MediaServer

    def url(self, host: str, path: str) -> str:
        scheme = self.public.url.split(":", 1)[0]
        return f"{scheme}://{host}:{self.public.port}{path}"

    def redirect(self, host: str, to: str) -> str:
        return self.url(host, f"/redirect?to={quote(to, safe='')}")


@contextmanager
def server_pair(root: Path, tls: ssl.SSLContext | None = None) -> Iterator[Servers]:
    with (
        media_server(root, host=PUBLIC, tls=tls) as public,
        media_server(root, host=TRAP, port=public.port, tls=tls) as trap,
    ):
        yield Servers(public, trap)


def make_certificates(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A test CA (its file) and a server context with a certificate it signed, for the test names, 127.0.0.1,
    127.0.0.2 and 127.0.0.3, made with the openssl command in ``directory``."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    d = directory
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=musrec test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    openssl("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=media.test")
    (d / "leaf.ext").write_text(
        "subjectAltName=DNS:media.test,DNS:rebind.test,DNS:trap.test,IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3\n"
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n"
    )
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext")  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(d / "leaf.pem", d / "leaf.key")
    return d / "ca.pem", context


# --- egress proxies -------------------------------------------------------------------------------------------


class StandinProxy(socketserver.ThreadingTCPServer):
    """An egress proxy on 127.0.0.1: ``kind`` "http" or "https" (CONNECT) or "socks5", asking for ``user`` and
    ``password`` when given. ``names`` is its own resolver (a proxy on another network resolves names its own
    way). It counts the connections it made (``connections``), records their targets as asked (``targets``) and
    the refusals."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        kind: str,
        *,
        user: str = "",
        password: str = "",
        names: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Socks5Handler if kind == "socks5" else _HttpConnectHandler)
        self.kind = kind
        self.tls = tls  # for kind "https": TLS between the client and the proxy
        self.user = user
        self.password = password
        self.names = dict(names or {})
        self.lock = threading.Lock()
        self.connections = 0
        self.targets: list[str] = []
        self.refusals: list[str] = []

    @property
    def url(self) -> str:
        return f"{self.kind}://127.0.0.1:{self.server_address[1]}"

    def open(self, host: str, port: int) -> socket.socket | None:
        """Connect to ``host`` (an address, or a name it resolves itself); None if it cannot."""
        with self.lock:
            self.targets.append(f"{host}:{port}")
        try:
            sock = socket.create_connection((self.names.get(host, host), port), timeout=WAIT_S)
        except OSError:
            return None
        with self.lock:
            self.connections += 1
        return sock

    def refuse(self, why: str) -> None:
        with self.lock:
            self.refusals.append(why)


def _relay(a: socket.socket, b: socket.socket) -> None:
    with selectors.DefaultSelector() as selector, contextlib.suppress(OSError):
        selector.register(a, selectors.EVENT_READ)
        selector.register(b, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select(WAIT_S) or [(None, None)]:
                if key is None:
                    return
                source = key.fileobj
                data = source.recv(65536)  # type: ignore[union-attr]
                while data and isinstance(source, ssl.SSLSocket) and source.pending():
                    data += source.recv(source.pending())
                if not data:
                    return
                (b if source is a else a).sendall(data)


class _HttpConnectHandler(socketserver.BaseRequestHandler):
    server: StandinProxy

    def handle(self) -> None:
        client: socket.socket = self.request
        if self.server.tls is not None:
            client = self.server.tls.wrap_socket(client, server_side=True)
        head = read_request_head(client)
        if head is None:
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        given = next(
            (x.split(":", 1)[1].strip() for x in lines[1:] if x.lower().startswith("proxy-authorization:")), ""
        )
        expected = "Basic " + base64.b64encode(f"{self.server.user}:{self.server.password}".encode()).decode()
        if self.server.user and given != expected:
            self.server.refuse("credentials")
            client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            return
        host, _, port = target.rpartition(":")
        upstream = self.server.open(host.strip("[]"), int(port)) if method == "CONNECT" else None
        if upstream is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            _relay(client, upstream)


class _Socks5Handler(socketserver.BaseRequestHandler):
    server: StandinProxy

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.request.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the client hung up")
            data += chunk
        return data

    def handle(self) -> None:
        client: socket.socket = self.request
        client.settimeout(WAIT_S)
        with contextlib.suppress(ConnectionError, OSError):
            _, count = self._read(2)
            methods = self._read(count)
            wanted = 2 if self.server.user else 0
            if wanted not in methods:
                client.sendall(bytes([5, 0xFF]))
                return
            client.sendall(bytes([5, wanted]))
            if wanted == 2:
                _, size = self._read(2)
                user = self._read(size).decode()
                password = self._read(self._read(1)[0]).decode()
                ok = (user, password) == (self.server.user, self.server.password)
                client.sendall(bytes([1, 0 if ok else 1]))
                if not ok:
                    self.server.refuse("credentials")
                    return
            _, command, _, kind = self._read(4)
            if kind == 1:
                host = str(ipaddress.IPv4Address(self._read(4)))
            elif kind == 4:
                host = str(ipaddress.IPv6Address(self._read(16)))
            else:
                host = self._read(self._read(1)[0]).decode("idna")
            port = int.from_bytes(self._read(2), "big")
            upstream = self.server.open(host, port) if command == 1 else None
            if upstream is None:
                client.sendall(bytes([5, 5, 0, 1, 0, 0, 0, 0, 0, 0]))
                return
            with upstream:
                client.sendall(bytes([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]))
                _relay(client, upstream)


@contextmanager
def standin_proxy(kind: str, **settings: object) -> Iterator[StandinProxy]:
    """A :class:`StandinProxy` answering in a thread of its own until the block ends."""
    proxy = StandinProxy(kind, **settings)  # type: ignore[arg-type]
    with socket_server_running(proxy):
        yield proxy
