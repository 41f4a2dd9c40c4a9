"""A link's fetch has a deadline as a whole: a server that keeps a download trickling cannot hold a worker.

The server here (:func:`youtube_fixtures.drip_server`) sends its media slowly but steadily, never stalling for as long
as the socket timeout, so only the deadline (``fetch_timeout_s``, enforced by the address guard) ends the fetch.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from youtube_fixtures import LOOPBACK, DripServer, drip_server, loopback_options, stepped_tones

from musrec.links.errors import FetchError, FetchFailure
from musrec.links.fetch import fetch_window
from musrec.links.guard import AddressPolicy, GuardProxy

pytestmark = pytest.mark.timeout(120)

SOCKET_TIMEOUT_S = 5.0
DEADLINE_S = 2.0


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
            client.sendall(f"GET {drip.url} HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
            received = b""
            while chunk := client.recv(65536):  # the drip would last a minute; the guard ends it
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK") and guard.expired
        with socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S) as late:
            late.sendall(f"GET {drip.url} HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
            assert late.recv(65536).startswith(b"HTTP/1.1 504")
        error = guard.error()
        assert isinstance(error, FetchError) and error.reason is FetchFailure.TIMEOUT
