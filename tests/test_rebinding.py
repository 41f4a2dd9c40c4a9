"""Issue 14, point 2: no connection made for a link reaches a non-public address, whatever DNS answers (rebinding)
and wherever redirects, pages and playlists point, for yt-dlp's requests and for ffmpeg's.

Real yt-dlp and ffmpeg run against loopback servers with the address check on: an injected classifier counts
127.0.0.2 as public and everything else as private, and an injected resolver answers for names under ``.test``,
which no real resolver knows. The trap, a server on 127.0.0.3, listens on the same port as the "public" one and
serves the same files, so a connection that slipped past the guard would reach it and be counted. A client that
went around the guard could not even find ``media.test``: a download that works went through the guard.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import certifi
import numpy as np
import pytest
from links_fixtures import PUBLIC, TRAP, FakeDNS, Servers, make_certificates, policy, server_pair
from youtube_fixtures import dominant_hz, hls, step_hz, stepped_tones

from musrec.audio.decode import ffmpeg_executable
from musrec.errors import UnsupportedLinkError
from musrec.links.addresses import PRIVATE_ADDRESS, AddressPolicy
from musrec.links.errors import FetchError, FetchFailure
from musrec.links.fetch import FetchOptions, check_url_allowed, fetch_window
from musrec.links.guard import GuardProxy

RATE = 16000
WAIT_S = 10.0
MAX_ANSWER = 1 << 20
OPTIONS = FetchOptions(
    allowed_hosts=("media.test", "rebind.test", "trap.test", "mixed.test", TRAP),  # allowed, yet not all public
    socket_timeout_s=5.0,
    retries=0,
)


def guard_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("musrec-guard")]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    hls(root / "vod", stepped_tones(root / "tones.m4a", seconds=60, codec="m4a"))
    return root


@pytest.fixture(scope="module")
def http_pair(media: Path) -> Iterator[Servers]:
    with server_pair(media) as servers:
        port = servers.public.port
        trap_media = f"http://{TRAP}:{port}/media"
        (media / "page.html").write_text(_page(f"http://media.test:{port}/media/tones.m4a"))
        (media / "trap-page.html").write_text(_page(f"{trap_media}/tones.m4a"))
        (media / "trap-name-page.html").write_text(_page(f"http://trap.test:{port}/media/tones.m4a"))
        segments = (media / "vod" / "index.m3u8").read_text().splitlines()
        (media / "trap-segments.m3u8").write_text(_playlist(segments, lambda s: f"{trap_media}/vod/{s}"))
        (media / "one-trap-segment.m3u8").write_text(
            _playlist(segments, lambda s: f"{trap_media}/vod/{s}" if s == "seg1.ts" else f"vod/{s}")
        )
        (media / "redirected-segments.m3u8").write_text(
            _playlist(segments, lambda s: servers.redirect("media.test", f"{trap_media}/vod/{s}"))
        )
        yield servers


@pytest.fixture
def servers(http_pair: Servers) -> Servers:
    http_pair.public.requests.clear()
    http_pair.trap.requests.clear()
    return http_pair


def _page(media_url: str) -> str:
    """A web page whose Open Graph audio is ``media_url``: yt-dlp's generic extractor takes it as the media."""
    return f'<html><head><title>page</title><meta property="og:audio" content="{media_url}"></head></html>\n'


def _playlist(lines: list[str], segment_url: Callable[[str], str]) -> str:
    return "\n".join(segment_url(x) if x.endswith(".ts") else x for x in lines) + "\n"


def assert_refused(url: str, dns: FakeDNS, servers: Servers) -> None:
    with pytest.raises(UnsupportedLinkError) as caught:
        fetch_window(url, start_s=15.0, options=OPTIONS, addresses=policy(dns))
    assert str(caught.value) == PRIVATE_ADDRESS
    assert servers.trap.requests == []
    assert guard_threads() == []


def _tone_at(samples: np.ndarray, second: int) -> float:
    return dominant_hz(samples[second * RATE : (second + 1) * RATE])


# --- what must be refused, with real yt-dlp and ffmpeg ------------------------------------------------------


