"""Issue 23: nothing a hostile user or a damaged file does turns into silence, a mass ping or a dead bot.

On the loopback Discord, with the real discord.py client and the real pipeline, on both index structures:
a store of searches that is not a database (at start-up, or damaged while the bot runs) is replaced and the bot
answers with working buttons; a search that cannot be saved (its file locked past the busy timeout) is answered
without buttons; option text far beyond any real value is refused in a short private message; a file named to ping
everyone, or to render as a link, is shown as it is named and pings nobody, in a server where the bot may ping
everyone (the stand-in decides who a message pings as Discord does).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bot_fixtures import WAIT_S, ZWSP, World, bot_for, config_for, ephemeral_text, make_world, named
from discord_standin import InteractionHandle, StandIn, StoredMessage, run
from discord_standin.events import buttons
from discord_standin.objects import MEMBER_PERMISSIONS, MENTION_EVERYONE

from bot.client import MusrecBot, command_payload
from bot.errors import CONTENT_MAX, GENERIC, InputError, user_message
from bot.queries import FILENAME
from bot.results import GONE_SEARCH

LONG = 3300  # characters: the reproduction


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def world(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> World:
    return make_world(tmp_path_factory, request.param)


def scenario(
    world: World,
    body: Callable[[StandIn, MusrecBot], Awaitable[None]],
    data: Path,
    *,
    permissions: int = MEMBER_PERMISSIONS,
    **bot: Any,
) -> None:
    async def main(standin: StandIn) -> None:
        config = config_for(world, standin, **bot)
        client = bot_for(world, replace(config, data=replace(config.data, dir=data)))
        async with standin.running(client, timeout=WAIT_S):
            await body(standin, client)
        assert not standin.errors and not standin.unexpected

    run(main, timeout=WAIT_S * 3, heartbeat_interval=0.5, bot_permissions=permissions)


async def answered(handle: InteractionHandle) -> StoredMessage:
    return await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)


async def recommend(standin: StandIn, world: World, user: int, **options: Any) -> InteractionHandle:
    clip = standin.add_attachment("my clip.wav", world.clips[1], "audio/wav")
    return await standin.dispatch_interaction(
        "recommend", {"clip": clip, "start": "0", "top_k": 3, **options}, user_id=user
    )


def labels_of(message: StoredMessage) -> list[str]:
    return [b["label"] for b in buttons(message.data)]


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


# ---- point 1: the store of searches ---------------------------------------------------------------------------


def test_a_damaged_store_of_searches_is_replaced_at_start_and_while_running(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 23, point 1. Start-up with a store that is not a database used to raise sqlite3.DatabaseError and end
    the bot. Now it starts afresh: answers carry buttons, "More" works. Damaged again while the bot runs, the next
    search replaces it too; a button of a search kept in the damaged file finds it gone and says so."""
    data = tmp_path / "data"
    data.mkdir()
    store = data / FILENAME
    store.write_bytes(b"not a database, a copy cut short " * 64)

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        first = await answered(await recommend(standin, world, user=1))
        assert labels_of(first) == ["More like 1", "More like 2", "More like 3", "More"]
        more = await answered(await standin.click(first, label="More", user_id=1))
        assert more.embeds[0]["fields"][0]["name"].startswith("4. ")
        store.write_bytes(b"\x00" * 4096)  # a disk fault under the running bot
        second = await answered(await recommend(standin, world, user=2))
        assert labels_of(second)[-1] == "More"
        again = await answered(await standin.click(second, label="More", user_id=2))
        assert again.embeds[0]["fields"][0]["name"].startswith("4. ")
        gone = await standin.click(first, label="More", user_id=1)
        await standin.wait_until(lambda: any(m.ephemeral for m in gone.messages), timeout=WAIT_S)
        assert ephemeral_text(gone) == GONE_SEARCH + "."

    with caplog.at_level(logging.WARNING, logger="bot"):
        scenario(world, body, data)
    assert store.read_bytes().startswith(b"SQLite format 3\x00")
    assert warnings(caplog, "is damaged") == 2  # once at start-up, once while running


