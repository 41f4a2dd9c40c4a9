"""Issue 21, point 4: what an operator sets for YouTube's bot check reaches yt-dlp, and when YouTube refuses all the
same, the user is told what still works while the log names the remedies at most once an hour.

- ``[youtube] pot_provider_url`` becomes the bgutil plugin's extractor argument (``youtubepot-bgutilhttp:base_url``)
  and ``[youtube] extractor_args`` (yt-dlp's own syntax) any other: both in the parameters of the ``YoutubeDL``
  of a fetch, where extractors and plugins read them.
- A refusal naming YouTube's bot check (here a loopback server's 403 says it, through real yt-dlp) gives the user
  a message that names uploading the clip; the warning with the remedies comes once, then again after an hour.
"""

from __future__ import annotations

import logging
import socket
import socketserver
from collections.abc import Iterator
from pathlib import Path

import pytest
from youtube_fixtures import LOOPBACK, loopback_options, read_request_head, socket_server_running

from musrec.config import load_config
from musrec.errors import ConfigError
from musrec.links import fetch
from musrec.links.errors import FetchError, FetchFailure
from musrec.links.fetch import BOT_CHECK_REMEDIES, FetchOptions, fetch_window
from musrec.links.ytdlp_env import fetch_environment
from musrec.links.ytdlp_params import POT_PROVIDER_KEY, parse_extractor_args, ydl_params

PROXY = "http://u:p@127.0.0.1:9"  # a guard's URL: nothing connects to it here


def built_params(options: FetchOptions, tmp_path: Path) -> dict[str, object]:
    """The parameters a ``YoutubeDL`` of a fetch with ``options`` holds once built."""
    from yt_dlp import YoutubeDL

    with fetch_environment("ffmpeg", proxy=PROXY) as environment:
        params = ydl_params(options, tmp_path, "youtube", proxy=PROXY, environment=environment)
        with YoutubeDL(params) as ydl:
            assert ydl.get_info_extractor("Youtube")._configuration_arg("player_client") == ["web_safari", "mweb"]
            return dict(ydl.params)


def test_the_provider_and_extractor_arguments_reach_yt_dlp(tmp_path: Path) -> None:
    environ = {
        "MUSREC_YOUTUBE_POT_PROVIDER_URL": "http://127.0.0.1:4416",
        "MUSREC_YOUTUBE_EXTRACTOR_ARGS": "youtube:player-client=web_safari,mweb;formats=incomplete",
    }
    options = load_config(None, environ).youtube
    assert built_params(options, tmp_path)["extractor_args"] == {
        "youtube": {"player_client": ["web_safari", "mweb"], "formats": ["incomplete"]},
        POT_PROVIDER_KEY: {"base_url": ["http://127.0.0.1:4416"]},
    }


def test_extractor_arguments_are_checked() -> None:
    assert parse_extractor_args("") == {}
    assert parse_extractor_args("a:b=1 A:c=2,3") == {"a": {"b": ["1"], "c": ["2", "3"]}}
    for wrong, says in [("youtube", "is not KEY:ARG=VALUE"), ("youtube:player_client", "is not ARG=VALUE")]:
        with pytest.raises(ConfigError, match=says):
            load_config(None, {"MUSREC_YOUTUBE_EXTRACTOR_ARGS": wrong})
    with pytest.raises(ConfigError, match="pot_provider_url"):
        load_config(None, {"MUSREC_YOUTUBE_POT_PROVIDER_URL": "localhost:4416"})


class _BotCheck(socketserver.ThreadingTCPServer):
    """Answers every request as YouTube answers a datacenter address (its words, in a 403's reason)."""

    daemon_threads = True
    allow_reuse_address = True


class _BotCheckHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        if read_request_head(sock) is not None:
            sock.sendall(
                b"HTTP/1.1 403 Sign in to confirm you're not a bot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )


@pytest.fixture
def bot_check() -> Iterator[str]:
    server = _BotCheck((LOOPBACK, 0), _BotCheckHandler)
    with socket_server_running(server):
        yield f"http://{LOOPBACK}:{server.server_address[1]}/watch"


def test_issue_21_a_bot_check_tells_the_user_what_works_and_the_log_the_remedies_once_an_hour(
    bot_check: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    monkeypatch.setattr(fetch, "bot_check_notice", fetch._BotCheckNotice(clock=lambda: now[0]))
    messages = []
    with caplog.at_level(logging.WARNING, logger=fetch.__name__):
        for minutes in (0, 1, 59, 61):
            now[0] = 1000.0 + 60 * minutes
            with pytest.raises(FetchError) as caught:
                fetch_window(bot_check, start_s=0.0, options=loopback_options())
            assert caught.value.reason is FetchFailure.BOT_CHECK and caught.value.expected
            messages.append(str(caught.value))
    assert set(messages) == {FetchFailure.BOT_CHECK.value} and "upload the clip" in messages[0]
    assert "YouTube refused this server" in messages[0]
    notices = [r for r in caplog.records if r.getMessage() == BOT_CHECK_REMEDIES]
    assert len(notices) == 2  # at 0 and at 61 minutes
    for remedy in ("[youtube] proxy", "pot_provider_url", "[youtube] cookies", "yt-dlp[default]"):
        assert remedy in BOT_CHECK_REMEDIES


def test_the_compose_profile_runs_the_provider_beside_the_bot() -> None:
    """The provider shares the bot's network namespace (the plugin names the guard on 127.0.0.1 as its proxy), its
    image is the plugin's version, and the bot's image installs the plugin when asked (PIP_EXTRAS=pot)."""
    import tomllib

    yaml = pytest.importorskip("yaml")
    root = Path(__file__).resolve().parent.parent
    services = yaml.safe_load((root / "compose.yaml").read_text())["services"]
    provider, bot = services["pot-provider"], services["bot"]
    assert provider["profiles"] == ["pot"] and provider["network_mode"] == "service:bot"
    (pot,) = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["pot"]
    assert pot.startswith("bgutil-ytdlp-pot-provider>=")
    assert provider["image"] == "brainicism/bgutil-ytdlp-pot-provider:" + pot.split(">=")[1]
    assert bot["build"]["args"]["PIP_EXTRAS"] == "${PIP_EXTRAS:-}" and "environment" not in provider
    dockerfile = (root / "Dockerfile").read_text()
    assert 'ARG PIP_EXTRAS=""' in dockerfile and '".${PIP_EXTRAS:+[$PIP_EXTRAS]}"' in dockerfile
