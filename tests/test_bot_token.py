"""Issue 14: the Discord token never reaches a log, whoever logs it; nor do the tokens of interactions.

The real process (``python -m bot -v``, debug logging on stderr) logs in to the Discord stand-in with a distinctive
token, answers commands (one of them with the token pasted as its link, which discord.py's own debug log of the
gateway event repeats) and shuts down on SIGTERM. Before it logs in, code in the child logs the token every way a
careless library could: in the message, in the arguments, in an exception, under a logger with a handler of its
own. Nothing the process wrote, and no file it left, contains the token; the mask stands where it was.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import sys
from pathlib import Path

import discord.http
import pytest
from bot_fixtures import WAIT_S, World, bot_config, small_world, start
from conftest import child_environment, closed_port
from discord_standin import StandIn, run

from bot.redact import MASK, WHOLE_WORDS_BELOW, Redactor, redacting

# Shaped like a real one (user id, timestamp, signature), and found nowhere else.
TOKEN = "MTQwMDAwMDAwMDAwMDAwMDAwMA.GzKq9f.musrec-Fake-Signature_7Hq2xWb9RvT3pLc8NdYe4Kj"

_CHILD = """
import logging, os, sys
import discord, discord.gateway, discord.http, yarl

discord.http.Route.BASE = os.environ["STANDIN_API"]
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["STANDIN_GATEWAY"])
login = discord.Client.login

async def leaky_login(self, token):
    logging.getLogger("discord").setLevel(logging.DEBUG)  # discord.py's own debug logs too
    leak = logging.getLogger("leak")
    leak.debug("in the message: " + token)
    leak.info("in the arguments: %s", token)
    leak.warning("in a mapping: %(auth)s", {"auth": "Bot " + token})
    try:
        raise PermissionError("401 Unauthorized for Authorization: Bot " + token)
    except PermissionError:
        leak.exception("in an exception")
    own = logging.getLogger("leak.own")
    own.propagate = False
    own.addHandler(logging.StreamHandler(sys.stderr))
    own.error("under a handler of its own: %r", token)
    return await login(self, token)

discord.Client.login = leaky_login
from bot.__main__ import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return small_world(tmp_path_factory)


def test_the_token_never_reaches_the_logs(world: World, tmp_path: Path) -> None:
    config = bot_config(tmp_path / "bot", world.index)
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"

    interaction_tokens: list[str] = []

    async def main(standin: StandIn) -> int:
        env = child_environment(
            tmp_path / "home",
            MUSREC_DISCORD_TOKEN=TOKEN,
            STANDIN_API=standin.api_url,
            STANDIN_GATEWAY=standin.gateway_url,
        )
        with out.open("wb") as stdout, err.open("wb") as stderr:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _CHILD, "--config", str(config), "-v", "run",
                env=env, cwd=tmp_path, stdout=stdout, stderr=stderr,
            )  # fmt: skip
            try:
                await standin.wait_until(lambda: standin.gateway.identifies >= 1, timeout=WAIT_S)
                for _ in range(200):  # READY, then the guild: until the bot answers
                    about = await standin.dispatch_interaction("about")
                    try:
                        await about.wait_for_response(timeout=1.0)
                        break
                    except AssertionError:
                        continue
                assert about.original is not None and about.original.embeds
                pasted = await standin.dispatch_interaction("recommend", {"link": TOKEN}, user_id=5150)
                await pasted.wait_for_response(timeout=WAIT_S)
                assert pasted.original is not None and pasted.original.ephemeral
                assert TOKEN not in pasted.original.content
                interaction_tokens.extend(standin.interactions_by_token)
                child.send_signal(signal.SIGTERM)
                return await asyncio.wait_for(child.wait(), timeout=WAIT_S)
            finally:
                if child.returncode is None:
                    child.kill()
                    await child.wait()

    code = run(main, timeout=WAIT_S * 3, heartbeat_interval=0.5, token=TOKEN)
    log = err.read_text(encoding="utf-8")
    assert code == 0, log[-3000:]
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == [], leaked  # stdout, stderr, the data directory, the home directory
    # Each interaction's token (callback and webhook URLs, the gateway event) is masked too.
    assert len(interaction_tokens) >= 2 and not [t for t in interaction_tokens if t in log]
    assert any("/callback" in line and f"/{MASK}/" in line for line in log.splitlines())
    for expected in (
        f"leak: in the message: {MASK}",
        f"leak: in the arguments: {MASK}",
        f"leak: in a mapping: Bot {MASK}",
        f"PermissionError: 401 Unauthorized for Authorization: Bot {MASK}",
        f"under a handler of its own: '{MASK}'",
        "SIGTERM: shutting down",
    ):
        assert expected in log, expected
    gateway_debug = [line for line in log.splitlines() if "discord.gateway" in line and "WebSocket Event" in line]
    assert any(MASK in line and "INTERACTION_CREATE" in line for line in gateway_debug)