@pytest.mark.parametrize("host", ["trap.test", "mixed.test", TRAP])
def test_a_host_that_resolves_private(servers: Servers, host: str) -> None:
    assert_refused(servers.url(host, "/media/tones.m4a"), FakeDNS(), servers)


@pytest.mark.parametrize(
    ("public_answers", "refused_for"),
    [(1, "yt-dlp's first request"), (2, "ffmpeg's download, after yt-dlp read the media")],
)
def test_a_host_that_rebinds_to_a_private_address(servers: Servers, public_answers: int, refused_for: str) -> None:
    dns = FakeDNS(rebind=[PUBLIC] * public_answers + [TRAP])
    assert_refused(servers.url("rebind.test", "/media/tones.m4a"), dns, servers)
    assert dns.asked["rebind.test"] > public_answers  # the early check's answer was public; a later one was not
    assert (servers.public.count("/media/") > 0) == (public_answers > 1)


@pytest.mark.parametrize("target", [f"http://{TRAP}:{{port}}/media/tones.m4a", "http://trap.test:{port}/media/x.m4a"])
def test_a_redirect_to_a_private_address(servers: Servers, target: str) -> None:
    url = servers.redirect("media.test", target.format(port=servers.public.port))
    assert_refused(url, FakeDNS(), servers)
    assert servers.public.count("/redirect") == 1


def test_a_redirect_that_only_ffmpeg_follows(servers: Servers) -> None:
    """The playlist is on the public host; its segments redirect to the trap, and only ffmpeg reads segments."""
    assert_refused(servers.url("media.test", "/media/redirected-segments.m3u8"), FakeDNS(), servers)
    assert servers.public.count("/redirect") > 0


@pytest.mark.parametrize(
    "page", ["trap-page.html", "trap-name-page.html", "trap-segments.m3u8", "one-trap-segment.m3u8"]
)
def test_media_urls_on_a_private_address(servers: Servers, page: str) -> None:
    """Extraction on the public host gives media (a page's audio, a playlist's segments) on the trap. ffmpeg skips
    a segment it cannot open and goes on: a download that worked is refused all the same."""
    assert_refused(servers.url("media.test", f"/media/{page}"), FakeDNS(), servers)
    assert servers.public.count(f"/media/{page}") > 0


