"""Issue 21, point 4: ``[youtube] proxy`` sends link traffic out through an egress proxy (HTTP CONNECT or SOCKS5),
with the guard's checks intact.

A real yt-dlp fetch (and the ffmpeg it starts) goes through the guard, which connects through a stand-in proxy on
loopback; the proxy asks for the credentials from the environment and counts its connections. The guard resolves
names and asks the proxy for the checked address, so rebinding and redirects to the trap are refused before the
proxy is asked for them. With ``socks5h://`` the proxy resolves names; the guard still refuses a name whose local
answer is private.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from links_fixtures import (
    PUBLIC,
    TRAP,
    FakeDNS,
    Servers,
    StandinProxy,
    counted_public,
    make_certificates,
    policy,
    server_pair,
    standin_proxy,
)
from youtube_fixtures import dominant_hz, step_hz, stepped_tones

from musrec.config import load_config
from musrec.errors import ConfigError, UnsupportedLinkError
from musrec.links.addresses import OTHER_PORT, PRIVATE_ADDRESS, AddressPolicy
from musrec.links.errors import FetchError, FetchFailure
from musrec.links.fetch import FetchOptions, fetch_window
from musrec.links.guard import GuardProxy
from musrec.links.upstream import PASSWORD_ENV, USER_ENV, upstream_proxy

RATE = 16000
USER, PASSWORD = "egress-user", "egress-password"
ALLOWED = ("media.test", "rebind.test", "trap.test", "far.test")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("media")
    stepped_tones(root / "tones.m4a", seconds=40, codec="m4a")
    with server_pair(root) as pair:
        yield pair


@pytest.fixture
def signed_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def options(proxy: StandinProxy, scheme: str | None = None) -> FetchOptions:
    url = proxy.url if scheme is None else proxy.url.replace(proxy.kind, scheme, 1)
    return FetchOptions(allowed_hosts=ALLOWED, socket_timeout_s=5.0, retries=0, proxy=url)


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_a_fetch_goes_through_the_proxy(servers: Servers, kind: str, signed_in: None) -> None:
    before = len(servers.public.requests)
    with standin_proxy(kind, user=USER, password=PASSWORD) as proxy:
        got = fetch_window(
            servers.url("media.test", "/media/tones.m4a"), start_s=15.0, options=options(proxy),
            addresses=policy(FakeDNS()),
        )  # fmt: skip
    assert (got.window.start_s, got.window.end_s) == (15.0, 25.0)
    assert dominant_hz(got.samples[-RATE:]) == step_hz(2)
    # yt-dlp's request and ffmpeg's, each through the proxy, to the address the guard checked
    assert proxy.connections >= 2 and proxy.connections == len(servers.public.requests) - before
    assert set(proxy.targets) == {f"{PUBLIC}:{servers.public.port}"} and proxy.refusals == []
    assert servers.trap.requests == []


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_wrong_credentials_are_the_operators_problem_not_the_links(
    servers: Servers, kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with standin_proxy(kind, user=USER, password=PASSWORD) as proxy, pytest.raises(FetchError) as caught:
        fetch_window(servers.url("media.test", "/media/tones.m4a"), options=options(proxy), addresses=policy(FakeDNS()))
    assert caught.value.reason is FetchFailure.NETWORK and proxy.refusals and proxy.connections == 0
    assert any("egress proxy" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert not any("wrong" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", ["http", "socks5"])
@pytest.mark.parametrize("public_answers", [1, 2])
def test_rebinding_is_refused_before_the_proxy_is_asked(
    servers: Servers, kind: str, public_answers: int, signed_in: None
) -> None:
    dns = FakeDNS(rebind=[PUBLIC] * public_answers + [TRAP])
    with standin_proxy(kind, user=USER, password=PASSWORD) as proxy, pytest.raises(UnsupportedLinkError) as caught:
        fetch_window(servers.url("rebind.test", "/media/tones.m4a"), start_s=15.0, options=options(proxy),
                     addresses=policy(dns))  # fmt: skip
    assert str(caught.value) == PRIVATE_ADDRESS
    assert not [t for t in proxy.targets if t.startswith(TRAP)] and servers.trap.requests == []


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_a_redirect_to_the_trap_is_refused(servers: Servers, kind: str, signed_in: None) -> None:
    url = servers.redirect("media.test", f"http://{TRAP}:{servers.public.port}/media/tones.m4a")
    with standin_proxy(kind, user=USER, password=PASSWORD) as proxy, pytest.raises(UnsupportedLinkError) as caught:
        fetch_window(url, start_s=15.0, options=options(proxy), addresses=policy(FakeDNS()))
    assert str(caught.value) == PRIVATE_ADDRESS
    assert proxy.targets == [f"{PUBLIC}:{servers.public.port}"] and servers.trap.requests == []


def test_an_https_proxy(servers: Servers, signed_in: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS to the proxy itself, checked against the system's certificate authorities (here OpenSSL's
    SSL_CERT_FILE, the test CA); then CONNECT inside it."""
    ca, context = make_certificates(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    with standin_proxy("https", user=USER, password=PASSWORD, tls=context) as proxy:
        got = fetch_window(servers.url("media.test", "/media/tones.m4a"), start_s=15.0, options=options(proxy),
                           addresses=policy(FakeDNS()))  # fmt: skip
    assert got.window.start_s == 15.0 and proxy.connections >= 2
    assert set(proxy.targets) == {f"{PUBLIC}:{servers.public.port}"}
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-authorities"))
    with standin_proxy("https", user=USER, password=PASSWORD, tls=context) as untrusted, pytest.raises(FetchError):
        fetch_window(servers.url("media.test", "/media/tones.m4a"), options=options(untrusted),
                     addresses=policy(FakeDNS()))  # fmt: skip
    assert untrusted.connections == 0


def test_socks5h_lets_the_proxy_resolve_names(servers: Servers, signed_in: None) -> None:
    """``far.test`` is unknown here and known to the proxy; ``trap.test`` answers private here, so it is refused
    before the proxy is asked for it (what the proxy's own answers would be, the guard cannot see)."""
    names = {"far.test": PUBLIC, "trap.test": TRAP}
    with standin_proxy("socks5", user=USER, password=PASSWORD, names=names) as proxy:
        got = fetch_window(servers.url("far.test", "/media/tones.m4a"), start_s=15.0,
                           options=options(proxy, "socks5h"), addresses=policy(FakeDNS()))  # fmt: skip
        assert got.window.start_s == 15.0 and set(proxy.targets) == {f"far.test:{servers.public.port}"}
        with pytest.raises(UnsupportedLinkError):
            fetch_window(servers.url("trap.test", "/media/tones.m4a"), options=options(proxy, "socks5h"),
                         addresses=policy(FakeDNS()))  # fmt: skip
    assert not [t for t in proxy.targets if "trap" in t] and servers.trap.requests == []


def test_the_proxy_setting(tmp_path: Path) -> None:
    environ = {"MUSREC_YOUTUBE_PROXY": "socks5://proxy.example:1080", USER_ENV: "u", PASSWORD_ENV: "s3cret"}
    config = load_config(None, environ)
    proxy = upstream_proxy(config.youtube.proxy, environ)
    assert proxy is not None and (proxy.scheme, proxy.host, proxy.port) == ("socks5", "proxy.example", 1080)
    assert (proxy.user, proxy.password) == ("u", "s3cret") and "s3cret" not in repr(proxy)
    assert str(proxy) == "socks5://proxy.example:1080"
    assert upstream_proxy(None, environ) is None
    for url, says in [
        ("http://user:secret@proxy.example:3128", "must not hold credentials"),
        ("ftp://proxy.example:21", "must start with"),
        ("http://proxy.example", "needs a host and a port"),
        ("http://proxy.example:3128/path", "without a path"),
    ]:
        with pytest.raises(ConfigError, match=says) as caught:
            load_config(None, {"MUSREC_YOUTUBE_PROXY": url})
        assert "secret" not in str(caught.value)


def test_socks5h_still_allows_only_the_webs_ports(signed_in: None) -> None:
    """A name the local resolver does not know goes to the proxy as it is, but never at another port."""
    web_only = AddressPolicy(resolve=FakeDNS(), allowed=counted_public, ports=frozenset({443}))
    with standin_proxy("socks5", user=USER, password=PASSWORD) as proxy:
        upstream = upstream_proxy(proxy.url.replace("socks5", "socks5h", 1), os.environ)
        with GuardProxy(web_only, timeout_s=5.0, upstream=upstream) as guard:
            signed = f"Proxy-Authorization: {guard.authorization}\r\n"
            with socket.create_connection(("127.0.0.1", guard.port), timeout=5.0) as client:
                client.sendall(f"CONNECT far.test:8443 HTTP/1.1\r\n{signed}\r\n".encode())
                assert client.recv(1024).startswith(b"HTTP/1.1 403")
            assert str(guard.stopped()) == OTHER_PORT
    assert proxy.targets == []
