"""Issue 23, point 6: the programs musrec starts (ffmpeg, mpg123, and the ffmpeg and JavaScript runtime yt-dlp starts)
parse media and scripts from strangers: they get this process's environment without its secrets."""

from __future__ import annotations

import pytest

from musrec.childenv import child_environment, is_secret_name

SECRETS = {
    "MUSREC_DISCORD_TOKEN": "discord-token",
    "MUSREC_YOUTUBE_API_KEY": "api-key",
    "MUSREC_LIBRARY_TOKEN": "library-token",
    "MUSREC_YOUTUBE_PROXY_PASSWORD": "proxy-password",
    "MUSREC_YOUTUBE_PROXY_USER": "proxy-user",
    "GITHUB_TOKEN": "gh",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "AWS_ACCESS_KEY_ID": "aws-id",
    "OPENAI_API_KEY": "openai",
    "STRIPE_APIKEY": "stripe",
    "db_password": "db",
    "SSH_AUTH_SOCK": "/tmp/agent",
    "YOUTUBE_COOKIES": "cookies",
    "http_proxy": "http://user:secret@proxy.example:3128",
    "DATABASE_URL": "postgres://app:secret@db:5432/app",
}
KEPT = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/bot",
    "LANG": "C.UTF-8",
    "PWD": "/srv",
    "TMPDIR": "/tmp",
    "LD_LIBRARY_PATH": "/opt/lib",
    "DENO_DIR": "/cache/deno",
    "KEYBOARD_LAYOUT": "us",  # a word that only starts with KEY
    "https_proxy": "http://proxy.example:3128",  # a proxy without a password
    "MONKEY": "banana",
}


def test_issue_23_secrets_are_left_out_and_the_rest_is_kept() -> None:
    assert child_environment({**SECRETS, **KEPT}) == KEPT


def test_extra_values_are_set_on_top(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSREC_DISCORD_TOKEN", "discord-token")
    monkeypatch.setenv("no_proxy", "localhost")
    got = child_environment(http_proxy="http://u:p@127.0.0.1:1")
    assert "MUSREC_DISCORD_TOKEN" not in got and got["no_proxy"] == "localhost"
    assert got["http_proxy"] == "http://u:p@127.0.0.1:1" and got["PATH"]


@pytest.mark.parametrize("name", sorted(SECRETS.keys() - {"http_proxy", "DATABASE_URL"}))
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", sorted(KEPT))
def test_names_that_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)
