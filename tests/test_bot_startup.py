"""Issue 12: the bot's start-up failures are one line on stderr and an exit status, never a traceback.

``bot.__main__.main`` runs in this process (its own event loop) against loopback only: the Discord stand-in
(served from a thread), a closed port on 127.0.0.1 (refused), a listening socket that never answers (silent), a
plain HTTP server where TLS is expected, and a name resolver replaced so that every name fails to resolve (no
network). 75 (EX_TEMPFAIL) marks what is probably temporary, 1 what must be fixed first. A last pair of tests runs
``python -m bot``'s code in a child process, so that the real logging set-up shares stderr with the one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import queue
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp.connector
import aiohttp.resolver
import discord.gateway
import discord.http
import pytest
import yarl
from audioset_fixtures import make_segments
from bot_fixtures import WAIT_S, bot_config, start
from conftest import child_environment, closed_port
from discord_standin import StandIn
from setup_fixtures import FileServer, SetupFiles, setup_files, write_config

from bot.__main__ import main
from bot.startup import INTENT_HELP, TEMPORARY
from musrec.audioset.labels import default_labels
from musrec.cli import main as cli_main
from musrec.index.build import BuildOptions, build_index

TOKEN = "standin.bot.token"  # the stand-in's default
SILENT_TIMEOUT_S = 0.5  # the bot's time limit where the server never answers: any value shows the behaviour
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


# ---- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No real home, data or cache directory, no proxy; Discord's URLs and the logging set-up restored after."""
    for name in ("HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / "home" / name.lower()))
    for name in [k for k in os.environ if k.startswith("MUSREC_") or k.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MUSREC_DISCORD_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    )
    discord_log, client_log = logging.getLogger("discord"), logging.getLogger("discord.client")
    level, filters = discord_log.level, list(client_log.filters)
    yield
    discord_log.setLevel(level)
    client_log.filters = filters


@pytest.fixture(scope="module")
def shared_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bot_startup") / "index"
    build_index(make_segments(40, split="eval"), path, labels=default_labels(), options=BuildOptions(trees=2))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SetupFiles:
    return setup_files(tmp_path_factory)


@contextlib.contextmanager
def standin_thread(**options: Any) -> Iterator[StandIn]:
    """A Discord stand-in serving from its own thread and loop, so that ``main`` can run its own loop here."""
    started: queue.Queue[tuple[StandIn, asyncio.AbstractEventLoop, asyncio.Event] | BaseException] = queue.Queue()

    async def serve() -> None:
        try:
            standin = await StandIn(**options).start()
        except BaseException as err:
            started.put(err)
            raise
        done = asyncio.Event()
        started.put((standin, asyncio.get_running_loop(), done))
        try:
            await done.wait()
        finally:
            await standin.stop()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="standin", daemon=True)
    thread.start()
    got = started.get(timeout=WAIT_S)
    if isinstance(got, BaseException):
        raise got
    standin, loop, done = got
    try:
        yield standin
    finally:
        loop.call_soon_threadsafe(done.set)
        thread.join(WAIT_S)
    assert not standin.errors


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


