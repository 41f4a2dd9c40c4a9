"""Issue 23, point 4: attachments wait for a worker in files (bot/spool.py), not in memory, and each file is removed
when its request ends, however it ends.

On the loopback Discord with the real client, queue and decoder; the embedder is held by the test
(tests/bot_fixtures.py), so what is waiting, and where, depends on the order of events only. Each outcome is checked
the moment its user sees it: answered, refused (a file that is not audio, one larger than Discord announced, a
download that fails), timed out, or dropped at shutdown (then the whole directory is gone).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bot_fixtures import (
    WAIT_S,
    HeldEmbedder,
    RssPeak,
    World,
    attachment_at,
    clip,
    ephemeral_text,
    eventually,
    file_host,
    held_scenario,
    small_world,
)
from discord_standin import InteractionHandle, StandIn

from bot.client import MusrecBot
from bot.errors import RESTARTING, TIMEOUT
from bot.work import WorkQueue

SHORT_TIMEOUT_S = 1.0
MIB = 1 << 20
BLENDS = 9  # one working, eight waiting: the default queue
BIG_CLIP_S = 131  # 16-bit mono at 16 kHz: 4.0 MiB
# Eight waiting /blend requests hold 24 files of 4 MiB (96 MiB). Held in memory, the process grew by 81-95 MiB here;
# spooled, by under 1 MiB (a request's download passes through 64-KiB chunks). A quarter of the files' size.
RSS_BOUND_MIB = 24


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def world(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> World:
    return small_world(tmp_path_factory, request.param)


def held(bot: MusrecBot) -> list[bytes]:
    """The attachments the bot holds now, as their bytes, sorted."""
    return sorted(path.read_bytes() for path in bot.spool.files())


def downloading() -> list[asyncio.Task[Any]]:
    """The bot's tasks still fetching a sound (Sounds._fetch), in this event loop."""
    return [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "Sounds._fetch"]


def told(handle: InteractionHandle) -> bool:
    return any(m.ephemeral for m in handle.messages)


async def blend(standin: StandIn, user: int, sounds: list[bytes]) -> InteractionHandle:
    names = ("first_clip", "second_clip", "third_clip")
    options = {
        n: standin.add_attachment(f"{user}-{n}.wav", data, "audio/wav") for n, data in zip(names, sounds, strict=True)
    }
    return await standin.dispatch_interaction("blend", options, user_id=user)


def test_attachments_wait_in_files_until_answered_or_dropped_at_shutdown(world: World) -> None:
    """A /recommend in the model, a /blend and a /compare waiting: their six files are in the spool, byte for byte.
    The answered request's file is gone when its answer shows; a shutdown drops the other two and removes the
    spool's directory."""
    embedder = HeldEmbedder()
    queue = WorkQueue(workers=1, max_waiting=2, cooldown_s=0.0, timeout_s=WAIT_S)
    one, three, two = [clip(3)], [clip(4), clip(5), clip(6)], [clip(7), clip(8)]

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        recommend = standin.add_attachment("r.wav", one[0], "audio/wav")
        running = await standin.dispatch_interaction("recommend", {"clip": recommend}, user_id=1)
        await eventually(lambda: embedder.started == [3], what="the first request in the model")
        assert held(bot) == one
        blended = await blend(standin, 2, three)
        a, b = (standin.add_attachment(f"{n}.wav", data, "audio/wav") for n, data in zip("ab", two, strict=True))
        compared = await standin.dispatch_interaction("compare", {"first_clip": a, "second_clip": b}, user_id=3)
        await eventually(lambda: queue.waiting == 2, what="both downloaded and waiting for the worker")
        assert held(bot) == sorted(one + three + two)
        embedder.let_through(1)
        await running.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        assert held(bot) == sorted(three + two)
        await eventually(lambda: embedder.started == [3, 4], what="the blend's first sound in the model")
        spool = bot.spool.path
        await bot.close()
        assert ephemeral_text(blended) == RESTARTING and ephemeral_text(compared) == RESTARTING
        assert not spool.exists()

    held_scenario(world, body, embedder, queue=queue)