def test_no_proxy_opens_no_way_around_the_guard(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    """ffmpeg connects directly to hosts in ``no_proxy`` (see the next test): while fetching, it must not see it."""
    monkeypatch.setenv("no_proxy", f"{TRAP},trap.test,localhost")
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert_refused(servers.url("media.test", "/media/trap-segments.m3u8"), FakeDNS(), servers)
    assert_refused(servers.url("media.test", "/media/redirected-segments.m3u8"), FakeDNS(), servers)
    assert os.environ["no_proxy"] == f"{TRAP},trap.test,localhost" and "NO_PROXY" not in os.environ


def test_ffmpeg_goes_around_a_proxy_for_hosts_in_no_proxy(servers: Servers) -> None:
    """Why ``ytdlp_env`` hides ``no_proxy``: given a proxy, ffmpeg still connects directly to the hosts it names
    (it reads only the lower-case variable). This runs ffmpeg alone, not musrec: the trap is reached on purpose."""
    environ = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    with GuardProxy(policy(FakeDNS()), timeout_s=5.0) as guard:
        for variable, direct in (("NO_PROXY", False), ("no_proxy", True)):
            before = len(servers.trap.requests)
            done = subprocess.run(
                [ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-http_proxy", guard.url,
                 "-i", servers.url(TRAP, "/media/tones.m4a"), "-t", "1", "-f", "null", "-"],
                env={**environ, variable: TRAP}, capture_output=True, timeout=60, check=False,
            )  # fmt: skip
            assert (len(servers.trap.requests) > before) == direct, done.stderr
            assert (done.returncode == 0) == direct


# --- what must still work -----------------------------------------------------------------------------------


def test_a_public_link_downloads_through_the_guard(servers: Servers) -> None:
    dns = FakeDNS()
    got = fetch_window(
        servers.url("media.test", "/media/tones.m4a"), start_s=15.0, options=OPTIONS, addresses=policy(dns)
    )
    assert (got.window.start_s, got.window.end_s) == (15.0, 25.0) and len(got.samples) == 10 * RATE
    assert _tone_at(got.samples, 0) == step_hz(1) and _tone_at(got.samples, 9) == step_hz(2)
    # The early check, yt-dlp's request and ffmpeg's: each connection resolved by the guard.
    assert dns.asked["media.test"] >= 3
    assert any(rng for _, rng in servers.public.requests)  # ffmpeg's ranged requests reached the server
    assert servers.trap.requests == [] and guard_threads() == []


@pytest.mark.parametrize("path", ["/media/page.html", "/media/vod/index.m3u8"])
def test_public_pages_and_playlists_download_through_the_guard(servers: Servers, path: str) -> None:
    got = fetch_window(servers.url("media.test", path), start_s=35.0, options=OPTIONS, addresses=policy(FakeDNS()))
    assert (got.window.start_s, got.window.end_s) == (35.0, 45.0)
    assert _tone_at(got.samples, 9) == step_hz(4)
    assert servers.trap.requests == [] and guard_threads() == []


def test_the_opt_in_allows_any_address_and_keeps_the_guard(servers: Servers) -> None:
    """``allow_private_addresses`` (tests against loopback) lets every address through, still by the guard, which
    alone knows ``media.test``."""
    nothing_public = AddressPolicy(resolve=FakeDNS(), allowed=lambda address: False, ports=None)
    url = servers.url("media.test", "/media/tones.m4a")
    with pytest.raises(UnsupportedLinkError, match="private network"):
        fetch_window(url, start_s=0.0, options=OPTIONS, addresses=nothing_public)
    opted_in = replace(OPTIONS, allow_private_addresses=True)
    assert fetch_window(url, start_s=0.0, options=opted_in, addresses=nothing_public).window.start_s == 0.0


def test_the_early_check_uses_the_same_policy() -> None:
    dns = FakeDNS()
    check_url_allowed("http://media.test/a.mp3", options=OPTIONS, addresses=policy(dns))
    for url in ("http://trap.test/a.mp3", "http://mixed.test/a.mp3", f"http://{TRAP}/a.mp3"):
        with pytest.raises(UnsupportedLinkError, match="private network"):
            check_url_allowed(url, options=OPTIONS, addresses=policy(dns))
    with pytest.raises(FetchError) as caught:
        check_url_allowed("http://unknown.test/a.mp3", options=FetchOptions(allowed_hosts=("unknown.test",)))
    assert caught.value.reason is FetchFailure.NETWORK
    assert dns.asked == {"media.test": 1, "trap.test": 1, "mixed.test": 1}  # an address literal is not looked up


# --- https: yt-dlp and ffmpeg tunnel through the guard with CONNECT ----------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A test CA and a certificate for the test names and addresses."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_servers(
    media: Path, tls_files: tuple[Path, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Servers]:
    """The pair over https; yt-dlp (through certifi) and ffmpeg (through OpenSSL's SSL_CERT_FILE) trust the test CA."""
    ca, context = tls_files
    monkeypatch.setattr(certifi, "where", lambda: str(ca))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    with server_pair(media, context) as servers:
        yield servers


def test_https_downloads_through_the_guard(https_servers: Servers) -> None:
    dns = FakeDNS()
    url = https_servers.url("media.test", "/media/tones.m4a")
    got = fetch_window(url, start_s=15.0, options=OPTIONS, addresses=policy(dns))
    assert (got.window.start_s, got.window.end_s) == (15.0, 25.0) and _tone_at(got.samples, 9) == step_hz(2)
    assert dns.asked["media.test"] >= 3 and any(rng for _, rng in https_servers.public.requests)
    assert https_servers.trap.requests == []


@pytest.mark.parametrize("public_answers", [1, 2])
def test_https_rebinding_is_refused(https_servers: Servers, public_answers: int) -> None:
    dns = FakeDNS(rebind=[PUBLIC] * public_answers + [TRAP])
    assert_refused(https_servers.url("rebind.test", "/media/tones.m4a"), dns, https_servers)
    assert (https_servers.public.count("/media/") > 0) == (public_answers > 1)


# --- the proxy itself ---------------------------------------------------------------------------------------


def _ask(guard: GuardProxy, request: bytes, *, until_close: bool = True, signed: bool = True) -> bytes:
    """Send ``request`` to the proxy (``signed``: with the fetch's credentials, after the request line); its answer
    up to the end of the headers, or to the close."""
    if signed:
        line, _, rest = request.partition(b"\r\n")
        request = line + b"\r\nProxy-Authorization: " + guard.authorization.encode() + b"\r\n" + rest
    answer = b""
    with socket.create_connection(("127.0.0.1", guard.port), timeout=WAIT_S) as client:
        client.sendall(request)
        while len(answer) < MAX_ANSWER and (until_close or b"\r\n\r\n" not in answer):
            chunk = client.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_the_proxy_refuses_and_forwards(servers: Servers) -> None:
    port = servers.public.port
    dns = FakeDNS(rebind=[PUBLIC, TRAP])
    with GuardProxy(policy(dns), timeout_s=5.0) as guard:
        assert guard.url.split("@", 1)[1].startswith("127.0.0.1:")  # loopback only
        forwarded = _ask(
            guard, f"GET http://media.test:{port}/status/200 HTTP/1.1\r\nHost: media.test\r\n\r\n".encode()
        )
        assert forwarded.startswith(b"HTTP/1.1 200") and forwarded.endswith(b"no")
        tunnel = f"CONNECT rebind.test:{port} HTTP/1.1\r\nHost: rebind.test:{port}\r\n\r\n".encode()
        assert _ask(guard, tunnel, until_close=False).startswith(b"HTTP/1.1 200")  # the first answer: public
        assert _ask(guard, tunnel).startswith(b"HTTP/1.1 403")  # the second: the trap
        assert _ask(guard, f"GET http://{TRAP}:{port}/media/tones.m4a HTTP/1.1\r\n\r\n".encode()).startswith(
            b"HTTP/1.1 403"
        )
        assert guard.refused == ["rebind.test", TRAP] and guard.error() is not None
        assert str(guard.error()) == PRIVATE_ADDRESS
        assert _ask(guard, b"GET /relative HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert _ask(guard, b"CONNECT nowhere.test:443 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 502")
        assert guard.failure is FetchFailure.NETWORK and guard.connections == 2
    assert servers.trap.requests == [] and guard_threads() == []


def test_closing_the_proxy_ends_every_connection(servers: Servers) -> None:
    with GuardProxy(policy(FakeDNS()), timeout_s=60.0) as guard:
        port = int(guard.url.rsplit(":", 1)[1])
        idle = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)  # says nothing
        tunnel = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        signed = f"Proxy-Authorization: {guard.authorization}\r\n"
        tunnel.sendall(f"CONNECT media.test:{servers.public.port} HTTP/1.1\r\n{signed}\r\n".encode())
        assert tunnel.recv(1024).startswith(b"HTTP/1.1 200")
        assert len(guard_threads()) == 3  # the acceptor and two connections
    assert guard_threads() == []
    assert idle.recv(1024) == b"" and tunnel.recv(1024) == b""
    idle.close()
    tunnel.close()


def test_the_default_policy_on_addresses() -> None:
    public_only = AddressPolicy(resolve=FakeDNS())
    assert public_only.addresses("8.8.8.8", 80) == [ipaddress.ip_address("8.8.8.8")]  # nothing is connected to
    for literal in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.0.0.1", "169.254.169.254", "[fe80::1]"):
        with pytest.raises(UnsupportedLinkError, match="private network"):
            public_only.addresses(literal, 80)
    with pytest.raises(UnsupportedLinkError):
        public_only.addresses("media.test", 80)  # 127.0.0.2 is not public outside these tests
    assert public_only.allowing_private().addresses("media.test", 80) == [ipaddress.ip_address(PUBLIC)]
