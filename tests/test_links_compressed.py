"""Issue 23, point 10: a compressed page is not inflated past the guard's count.

yt-dlp inflates a compressed page whole, in memory, while the guard counts the bytes that came over the wire: a
gzip bomb of a few tens of KiB passes the count and becomes tens of MiB (or GiB) inside the bot. So pages are asked
for as they are (``Accept-Encoding: identity``, by yt-dlp and by the guard on plain http), and on plain http the
guard ends a fetch whose answer comes compressed all the same. The servers here are on loopback and allowed
explicitly, as a widened ``allowed_hosts`` would allow them.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import socketserver
from collections.abc import Iterator
from pathlib import Path

import pytest
from youtube_fixtures import LOOPBACK, loopback_options, read_request_head, socket_server_running

from musrec.links.errors import FetchError, FetchFailure
from musrec.links.fetch import fetch_window
from musrec.links.ytdlp_env import fetch_environment
from musrec.links.ytdlp_params import ydl_params

INFLATED_BYTES = 32 * 2**20  # what the bomb becomes; it travels as about 32 KiB
BOMB = gzip.compress(bytes(INFLATED_BYTES), compresslevel=9)
PAGE = b"<html><head><title>a page</title></head><body>nothing to play</body></html>\n"


class _Pages(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), _PagesHandler)
        self.asked: list[str] = []  # each request's Accept-Encoding ("" if none)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}"


class _PagesHandler(socketserver.BaseRequestHandler):
    """``/bomb`` answers gzip whatever was asked (a hostile server); any other path gzip only when asked (a polite
    one)."""

    server: _Pages

    def handle(self) -> None:
        sock: socket.socket = self.request
        head = read_request_head(sock)
        if head is None:
            return
        lines = head.decode("latin-1").split("\r\n")
        asked = next(
            (v.strip() for n, _, v in (x.partition(":") for x in lines[1:]) if n.lower() == "accept-encoding"), ""
        )
        self.server.asked.append(asked)
        hostile = lines[0].split(" ")[1].endswith("/bomb")
        body, encoding = (BOMB, "gzip") if hostile or "gzip" in asked else (PAGE, "identity")
        if encoding == "gzip" and not hostile:
            body = gzip.compress(PAGE)
        head_out = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n"
        if encoding == "gzip":
            head_out += "Content-Encoding: gzip\r\n"
        with contextlib.suppress(OSError):
            sock.sendall(head_out.encode() + b"Connection: close\r\n\r\n" + body)


@pytest.fixture
def pages() -> Iterator[_Pages]:
    server = _Pages()
    with socket_server_running(server):
        yield server


def test_issue_23_a_gzip_bomb_is_not_inflated(pages: _Pages) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_window(f"{pages.url}/bomb", start_s=0.0, options=loopback_options())
    assert caught.value.reason is FetchFailure.TOO_MUCH_DATA
    assert pages.asked and set(pages.asked) == {"identity"}


def test_pages_are_asked_for_as_they_are(pages: _Pages) -> None:
    """A polite server answers uncompressed; the page is read (and found to hold no media)."""
    with pytest.raises(FetchError) as caught:
        fetch_window(f"{pages.url}/page", start_s=0.0, options=loopback_options())
    assert caught.value.reason is not FetchFailure.TOO_MUCH_DATA
    assert pages.asked and set(pages.asked) == {"identity"}


def test_yt_dlp_asks_for_identity_itself(tmp_path: Path) -> None:
    """Over https the guard sees only encrypted bytes: yt-dlp's own requests must say identity (its request
    handlers add their own Accept-Encoding only where the request has none)."""
    from yt_dlp import YoutubeDL

    proxy = "http://u:p@127.0.0.1:9"
    with fetch_environment("ffmpeg", proxy=proxy) as environment:
        params = ydl_params(loopback_options(), tmp_path, "generic", proxy=proxy, environment=environment)
        with YoutubeDL(params) as ydl:
            assert ydl.params["http_headers"]["Accept-Encoding"] == "identity"
