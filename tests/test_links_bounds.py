"""A link's fetch is bounded as a whole, by the address guard: in time (a server that keeps a download trickling
cannot hold a worker) and in bytes (a page that never ends cannot fill the memory).

The drip server (:func:`youtube_fixtures.drip_server`) sends its media slowly but steadily, never stalling for as long
as the socket timeout, so only the deadline (``fetch_timeout_s``) ends the fetch. The flood server sends an HTML page
that goes on far past what a fetch may receive (``max_filesize_mb`` plus what pages need).
"""

from __future__ import annotations

import socket
import socketserver
from collections.abc import Iterator

import pytest
from youtube_fixtures import (
    LOOPBACK,
    DripServer,
    drip_server,
    loopback_options,
    read_request_head,
    socket_server_running,
    stepped_tones,
)

from musrec.links.errors import FetchError, FetchFailure
from musrec.links.fetch import PAGES_BYTES, fetch_window
from musrec.links.guard import AddressPolicy, GuardProxy

pytestmark = pytest.mark.timeout(120)

SOCKET_TIMEOUT_S = 5.0
DEADLINE_S = 2.0


def signed(guard: GuardProxy) -> str:
    """The header line that carries the fetch's proxy credentials."""
    return f"Proxy-Authorization: {guard.authorization}\r\n"


@pytest.fixture(scope="module")
def drip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DripServer]:
    mp3 = stepped_tones(tmp_path_factory.mktemp("drip") / "tones.mp3", seconds=60, codec="mp3")
    with drip_server(mp3.read_bytes()) as server:
        yield server


def test_a_trickling_download_ends_at_the_fetch_deadline(drip: DripServer) -> None:
    options = loopback_options(socket_timeout_s=SOCKET_TIMEOUT_S, fetch_timeout_s=DEADLINE_S)
    with pytest.raises(FetchError) as caught:
        fetch_window(drip.url, start_s=0.0, options=options)
    assert caught.value.reason is FetchFailure.TIMEOUT
    assert str(caught.value) == "the download timed out; try again"
    # The section (0-12 s of a 96-kbit/s MP3, about 140 KiB) would have taken over ten seconds at this rate.
    assert drip.sent < 12 * 96_000 / 8


def test_the_guard_shuts_its_connections_at_the_deadline_and_refuses_new_ones(drip: DripServer) -> None:
    with GuardProxy(AddressPolicy().allowing_private(), timeout_s=SOCKET_TIMEOUT_S, deadline_s=0.5) as guard:
        port = int(guard.url.rsplit(":", 1)[1])
        with socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S) as client:
            client.sendall(f"GET {drip.url} HTTP/1.1\r\nHost: {LOOPBACK}\r\n{signed(guard)}\r\n".encode())
            received = b""
            while chunk := client.recv(65536):  # the drip would last a minute; the guard ends it
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK") and guard.ended is FetchFailure.TIMEOUT
        with socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S) as late:
            late.sendall(f"GET {drip.url} HTTP/1.1\r\nHost: {LOOPBACK}\r\n{signed(guard)}\r\n".encode())
            assert late.recv(65536).startswith(b"HTTP/1.1 504")
        error = guard.error()
        assert isinstance(error, FetchError) and error.reason is FetchFailure.TIMEOUT


FLOOD_CHUNK = b"<p>" + b"x" * 65_533
FLOOD_BYTES = 4 * PAGES_BYTES  # what the flood server sends at most: far past the fetch's bound, yet finite


class _Flood(socketserver.ThreadingTCPServer):
    daemon_threads = True
    sent = 0


class _FloodHandler(socketserver.BaseRequestHandler):
    server: _Flood

    def handle(self) -> None:
        sock: socket.socket = self.request
        if read_request_head(sock) is None:
            return
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n<html><body>")
        while self.server.sent < FLOOD_BYTES:
            try:
                sock.sendall(FLOOD_CHUNK)
            except OSError:  # the client (or the guard) hung up
                return
            self.server.sent += len(FLOOD_CHUNK)


@pytest.fixture
def flood() -> Iterator[_Flood]:
    server = _Flood((LOOPBACK, 0), _FloodHandler)
    with socket_server_running(server):
        yield server


def test_a_page_that_never_ends_is_cut_off(flood: _Flood) -> None:
    options = loopback_options(max_filesize_mb=1.0)
    with pytest.raises(FetchError) as caught:
        fetch_window(f"http://{LOOPBACK}:{flood.server_address[1]}/watch", start_s=0.0, options=options)
    assert caught.value.reason is FetchFailure.TOO_MUCH_DATA
    assert str(caught.value) == "that link sends far more data than a sound needs"
    # The guard stops at 1 MiB + PAGES_BYTES; what the server got out before it saw the hang-up is in its buffers.
    assert flood.sent < 2 * PAGES_BYTES


def test_the_guard_counts_what_comes_in_and_ends_the_fetch_past_its_bound(flood: _Flood) -> None:
    bound = 1_000_000
    with GuardProxy(AddressPolicy().allowing_private(), timeout_s=SOCKET_TIMEOUT_S, max_bytes=bound) as guard:
        port = int(guard.url.rsplit(":", 1)[1])
        with socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S) as client:
            client.sendall(f"GET http://{LOOPBACK}:{flood.server_address[1]}/ HTTP/1.1\r\n{signed(guard)}\r\n".encode())
            received = 0
            while chunk := client.recv(65536):
                received += len(chunk)
        assert guard.ended is FetchFailure.TOO_MUCH_DATA
        assert bound < guard.received <= bound + 65536  # the chunk that went past it is not passed on
        assert received <= bound
        error = guard.error()
        assert isinstance(error, FetchError) and error.reason is FetchFailure.TOO_MUCH_DATA