def test_redacting_masks_every_part_of_a_record_and_is_undone_after() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root, logger = logging.getLogger(), logging.getLogger("redaction-test")
    root.addHandler(handler)  # as the entry point's logging set-up would
    logger.setLevel(logging.DEBUG)
    factory = logging.getLogRecordFactory()
    try:
        with redacting(TOKEN, "") as redactor:
            assert redactor.secrets == [TOKEN]
            logger.info("message %s and %r", TOKEN, [TOKEN])
            logger.info("arguments that do not fit: %d", TOKEN)  # a mistake: logged anyway, masked
            try:
                raise ValueError(TOKEN)
            except ValueError:
                logger.error("failed", exc_info=True, stack_info=True)
            record = logging.makeLogRecord({"name": "by-hand", "msg": "made by hand: %s", "args": (TOKEN,)})
            handler.handle(record)  # filled in after the factory made it: the handler's filter masks it
        logger.info("after the block: %s", "not masked")
    finally:
        root.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    text = stream.getvalue()
    assert TOKEN not in text
    assert f"message {MASK} and ['{MASK}']" in text
    assert f"arguments that do not fit: %d' % ('{MASK}',)" in text
    assert f"ValueError: {MASK}" in text and "Stack (most recent call last)" in text
    assert f"made by hand: {MASK}" in text
    assert "after the block: not masked" in text
    assert logging.getLogRecordFactory() is factory and not handler.filters
    assert Redactor([]).filter(logging.makeLogRecord({"msg": TOKEN})) is True  # no secret: nothing to mask


def test_interaction_tokens_are_masked_by_their_place() -> None:
    """Tokens nobody knows in advance: after /interactions/ID/ and /webhooks/ID/ in URLs, and under a "token" key."""
    redactor = Redactor([])
    secret = "aW50ZXJhY3Rpb246MTIz:Zm9v_bar-BAZ"
    lines = (
        "POST https://discord.com/api/v10/interactions/123/{}/callback with None has returned 204",
        "PATCH https://discord.com/api/v10/webhooks/456/{}/messages/@original?wait=true",
        "WebSocket Event: {{'t': 'INTERACTION_CREATE', 'd': {{'token': '{}', 'id': '123'}}}}",
        '{{"token": "{}", "type": 2}}',
    )
    for line in lines:
        assert redactor.redact(line.format(secret)) == line.format(MASK)
    assert redactor.redact("GET /api/v10/users/@me has returned 200") == "GET /api/v10/users/@me has returned 200"


def test_a_short_secret_is_masked_only_where_it_stands_whole() -> None:
    """Issue 26: a placeholder token "e" turned "cannot reach Discord" into "cannot r[token]ach Discord"."""
    short = Redactor(["e", "abc-1"])
    assert short.redact("cannot reach Discord: connection refused") == "cannot reach Discord: connection refused"
    assert short.redact("token e, Bot e; 'e' (e).") == f"token {MASK}, Bot {MASK}; '{MASK}' ({MASK})."
    assert short.redact("abc-1 abc-12 xabc-1 abc-1_ abc-1.") == f"{MASK} abc-12 xabc-1 abc-1_ {MASK}."
    assert short.redact("/webhooks/1/e-mail") == f"/webhooks/1/{MASK}"  # placed tokens still go whatever they are
    # A secret of a real token's length goes wherever it stands, glued to other text or not.
    assert len(TOKEN) >= WHOLE_WORDS_BELOW
    assert Redactor([TOKEN]).redact(f"Authorization: Bot{TOKEN}x") == f"Authorization: Bot{MASK}x"


def test_a_short_token_leaves_the_bots_own_message_whole(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [k for k in os.environ if k.startswith("MUSREC_") or k.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MUSREC_DISCORD_TOKEN", "e")
    monkeypatch.chdir(tmp_path)
    port = closed_port()
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{port}/api/v10")
    discord_log, client_log = logging.getLogger("discord"), logging.getLogger("discord.client")
    level, filters = discord_log.level, list(client_log.filters)
    try:
        code, err = start(["--config", str(bot_config(tmp_path / "bot", world.index)), "run"], capsys)
    finally:
        discord_log.setLevel(level)
        client_log.filters = filters
    assert code == 75
    assert err.startswith(f"musrec-bot: cannot reach Discord (127.0.0.1) on port {port}: connection refused; "), err