def test_every_other_outcome_removes_the_files(world: World) -> None:
    """Audio that cannot be decoded, a file larger than Discord announced, a download refused by its server (alone,
    or beside another download of the same /blend, which it stops), a request given up at the answer timeout (while
    its thread still works), a posted clip answered: each leaves the spool empty by the time its user is told."""
    embedder = HeldEmbedder()  # only the request given up at the timeout reaches it while it is held
    queue = WorkQueue(workers=2, max_waiting=2, cooldown_s=0.0, timeout_s=WAIT_S)

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        async with file_host() as host:
            corrupt = standin.add_attachment("song.mp3", b"ID3" + b"\x17garbage" * 500, "audio/mpeg")
            bad = await standin.dispatch_interaction("recommend", {"clip": corrupt}, user_id=1)
            await standin.wait_until(lambda: told(bad), timeout=WAIT_S)
            assert ephemeral_text(bad) == "Could not read this as audio." and bot.spool.files() == []

            host.serve("big.wav", clip(9))
            url = host.url("big.wav")
            lying = attachment_at(standin, url, "big.wav", clip(2))  # announces far less than it sends
            large = await standin.dispatch_interaction("recommend", {"clip": lying}, user_id=2)
            await standin.wait_until(lambda: told(large), timeout=WAIT_S)
            assert ephemeral_text(large) == "big.wav is larger than the limit." and bot.spool.files() == []

            missing = attachment_at(standin, host.url("gone.wav"), "gone.wav", clip(2))  # 404
            gone = await standin.dispatch_interaction("recommend", {"clip": missing}, user_id=3)
            await standin.wait_until(lambda: told(gone), timeout=WAIT_S)
            assert "could not download" in ephemeral_text(gone) and bot.spool.files() == []

            host.serve("slow.wav", clip(2), held=True)  # never sent: its download ends only when stopped
            slow = attachment_at(standin, host.url("slow.wav"), "slow.wav", clip(2))
            sounds = {"first_clip": slow, "second_clip": missing}
            stopped = await standin.dispatch_interaction("blend", sounds, user_id=4)
            await standin.wait_until(lambda: told(stopped), timeout=WAIT_S)
            assert "could not download" in ephemeral_text(stopped) and bot.spool.files() == []
            assert host.requests.count("/files/slow.wav") == 1 and downloading() == []  # stopped, not left running

        queue.timeout_s = SHORT_TIMEOUT_S
        late = await standin.dispatch_interaction("recommend", {"clip": standin.add_attachment("l.wav", clip(3))})
        await standin.wait_until(lambda: told(late), timeout=WAIT_S)
        assert ephemeral_text(late) == TIMEOUT and bot.spool.files() == []
        assert embedder.started == [3] and embedder.finished == []  # its thread still works, on no file of ours
        queue.timeout_s = WAIT_S
        embedder.open()

        posted = await standin.post_message("this?", attachments=[standin.add_attachment("p.wav", clip(4))])
        reply = await posted.wait_for_reply(timeout=WAIT_S)
        assert reply.embeds and bot.spool.files() == []

    held_scenario(world, body, embedder, queue=queue, listen=True, max_attachment_bytes=200_000)


def test_nine_blends_of_three_large_files_wait_on_disk_not_in_memory(world: World) -> None:
    """One /blend in the model, then eight more waiting, each with three 4-MiB files (96 MiB for the eight): the
    process grows by less than RSS_BOUND_MIB while they arrive and wait. Each is sent once the one before waits, so
    the stand-in's own send buffers hold one request's files at most."""
    embedder = HeldEmbedder()
    users = [80_000 + i for i in range(BLENDS)]

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        sounds = {u: [clip(BIG_CLIP_S, hz=200.0 + i + 0.1 * n) for n in range(3)] for i, u in enumerate(users)}
        first = await blend(standin, users[0], sounds[users[0]])
        await eventually(lambda: embedder.started != [], what="the first blend in the model (its decoding done)")
        handles = [first]
        async with RssPeak() as rss:
            for i, user in enumerate(users[1:], start=1):
                handles.append(await blend(standin, user, sounds[user]))
                await eventually(lambda n=i: bot.queue.waiting == n, what=f"blend {i + 1} downloaded and waiting")
        growth_mib = rss.growth_bytes / MIB
        assert growth_mib < RSS_BOUND_MIB, f"RSS grew by {growth_mib:.1f} MiB"
        assert len(bot.spool.files()) == 3 * BLENDS  # the first one's too: its worker decodes one at a time
        embedder.open()
        for handle in handles:
            await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        assert bot.spool.files() == []

    held_scenario(world, body, embedder, workers=1, max_waiting=BLENDS - 1)
