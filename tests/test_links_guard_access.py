"""Issue 23, point 7: the address guard serves its own fetch only, on the web's ports, never this machine itself, and
answers any request line with an HTTP answer.

- Each fetch's guard has credentials of its own: another local program that finds the port gets 407, and cannot
  spend the fetch's connections or bytes. yt-dlp and ffmpeg (which asks again after a 407) use them.
- Only ports 80 and 443: a link or a redirect to another port is refused.
- The machine's own public addresses are refused like private ones (injected here: 127.0.0.2 counts as public, and
  as this machine's).
- A CONNECT whose port is a Unicode digit (``¹``) is answered 400, with no traceback.

The servers listen on loopback; names under ``.test`` are answered by an injected resolver.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from youtube_fixtures import MediaServer, dominant_hz, media_server, step_hz, stepped_tones

from musrec.errors import UnsupportedLinkError
from musrec.links.addresses import (
    OTHER_PORT,
    OWN_ADDRESS,
    WEB_PORTS,
    AddressPolicy,
    IPAddress,
    interface_addresses,
    own_public_addresses,
)
from musrec.links.fetch import FetchOptions, fetch_window
from musrec.links.guard import GuardProxy

PUBLIC = "127.0.0.2"  # counted as public by the injected classifier
RATE = 16000
WAIT_S = 10.0
OPTIONS = FetchOptions(allowed_hosts=("media.test",), socket_timeout_s=5.0, retries=0)


def resolve(host: str, port: int) -> list[IPAddress]:
    if host != "media.test":
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [ipaddress.ip_address(PUBLIC)]


def counted_public(address: IPAddress) -> bool:
    return str(address) == PUBLIC


def nothing_own() -> tuple[IPAddress, ...]:
    return ()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaServer]:
    root = tmp_path_factory.mktemp("media")
    stepped_tones(root / "tones.m4a", seconds=40, codec="m4a")
    with media_server(root, host=PUBLIC) as served:
        yield served


@pytest.fixture
def other_port(tmp_path: Path) -> Iterator[MediaServer]:
    """Another server on the "public" address, at another port: nothing may reach it."""
    with media_server(tmp_path, host=PUBLIC) as served:
        yield served


def web_ports(server: MediaServer) -> AddressPolicy:
    """The production policy, but with the server's port standing for the web's ports, and 127.0.0.2 public."""
    return AddressPolicy(resolve=resolve, allowed=counted_public, own=nothing_own, ports=frozenset({server.port}))


def ask(guard: GuardProxy, request: bytes) -> bytes:
    """What the guard answers ``request``, to the close."""
    answer = b""
    with socket.create_connection(("127.0.0.1", guard.port), timeout=WAIT_S) as client:
        client.sendall(request)
        while chunk := client.recv(65536):
            answer += chunk
    return answer


def test_issue_23_a_local_program_without_the_fetchs_credentials_gets_407(server: MediaServer) -> None:
    before = len(server.requests)
    with GuardProxy(web_ports(server), timeout_s=5.0) as guard:
        target = f"media.test:{server.port}"
        wrong = "Proxy-Authorization: Basic " + "d3Jvbmc6d3Jvbmc="  # wrong:wrong
        for request in (
            f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n",
            f"CONNECT {target} HTTP/1.1\r\n{wrong}\r\n\r\n",
            f"GET http://{target}/media/tones.m4a HTTP/1.1\r\nHost: media.test\r\n\r\n",
        ):
            answer = ask(guard, request.encode())
            assert answer.startswith(b"HTTP/1.1 407") and b'Proxy-Authenticate: Basic realm="musrec"' in answer
        assert guard.connections == 0 and guard.error() is None
        signed = ask(
            guard,
            f"GET http://{target}/status/200 HTTP/1.1\r\nHost: media.test\r\n"
            f"Proxy-Authorization: {guard.authorization}\r\n\r\n".encode(),
        )
        assert signed.startswith(b"HTTP/1.1 200") and guard.connections == 1
    assert len(server.requests) == before + 1


def test_yt_dlp_and_ffmpeg_fetch_with_the_credentials(server: MediaServer) -> None:
    """yt-dlp sends them at once; ffmpeg only after the guard's 407 (its first try goes without)."""
    got = fetch_window(
        f"http://media.test:{server.port}/media/tones.m4a", start_s=15.0, options=OPTIONS, addresses=web_ports(server)
    )
    assert (got.window.start_s, got.window.end_s) == (15.0, 25.0)
    assert dominant_hz(got.samples[-RATE:]) == step_hz(2)