def test_a_search_that_cannot_be_saved_is_answered_without_buttons(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 23, point 1. Another process holds the store's write lock past the busy timeout: the search worked,
    so it is answered, without buttons (there is nothing they could find), and a warning is logged. It used to be
    "Sorry, something went wrong". Once the lock is gone, answers have buttons again."""

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        holder = sqlite3.connect(bot.queries.path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            locked = await answered(await recommend(standin, world, user=1))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert locked.embeds[0]["title"] == "Sounds like this" and len(locked.embeds[0]["fields"]) == 3
        assert locked.components == []
        later = await answered(await recommend(standin, world, user=2))
        assert labels_of(later)[-1] == "More"

    with caplog.at_level(logging.WARNING, logger="bot"):
        scenario(world, body, tmp_path / "data")
    assert warnings(caplog, "database is locked") == 1


# ---- point 2: long option text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options", "expected"),
    [
        ("recommend", {"start": "1" * LONG}, "That start time is too long: at most 32 characters."),
        ("recommend", {"label": "Rock music" * (LONG // 10)}, "That label is too long: at most 100 characters."),
        ("recommend", {"exclude_label": "x" * LONG}, "That label is too long: at most 100 characters."),
        ("recommend", {"link": "https://youtu.be/" + "x" * LONG}, "That link is too long: at most 2048 characters."),
        ("blend", {"second_start": "9" * LONG}, "That start time is too long: at most 32 characters."),
        ("recommend", {"start": "**soon** @everyone"}, f"'\\*\\*soon\\*\\* @{ZWSP}everyone' is not a start time"),
        ("recommend", {"label": "y" * 100}, "'" + "y" * 100 + "'"),  # within the limit: quoted whole, once
    ],
    ids=["start", "label", "exclude_label", "link", "blend-start", "quoted-start", "label-at-limit"],
)
def test_long_option_text_is_refused_in_a_short_private_message(
    world: World, tmp_path: Path, command: str, options: dict[str, Any], expected: str
) -> None:
    """Issue 23, point 2. A start of 3,300 characters used to get no answer at all (the refusal quoted it whole, was
    over Discord's 2,000 characters, and failed to send), a label of 3,300 a false apology. Each option now has a
    ``max_length`` that Discord's client keeps to, and the bot refuses longer text itself, quoting none of it; what
    it does quote of a user's text is escaped. No work is done, no cooldown starts."""

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        clips = [standin.add_attachment(f"{n}.wav", world.clips[0], "audio/wav") for n in range(2)]
        sound = {"clip": clips[0]} if command == "recommend" else {"first_clip": clips[0], "second_clip": clips[1]}
        handle = await standin.dispatch_interaction(command, {**sound, **options})
        await handle.wait_for_response()
        text = ephemeral_text(handle)
        assert handle.deferred is None and expected in text and text != GENERIC
        assert len(text) <= 400 and "y" * 101 not in text
        assert bot.queue.pending == 0 and not [c for c in standin.recorded if "/attachments/" in c.path]
        answered_now = await standin.dispatch_interaction(command, sound)  # no cooldown: the same user at once
        await answered(answered_now)

    scenario(world, body, tmp_path / "data", cooldown_s=600.0)


def test_registered_options_keep_their_length(world: World, tmp_path: Path) -> None:
    """Issue 23, point 2: once the commands are synced, Discord's client itself keeps text within ``max_length``
    (the stand-in refuses to send more); the bot's own check above is for a command registered before."""

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        standin.register_commands(await command_payload(bot.config), guild_id=standin.world.guild_id)
        clip = standin.add_attachment("a.wav", world.clips[0], "audio/wav")
        with pytest.raises(ValueError, match="'start' takes at most 32 characters"):
            await standin.dispatch_interaction("recommend", {"clip": clip, "start": "1" * 33})
        handle = await standin.dispatch_interaction("recommend", {"clip": clip, "start": " " * 31 + "0"})
        assert (await answered(handle)).embeds[0]["title"] == "Sounds like this"

    scenario(world, body, tmp_path / "data")


def test_every_refusal_fits_a_message() -> None:
    """Issue 23, point 2: whatever an error says, the text shown for it is within Discord's 2,000 characters."""
    text = user_message(InputError("unknown label " + "z" * 5000))
    assert len(text) <= CONTENT_MAX and text.startswith("Unknown label zzz") and text.endswith("…")


# ---- point 3: file names --------------------------------------------------------------------------------------


def test_a_file_name_pings_nobody_and_shows_as_it_is_named(world: World, tmp_path: Path) -> None:
    """Issue 23, point 3, in a server where the bot may ping everyone. A refused file named to ping everyone and a
    member used to be answered in public with its name as a ping (and "the limit is 0 MiB"); now the name is shown
    escaped, nobody is pinged, and a limit under 1 MiB reads in KiB. A file named like a masked link is shown as its
    name in the answer's embed, not as a link, in a posted clip's reply and a command's answer alike."""

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        member = standin.world.user_id
        big = standin.add_attachment(f"@everyone <@{member}>.mp3", b"\xff\xfb" * 300_000, "audio/mpeg")  # 0.6 MiB
        refused = await standin.post_message("", attachments=[big])
        reply = await refused.wait_for_reply(timeout=WAIT_S)
        assert reply.content == f"@{ZWSP}everyone <@{ZWSP}{member}>.mp3 is 586 KiB; the limit is 488.2 KiB."
        assert reply.data["mention_everyone"] is False and reply.data["mentions"] == []
        masked = "[x](https://example.com) @here.wav"  # a name a client may send; no file system has it
        shown = f"\\[x](https://example.com) @{ZWSP}here.wav (0:"
        posted = await standin.post_message("", attachments=[named(standin, masked, world.clips[1])])
        answer = await posted.wait_for_reply(timeout=WAIT_S)
        assert answer.embeds[0]["description"].startswith(shown)
        assert answer.data["mention_everyone"] is False and answer.data["mentions"] == []
        clip = named(standin, masked, world.clips[1])
        handle = await standin.dispatch_interaction("recommend", {"clip": clip}, user_id=member + 1)
        assert (await answered(handle)).embeds[0]["description"].startswith(shown)

    scenario(
        world,
        body,
        tmp_path / "data",
        permissions=MEMBER_PERMISSIONS | MENTION_EVERYONE,
        listen=True,
        max_attachment_bytes=500_000,  # above the clips' 384 kB, under 1 MiB
    )