@contextlib.contextmanager
def http_server(*, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 answering 404, behind TLS if ``tls`` is given."""
    server = _QuietServer(("127.0.0.1", 0), _Quiet)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT_S)


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:  # the failed handshakes are the point
        pass


def no_dns(monkeypatch: pytest.MonkeyPatch, code: int = socket.EAI_AGAIN) -> list[str]:
    """Every name but loopback fails to resolve, as on a machine without network; returns the names asked for."""
    asked: list[str] = []
    real = socket.getaddrinfo
    message = {socket.EAI_AGAIN: "Temporary failure in name resolution", socket.EAI_NONAME: "Name or service not known"}

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in LOOPBACK_HOSTS:
            return real(host, *args, **kwargs)
        asked.append(name)
        raise socket.gaierror(code, message[code])

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # aiohttp resolves through socket.getaddrinfo unless aiodns is installed: make sure it does here.
    monkeypatch.setattr(aiohttp.connector, "DefaultResolver", aiohttp.resolver.ThreadedResolver)
    return asked


# ---- python -m bot (run) ------------------------------------------------------------------------------------


def test_run_with_discord_refusing_connections(
    tmp_path: Path, shared_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12: a Discord that cannot be reached was 79 lines ending in a ClientConnectorError."""
    port = closed_port()
    discord.http.Route.BASE = f"http://127.0.0.1:{port}/api/v10"
    code, err = start(["--config", str(bot_config(tmp_path, shared_index)), "run"], capsys)
    assert code == 75
    assert err == (
        f"musrec-bot: cannot reach Discord (127.0.0.1) on port {port}: connection refused; check this machine's "
        f"network; {TEMPORARY}"
    )


@pytest.mark.parametrize("gai", [socket.EAI_AGAIN, socket.EAI_NONAME], ids=["EAI_AGAIN", "EAI_NONAME"])
def test_run_without_dns(
    tmp_path: Path,
    shared_index: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    gai: int,
) -> None:
    """Issue 12: the reported case, ClientConnectorDNSError, with Discord's real address (never resolved here)."""
    asked = no_dns(monkeypatch, gai)
    code, err = start(["--config", str(bot_config(tmp_path, shared_index)), "run"], capsys)
    assert asked == ["discord.com"]
    assert code == 75
    reason = "Temporary failure in name resolution" if gai == socket.EAI_AGAIN else "Name or service not known"
    assert err == (
        f"musrec-bot: cannot reach Discord (discord.com): DNS lookup failed ({reason}); check this machine's "
        f"network; {TEMPORARY}"
    )


def test_run_with_discord_silent(tmp_path: Path, shared_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: a Discord that accepts and never answers held the bot for aiohttp's five minutes."""
    config = bot_config(tmp_path, shared_index)
    with silent_server() as port:
        discord.http.Route.BASE = f"http://127.0.0.1:{port}/api/v10"
        code, err = start(["--config", str(config), "run"], capsys, timeout_s=SILENT_TIMEOUT_S)
    assert code == 75
    assert err == f"musrec-bot: Discord (127.0.0.1) did not answer within {SILENT_TIMEOUT_S:g} s; {TEMPORARY}"


def test_run_with_a_wrong_token(
    tmp_path: Path, shared_index: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUSREC_DISCORD_TOKEN", "not.the.token")
    with standin_thread() as standin:
        code, err = start(["--config", str(bot_config(tmp_path, shared_index)), "run"], capsys)
        assert [c.status for c in standin.calls(method="GET")] == [401]
    assert code == 1
    assert err == (
        "musrec-bot: Discord refused the token in MUSREC_DISCORD_TOKEN: check it in the developer portal "
        "(Bot > Reset Token)"
    )


def test_run_with_discord_answering_503(tmp_path: Path, shared_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: 5xx answers (discord.py retries 500, 502, 504 and 524 itself, then gives up the same way)."""
    with standin_thread() as standin:
        standin.fail_next("GET", r"/users/@me$", status=503)
        code, err = start(["--config", str(bot_config(tmp_path, shared_index)), "run"], capsys)
    assert code == 75
    assert err == (
        "musrec-bot: Discord (127.0.0.1) answered HTTP 503 (503: injected failure): Discord is having trouble "
        f"(https://discordstatus.com); {TEMPORARY}"
    )


def test_run_with_the_gateway_unreachable(
    tmp_path: Path, shared_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12: discord.py logs a traceback and retries a gateway it never reached; the bot stops in one line."""
    port = closed_port()
    with standin_thread() as standin:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{port}/gateway-ws")
        code, err = start(["--config", str(bot_config(tmp_path, shared_index)), "run"], capsys)
        assert standin.calls(route="me")  # logged in over REST first
    assert code == 75
    assert err == (
        f"musrec-bot: cannot reach Discord's gateway (127.0.0.1) on port {port}: connection refused; check this "
        f"machine's network; {TEMPORARY}"
    )


def test_run_without_the_message_content_intent(
    tmp_path: Path, shared_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12: listen_channels needs a privileged intent the application has not enabled (gateway close 4014)."""
    with standin_thread(privileged_intents=0) as standin:
        code, err = start(["--config", str(bot_config(tmp_path, shared_index, listen=True)), "run"], capsys)
        assert standin.gateway.identifies == 1
    assert code == 1
    assert err == f"musrec-bot: {INTENT_HELP}"


def test_run_with_tls_failing(tmp_path: Path, shared_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: TLS that fails (here: a server that does not speak it) needs a person, not a restart."""
    with http_server() as port:
        discord.http.Route.BASE = f"https://127.0.0.1:{port}/api/v10"
        code, err = start(["--config", str(bot_config(tmp_path, shared_index)), "run"], capsys)
    assert code == 1
    assert err.startswith("musrec-bot: TLS with Discord (127.0.0.1) failed ([SSL: WRONG_VERSION_NUMBER] ")
    assert err.endswith("): check the system clock, the CA certificates and any proxy that intercepts TLS")


def test_run_with_a_certificate_that_does_not_verify(
    tmp_path: Path, shared_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=discord.test", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with http_server(tls=tls) as port:
        discord.http.Route.BASE = f"https://127.0.0.1:{port}/api/v10"
        code, err = start(["--config", str(bot_config(tmp_path, shared_index)), "run"], capsys)
    assert code == 1
    assert err.startswith("musrec-bot: TLS with Discord (127.0.0.1) failed (")
    assert "CERTIFICATE_VERIFY_FAILED" in err and err.endswith("any proxy that intercepts TLS")


def test_run_with_a_module_missing_names_it(
    tmp_path: Path, shared_index: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: an ImportError while importing the set-up was taken for a build without it, and the bot started
    without checking its model files and index. A module that cannot be imported is named, and the start stops."""
    monkeypatch.delitem(sys.modules, "musrec.setup.provision", raising=False)
    monkeypatch.setitem(sys.modules, "musrec.setup.features", None)  # as if it were not installed
    code, err = start(["--config", str(bot_config(tmp_path, shared_index)), "run"], capsys)
    assert code == 1
    assert err == (
        "musrec-bot: cannot import musrec.setup.features (import of musrec.setup.features halted; None in "
        "sys.modules): this installation is incomplete; reinstall musrec with its dependencies"
    )


# ---- python -m bot sync -------------------------------------------------------------------------------------


def test_sync_with_discord_refusing_connections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: `python -m bot sync` was 70 lines."""
    port = closed_port()
    discord.http.Route.BASE = f"http://127.0.0.1:{port}/api/v10"
    code, err = start(["--config", str(bot_config(tmp_path, None)), "sync"], capsys)
    assert code == 75
    assert err == (
        f"musrec-bot: cannot reach Discord (127.0.0.1) on port {port}: connection refused; check this machine's "
        f"network; {TEMPORARY}"
    )


def test_sync_without_dns(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    asked = no_dns(monkeypatch)
    code, err = start(["--config", str(bot_config(tmp_path, None)), "sync"], capsys)
    assert asked == ["discord.com"] and code == 75
    assert err.startswith("musrec-bot: cannot reach Discord (discord.com): DNS lookup failed (")


def test_sync_with_discord_silent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with silent_server() as port:
        discord.http.Route.BASE = f"http://127.0.0.1:{port}/api/v10"
        code, err = start(["--config", str(bot_config(tmp_path, None)), "sync"], capsys, timeout_s=SILENT_TIMEOUT_S)
    assert code == 75
    assert err == f"musrec-bot: Discord (127.0.0.1) did not answer within {SILENT_TIMEOUT_S:g} s; {TEMPORARY}"


def test_sync_with_a_wrong_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUSREC_DISCORD_TOKEN", "not.the.token")
    with standin_thread():
        code, err = start(["--config", str(bot_config(tmp_path, None)), "sync"], capsys)
    assert code == 1
    assert err.startswith("musrec-bot: Discord refused the token in MUSREC_DISCORD_TOKEN")


def test_sync_with_discord_answering_503(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with standin_thread() as standin:
        standin.fail_next("PUT", r"/commands$", status=503)
        code, err = start(["--config", str(bot_config(tmp_path, None)), "sync"], capsys)
        assert standin.registered_commands() == []
    assert code == 75
    assert err.startswith("musrec-bot: Discord (127.0.0.1) answered HTTP 503 (503: injected failure): ")
    assert err.endswith(TEMPORARY)


def test_sync_registers_the_commands_without_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m bot sync` logged in through the bot, whose setup_hook loads the model and the index (and added
    its cogs a second time): it needed an index, and failed with one. No index exists here."""
    config = bot_config(tmp_path, None)
    assert main(["--config", str(config), "print-commands"]) == 0
    payload = json.loads(capsys.readouterr().out)
    with standin_thread() as standin:
        assert main(["--config", str(config), "sync"]) == 0
        registered = sorted(c["name"] for c in standin.registered_commands())
        guild = standin.world.guild_id
        assert main(["--config", str(config), "sync", "--guild", str(guild)]) == 0
        in_guild = sorted(c["name"] for c in standin.registered_commands(guild))
        # bot.sync_guild is the default guild (it was documented so, and ignored).
        configured = bot_config(tmp_path / "configured", None, extra=f'sync_guild = "{guild}"\n')
        assert main(["--config", str(configured), "sync"]) == 0
        assert len(standin.calls(route="guild_commands", method="PUT")) == 2
    out = capsys.readouterr()
    assert registered == in_guild == sorted(c["name"] for c in payload)
    assert out.out.splitlines() == [
        f"registered {len(payload)} commands in all guilds (global commands can take up to an hour to appear)",
        f"registered {len(payload)} commands in guild {guild}",
        f"registered {len(payload)} commands in guild {guild}",
    ]
    assert "Traceback" not in out.err


# ---- downloads at the first start, without network ----------------------------------------------------------


def offline_config(tmp_path: Path, *, embedder: str, own_model: bool = False) -> Path:
    """The default download URLs (Google's; never resolved here), no retries, nothing in the data directory;
    ``own_model``: model files of one's own in place (and sha512 = ""), so that only the features are missing."""
    if own_model:
        models = tmp_path / "data" / "models"
        models.mkdir(parents=True, exist_ok=True)
        for name in ("vggish_model.ckpt", "vggish_pca_params.npz"):
            (models / name).write_bytes(b"weights of my own")
    sha512 = 'checkpoint_sha512 = ""\npca_sha512 = ""\n' if own_model else ""
    path = tmp_path / "offline.toml"
    path.write_text(
        f"[data]\ndir = {str(tmp_path / 'data')!r}\n\n[embedder]\nkind = {embedder!r}\n\n"
        f'[max]\nurls = ["http://127.0.0.1:{closed_port()}"]\n\n[setup]\nretries = 0\nretry_wait_s = 0.0\n{sha512}',
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("gai", [socket.EAI_AGAIN, socket.EAI_NONAME], ids=["EAI_AGAIN", "EAI_NONAME"])
def test_first_run_offline_names_setup_from_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, gai: int
) -> None:
    """Issue 12: the VGGish files cannot be fetched: the line says how to set up from files copied over."""
    asked = no_dns(monkeypatch, gai)
    code, err = start(["--config", str(offline_config(tmp_path, embedder="local")), "run"], capsys)
    assert code == 75
    assert set(asked) == {"storage.googleapis.com", "max-cdn.cdn.appdomain.cloud"}  # Google's, then IBM's bundle
    assert err.startswith("musrec-bot: could not fetch vggish_model.ckpt: https://storage.googleapis.com/")
    assert "the MAX bundle failed too" in err
    assert err.endswith(
        "; if this machine cannot download them, copy vggish_model.ckpt and vggish_pca_params.npz (or MAX's "
        "assets.tar.gz) from one that can into a directory DIR and run `musrec setup --from DIR --models-only`; "
        f"{TEMPORARY}"
    )


def test_first_run_offline_without_features_names_the_ways_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: with MAX servers no model is needed, but the index must be built from AudioSet's features."""
    asked = no_dns(monkeypatch)
    code, err = start(["--config", str(offline_config(tmp_path, embedder="max")), "run"], capsys)
    assert code == 75
    assert set(asked) == {"storage.googleapis.com"}
    assert err.startswith("musrec-bot: could not fetch the AudioSet features: https://storage.googleapis.com/")
    assert err.endswith(
        "; if this machine cannot download them, copy features.tar.gz (or audioset_v1_embeddings/) from one that "
        "can into a directory DIR and run `musrec setup --from DIR`; with an index built elsewhere in place, "
        f"`musrec setup --models-only` is all the set-up needed; {TEMPORARY}"
    )


def test_first_run_with_the_download_server_refusing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: SetupFiles
) -> None:
    """Issue 12: refused connections are as temporary as a missing network."""
    with FileServer() as server:
        config = write_config(
            tmp_path / "musrec.toml",
            server,
            data_dir=tmp_path / "data",
            checkpoint_sha512=files.checkpoint_sha512,
            pca_sha512=files.pca_sha512,
        )
        port = server.httpd.server_address[1]
    # The server is closed now: its port refuses.
    code, err = start(["--config", str(config), "run"], capsys)
    assert code == 75
    assert f"http://127.0.0.1:{port}/audioset/vggish_model.ckpt: connection failed: " in err
    assert "`musrec setup --from DIR --models-only`" in err and err.endswith(TEMPORARY)


def test_musrec_setup_offline_is_one_line_naming_the_ways_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: the CLI says the same (with its own exit status, 1)."""
    no_dns(monkeypatch)
    code, err = musrec_setup(offline_config(tmp_path, embedder="local"))
    assert code == 1
    assert err.startswith("musrec: error: could not fetch vggish_model.ckpt: ")
    assert err.endswith("run `musrec setup --from DIR --models-only`")
    code, err = musrec_setup(offline_config(tmp_path, embedder="local", own_model=True))
    assert code == 1
    assert err.startswith("musrec: error: could not fetch the AudioSet features: ")
    assert "`musrec setup --from DIR`" in err and "`musrec setup --models-only`" in err


def musrec_setup(config: Path) -> tuple[int, str]:
    """``musrec setup``: its exit status and stderr, which must be one line without a traceback."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli_main(["--config", str(config), "setup", "--no-progress"])
    text = err.getvalue()
    assert "Traceback" not in text and len(text.splitlines()) == 1 and text.endswith("\n"), text
    return code, text.removesuffix("\n")


# ---- the real process: logging on the same stderr ----------------------------------------------------------

# Runs bot.__main__.main in a child with name resolution failing for every name but loopback.
_OFFLINE_BOT = """
import socket, sys
real = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    if host in ("127.0.0.1", "localhost", "::1"):
        return real(host, *args, **kwargs)
    raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
socket.getaddrinfo = getaddrinfo
import aiohttp.connector, aiohttp.resolver
aiohttp.connector.DefaultResolver = aiohttp.resolver.ThreadedResolver
from bot.__main__ import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["run", "sync"])
def test_the_process_prints_exactly_one_line(tmp_path: Path, shared_index: Path, command: str) -> None:
    """Issue 12: `python -m bot` without network, with the logging it sets up itself."""
    env = child_environment(tmp_path / "home", MUSREC_DISCORD_TOKEN=TOKEN)
    config = bot_config(tmp_path, shared_index)
    done = subprocess.run(
        [sys.executable, "-c", _OFFLINE_BOT, "--config", str(config), command],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 75, done.stderr
    assert done.stderr == (
        "musrec-bot: cannot reach Discord (discord.com): DNS lookup failed (Temporary failure in name resolution); "
        f"check this machine's network; {TEMPORARY}\n"
    )


_GATEWAY_CLOSED_BOT = """
import os, sys
import discord.gateway, discord.http, yarl
discord.http.Route.BASE = os.environ["STANDIN_API"]
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["STANDIN_GATEWAY"])
from bot.__main__ import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_the_process_with_the_gateway_unreachable_prints_exactly_one_line(tmp_path: Path, shared_index: Path) -> None:
    """Issue 22: the start is watched through discord.py's public API (``bot.start``, its events and its
    ``http_trace``); discord.py's own traceback of the gateway it could not reach is not printed beside the line."""
    port = closed_port()
    with standin_thread() as standin:
        env = child_environment(
            tmp_path / "home",
            MUSREC_DISCORD_TOKEN=TOKEN,
            STANDIN_API=standin.api_url,
            STANDIN_GATEWAY=f"ws://127.0.0.1:{port}/gateway-ws",
        )
        done = subprocess.run(
            [sys.executable, "-c", _GATEWAY_CLOSED_BOT, "--config", str(bot_config(tmp_path, shared_index)), "run"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            check=False,
        )
        assert standin.calls(route="me")  # logged in over REST first
    assert done.returncode == 75, done.stderr
    assert "Traceback" not in done.stderr and " ERROR " not in done.stderr, done.stderr
    *logged, line = done.stderr.splitlines()
    assert [entry.split(" INFO ", 1)[1] for entry in logged] == [
        "bot.client: ready: 40 segments, MaxEmbedder, 2 workers of 1 model threads"  # loaded, after logging in
    ]
    assert line == (
        f"musrec-bot: cannot reach Discord's gateway (127.0.0.1) on port {port}: connection refused; check this "
        f"machine's network; {TEMPORARY}"
    )