def test_issue_23_only_the_webs_ports(server: MediaServer, other_port: MediaServer) -> None:
    assert AddressPolicy().ports == WEB_PORTS == {80, 443}
    policy = web_ports(server)
    with pytest.raises(UnsupportedLinkError, match=OTHER_PORT.replace("(", r"\(").replace(")", r"\)")):
        fetch_window(f"http://media.test:{other_port.port}/media/tones.m4a", options=OPTIONS, addresses=policy)
    redirect = f"http://media.test:{server.port}/redirect?to=" + quote(
        f"http://media.test:{other_port.port}/media/tones.m4a", safe=""
    )
    with pytest.raises(UnsupportedLinkError) as caught:
        fetch_window(redirect, start_s=0.0, options=OPTIONS, addresses=policy)
    assert str(caught.value) == OTHER_PORT
    assert other_port.requests == [] and server.count("/redirect") >= 1


def test_issue_23_the_machines_own_public_addresses_are_refused(server: MediaServer) -> None:
    own = AddressPolicy(resolve=resolve, allowed=counted_public, own=lambda: {ipaddress.ip_address(PUBLIC)}, ports=None)
    before = len(server.requests)
    with pytest.raises(UnsupportedLinkError) as caught:
        fetch_window(f"http://media.test:{server.port}/media/tones.m4a", options=OPTIONS, addresses=own)
    assert str(caught.value) == OWN_ADDRESS and len(server.requests) == before
    with GuardProxy(own, timeout_s=5.0) as guard:
        connect = f"CONNECT media.test:{server.port} HTTP/1.1\r\nProxy-Authorization: {guard.authorization}\r\n\r\n"
        assert ask(guard, connect.encode()).startswith(b"HTTP/1.1 403")
        assert str(guard.stopped()) == OWN_ADDRESS


@pytest.mark.parametrize("written", ["198.51.100.7", "::ffff:198.51.100.7", "64:ff9b::c633:6407", "2002:c633:6407::1"])
def test_the_machines_own_address_in_any_form(written: str) -> None:
    own = {ipaddress.ip_address("198.51.100.7")}
    policy = AddressPolicy(resolve=resolve, allowed=lambda address: True, own=lambda: own, ports=None)
    with pytest.raises(UnsupportedLinkError) as caught:
        policy.addresses(written, 443)
    assert str(caught.value) == OWN_ADDRESS
    assert policy.addresses("198.51.100.8", 443) == [ipaddress.ip_address("198.51.100.8")]


def test_this_machines_addresses_are_read() -> None:
    """The interfaces' addresses include loopback's; only the public ones are kept for the policy."""
    found = interface_addresses()
    assert ipaddress.ip_address("127.0.0.1") in found
    assert all(a.is_global for a in own_public_addresses())
    assert set(own_public_addresses()) <= found


@pytest.mark.parametrize(
    "line",
    [
        "CONNECT media.test:\u00b9 HTTP/1.1",  # superscript one: str.isdigit() says yes, int() says no
        "CONNECT media.test:\u0664\u0664\u0663 HTTP/1.1",  # Arabic-Indic digits: int() reads 443
        "CONNECT media.test: HTTP/1.1",
        "CONNECT media.test:99999 HTTP/1.1",
        "GET http://media.test:\u00b9/ HTTP/1.1",
    ],
)
def test_issue_23_a_port_that_is_not_ascii_digits_is_answered_400(
    server: MediaServer, line: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    uncaught: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: uncaught.append(args.exc_value))
    with caplog.at_level(logging.DEBUG), GuardProxy(web_ports(server), timeout_s=5.0) as guard:
        answer = ask(guard, f"{line}\r\nProxy-Authorization: {guard.authorization}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400") and uncaught == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
