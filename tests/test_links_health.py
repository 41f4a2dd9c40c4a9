"""Issue 21, point 4: ``musrec doctor`` checks what fetching links from a server needs: a current yt-dlp, a JavaScript
runtime that runs, a cookies file that parses, an egress proxy and a PO-token provider that answer.

The proxy and the provider are stand-ins on loopback; the runtime is a stand-in script on PATH.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import socket
import socketserver
from collections.abc import Iterator
from pathlib import Path

import pytest
from links_fixtures import standin_proxy
from youtube_fixtures import LOOPBACK, read_request_head, socket_server_running

from musrec.links import health
from musrec.links.fetch import FetchOptions
from musrec.links.health import OK, POT_PLUGIN, PROBLEM, UPGRADE, WARN, link_findings
from musrec.links.upstream import PASSWORD_ENV, USER_ENV
from musrec.setup.doctor import diagnose

COOKIES = (
    "# Netscape HTTP Cookie File\n"
    ".youtube.com\tTRUE\t/\tTRUE\t2000000000\tSID\tabc\n"
    "#HttpOnly_.youtube.com\tTRUE\t/\tTRUE\t2000000000\t__Secure-3PSID\tdef\n"
)


class _Provider(socketserver.ThreadingTCPServer):
    """A PO-token provider's /ping: its version."""

    daemon_threads = True
    allow_reuse_address = True
    version = "2.0.2"


class _ProviderHandler(socketserver.BaseRequestHandler):
    server: _Provider

    def handle(self) -> None:
        if read_request_head(self.request) is None:
            return
        body = json.dumps({"server_uptime": 1.5, "version": self.server.version}).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        self.request.sendall(head.encode() + body)


@pytest.fixture
def provider() -> Iterator[_Provider]:
    server = _Provider((LOOPBACK, 0), _ProviderHandler)
    with socket_server_running(server):
        yield server


def provider_url(server: _Provider) -> str:
    return f"http://{LOOPBACK}:{server.server_address[1]}"


def test_the_age_of_yt_dlp() -> None:
    from yt_dlp.version import __version__

    released = dt.date(*(int(p) for p in __version__.split(".")[:3]))
    assert health.ytdlp_age(released + dt.timedelta(days=10)).status == OK
    old = health.ytdlp_age(released + dt.timedelta(days=health.YTDLP_MAX_AGE_DAYS + 1))
    assert old.status == WARN and UPGRADE in old.detail and "61 days old" in old.detail


def test_the_js_runtime_runs_without_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSREC_DISCORD_TOKEN", "the-token")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "deno").write_text(f"#!/bin/sh\nenv > {tmp_path}/env\necho 'deno 2.1.0'\n")
    (bin_dir / "node").write_text("#!/bin/sh\nexit 3\n")
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runs = health.js_runtime(("deno",))
    assert runs.status == OK and "deno 2.1.0" in runs.detail
    assert "the-token" not in (tmp_path / "env").read_text()
    broken = health.js_runtime(("node",))
    assert broken.status == PROBLEM and "exits with status 3" in broken.detail
    assert health.js_runtime(("no-such-runtime",)).status == WARN


def test_the_cookies_file(tmp_path: Path) -> None:
    good = tmp_path / "cookies.txt"
    good.write_text(COOKIES)
    assert health.cookies(FetchOptions(cookies=good)) == health.Finding(
        "cookies", OK, f"{good}: 2 of YouTube's cookies"
    )
    other = tmp_path / "other.txt"
    other.write_text("# Netscape HTTP Cookie File\n.example.com\tTRUE\t/\tFALSE\t0\ta\tb\n")
    assert health.cookies(FetchOptions(cookies=other)).status == WARN
    garbage = tmp_path / "garbage.txt"
    garbage.write_text('{"cookies": "exported as JSON"}\n')
    assert health.cookies(FetchOptions(cookies=garbage)).status == PROBLEM
    missing = health.cookies(FetchOptions(cookies=tmp_path / "missing.txt"))
    assert missing.status == PROBLEM and "cannot be read" in missing.detail
    assert health.cookies(FetchOptions()).status == OK


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_the_proxy_answers(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server((LOOPBACK, 0)) as target:  # what the proxy is asked to reach
        probe = (LOOPBACK, target.getsockname()[1])
        monkeypatch.setenv(USER_ENV, "u")
        monkeypatch.setenv(PASSWORD_ENV, "p")
        with standin_proxy(kind, user="u", password="p") as proxy:
            options = FetchOptions(proxy=proxy.url)
            assert health.proxy(options, os.environ, probe=probe).status == OK
            refused = health.proxy(options, {USER_ENV: "u", PASSWORD_ENV: "wrong"}, probe=probe)
            assert refused.status == PROBLEM and "refuses" in refused.detail and "wrong" not in refused.detail
        gone = health.proxy(options, os.environ, probe=probe)  # the proxy's port is closed now
        assert gone.status == PROBLEM and "does not answer" in gone.detail


def test_the_pot_provider(provider: _Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    url = provider_url(provider)
    no_plugin = health.pot_provider(url)
    assert no_plugin.status == PROBLEM and "pip install 'musrec[pot]'" in no_plugin.detail
    real_version = importlib.metadata.version
    installed = {POT_PLUGIN: "2.0.2"}  # the plugin is not installed here: its version is what the check reads
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed.get(name) or real_version(name))
    assert health.pot_provider(url).status == OK
    installed[POT_PLUGIN] = "2.0.1"
    assert health.pot_provider(url).status == WARN
    with socket.socket() as closed:
        closed.bind((LOOPBACK, 0))
        dead = f"http://{LOOPBACK}:{closed.getsockname()[1]}"
    assert health.pot_provider(dead).status == PROBLEM


def test_the_doctor_shows_the_link_checks(provider: _Provider, tmp_path: Path) -> None:
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("not cookies\n")
    environ = {
        "MUSREC_DATA_DIR": str(tmp_path / "data"),
        "MUSREC_YOUTUBE_COOKIES": str(cookies),
        "MUSREC_YOUTUBE_POT_PROVIDER_URL": provider_url(provider),
    }
    checks = {c.name: c for c in diagnose(None, environ=environ, quick=True)}
    assert {"yt-dlp", "js runtime", "cookies", "pot provider"} <= set(checks)
    assert checks["cookies"].status == PROBLEM and checks["pot provider"].status == PROBLEM
    assert [f.name for f in link_findings(FetchOptions(), {})] == ["yt-dlp", "js runtime", "cookies"]
