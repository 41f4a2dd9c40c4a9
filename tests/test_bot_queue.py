"""Issue 14: the work queue's promises, kept at the bot level on the Discord stand-in.

A cooldown between a user's requests (told with the time left, then accepted), one request per user at a time
(across commands and posted clips), first come first served behind a slow request, the answer timeout (and the
worker it leaves busy), and the gateway heartbeat through work that lasts several heartbeat intervals. The embedder
is held by the test (tests/bot_fixtures.py), so that what happens depends on the order of events, never on how fast
this machine is; the cooldown runs on a clock the test moves.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from bot_fixtures import (
    HEARTBEAT_S,
    WAIT_S,
    HeldEmbedder,
    World,
    attachment_at,
    bot_for,
    clip,
    config_for,
    downloads,
    ephemeral_text,
    eventually,
    file_host,
    held_scenario,
    small_world,
)
from discord_standin import InteractionHandle, StandIn, run

from bot.__main__ import serve
from bot.client import MusrecBot
from bot.errors import RESTARTING, TIMEOUT, user_message
from bot.work import WorkQueue
from musrec.errors import BusyError

HELD_INTERVALS = 6  # heartbeat intervals the model is held for
SHORT_TIMEOUT_S = 1.0  # below the configuration's lowest (10 s): injected through the queue
USER, OTHER = 7001, 7002
IN_PROGRESS = "You already have a request in progress: wait for its answer first."


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return small_world(tmp_path_factory)


async def ask(standin: StandIn, user: int, seconds: int = 2, *, command: str = "recommend") -> InteractionHandle:
    """``/recommend`` (or ``/compare``) by ``user`` with a clip of ``seconds`` on the stand-in's CDN."""
    data = clip(seconds)
    if command == "compare":
        a = standin.add_attachment("a.wav", data, "audio/wav")
        b = standin.add_attachment("b.wav", data, "audio/wav")
        return await standin.dispatch_interaction("compare", {"first_clip": a, "second_clip": b}, user_id=user)
    attachment = standin.add_attachment(f"{user}.wav", data, "audio/wav")
    return await standin.dispatch_interaction("recommend", {"clip": attachment}, user_id=user)


def answer_order(standin: StandIn, handles: list[InteractionHandle]) -> list[InteractionHandle]:
    """``handles`` in the order their answers (the edit that carried the embed) reached Discord."""

    def position(handle: InteractionHandle) -> int:
        return next(i for i, c in enumerate(standin.recorded) if c in handle.edits and (c.json or {}).get("embeds"))

    return sorted(handles, key=position)


def test_cooldown_says_how_long_to_wait_then_accepts(world: World) -> None:
    now = [1000.0]
    queue = WorkQueue(workers=1, max_waiting=2, cooldown_s=30.0, timeout_s=WAIT_S, clock=lambda: now[0])

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        first = await ask(standin, USER)
        await first.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        await eventually(lambda: queue.pending == 0, what="the first request released")
        now[0] += 10.6
        early = await ask(standin, USER)
        await early.wait_for_response()
        assert early.deferred is None and downloads(standin, early) == 0  # refused before any work
        assert ephemeral_text(early) == "Please wait 20 s before your next request."  # 19.4 s, rounded up
        other = await ask(standin, OTHER)  # the cooldown is each user's own
        await other.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        now[0] += 20.0  # exactly the time it was told
        again = await ask(standin, USER)
        await again.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        assert again.deferred is not None

    held_scenario(world, body, HeldEmbedder(held=False), queue=queue)


def test_one_request_at_a_time_per_user(world: World) -> None:
    """While a user's request works, their next /recommend, /compare or posted clip is refused at once, without a
    download; other users queue as usual; once answered, the user may ask again."""
    embedder = HeldEmbedder()

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        first = await ask(standin, USER, 3)
        await eventually(lambda: embedder.started == [3], what="the first request in the model")
        refused = [await ask(standin, USER, 4), await ask(standin, USER, 4, command="compare")]
        for handle in refused:
            await handle.wait_for_response()
            assert handle.deferred is None and ephemeral_text(handle) == IN_PROGRESS
            assert downloads(standin, handle) == 0
        posted_clip = standin.add_attachment("posted.wav", clip(5), "audio/wav")
        posted = await standin.post_message("", attachments=[posted_clip], author=USER)
        assert (await posted.wait_for_reply(timeout=WAIT_S)).content == IN_PROGRESS
        other = await ask(standin, OTHER, 6)
        await other.wait_for_original(lambda m: "in the queue" in m.content, timeout=WAIT_S)
        assert bot.queue.pending == 2
        embedder.open()
        for handle in (first, other):
            await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        assert embedder.started == [3, 6]  # the refused requests never reached the model
        await eventually(lambda: bot.queue.pending == 0, what="both requests released")
        again = await ask(standin, USER, 4)
        await again.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)

    held_scenario(world, body, embedder, workers=1, max_waiting=4, listen=True)


def test_first_come_first_served_behind_a_slow_request(world: World) -> None:
    """Four users queue behind a slow request; the first of them is the last to have its clip downloaded (its
    download is held): a free worker still goes to the requests in the order they came."""
    embedder = HeldEmbedder()

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        async with file_host() as host:
            slow = await ask(standin, 8000, 2)
            await eventually(lambda: embedder.started == [2], what="the slow request in the model")
            waiting = []
            for i, seconds in enumerate((3, 4, 5, 6)):
                user = 8001 + i
                if i == 0:  # its clip comes from a host that answers only when the test says so
                    host.serve("held.wav", clip(seconds), held=True)
                    attachment = attachment_at(standin, host.url("held.wav"), "held.wav", clip(seconds))
                    handle = await standin.dispatch_interaction("recommend", {"clip": attachment}, user_id=user)
                else:
                    handle = await ask(standin, user, seconds)
                await handle.wait_for_original(lambda m, n=i + 2: f"number {n} in the queue" in m.content)
                waiting.append(handle)
            await eventually(lambda: bot.queue.waiting == 3, what="the later three waiting for the worker")
            host.holds["held.wav"].set()
            await eventually(lambda: bot.queue.waiting == 4, what="the first of them waiting too")
            embedder.open()
            for handle in [slow, *waiting]:
                await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
            assert embedder.started == [2, 3, 4, 5, 6]
            assert answer_order(standin, [slow, *waiting]) == [slow, *waiting]

    held_scenario(world, body, embedder, workers=1, max_waiting=4)


def test_a_request_that_outlasts_the_answer_timeout(world: World) -> None:
    """The user is told it took too long; the model's thread cannot be stopped, so its worker stays busy: the next
    user is shown a place in line behind it, and the one after that is told the queue is full. When the thread
    ends, the next request runs, and the late result goes nowhere."""
    embedder = HeldEmbedder()
    queue = WorkQueue(workers=1, max_waiting=1, cooldown_s=0.0, timeout_s=SHORT_TIMEOUT_S)

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        late = await ask(standin, USER, 3)
        await standin.wait_until(lambda: any(m.ephemeral for m in late.messages), timeout=WAIT_S)
        assert late.deferred is not None and late.original is not None and late.original.deleted
        assert ephemeral_text(late) == TIMEOUT
        await eventually(lambda: queue.pending == 0, what="the request released once the user was told")
        assert embedder.finished == [] and queue.busy == 1
        calls_for_late = len(late.edits) + len(late.followups) + len(late.callbacks)
        queue.timeout_s = WAIT_S  # the next requests wait for the held call: no timeout for them
        behind = await ask(standin, OTHER, 4)
        await behind.wait_for_original(lambda m: "number 2 in the queue" in m.content, timeout=WAIT_S)
        full = await ask(standin, 7003, 5)
        await full.wait_for_response()
        assert full.deferred is None and "you would be number 3 in the queue, which is full" in ephemeral_text(full)
        embedder.open()
        await behind.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        assert embedder.started == [3, 4] and embedder.finished == [3, 4]
        assert len(late.edits) + len(late.followups) + len(late.callbacks) == calls_for_late
        assert ephemeral_text(late) == TIMEOUT
        await eventually(lambda: queue.busy == 0 and queue.pending == 0, what="the worker free again")

    held_scenario(world, body, embedder, queue=queue)


def test_a_shutdown_tells_the_users_whose_requests_it_drops(world: World) -> None:
    """SIGTERM (the bot closing) while one request runs the model and two wait for a worker (a command and a clip
    posted in a listened channel): the commands' "thinking" messages are replaced by a private note to send the
    request again, instead of hanging for 15 minutes, and the posted clip gets that note as a reply."""
    embedder = HeldEmbedder()
    queue = WorkQueue(workers=1, max_waiting=2, cooldown_s=0.0, timeout_s=WAIT_S)

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        running = await ask(standin, USER, 3)
        await eventually(lambda: embedder.started == [3], what="the first request in the model")
        waiting = await ask(standin, OTHER, 4)
        await waiting.wait_for_original(lambda m: "number 2 in the queue" in m.content, timeout=WAIT_S)
        posted = await standin.post_message("this?", attachments=[standin.add_attachment("p.wav", clip(5))])
        await eventually(lambda: len(bot.answering) == 3, what="the posted clip waiting too")
        await bot.close()
        for handle in (running, waiting):
            assert handle.original is not None and handle.original.deleted
            assert ephemeral_text(handle) == RESTARTING
        assert [m.content for m in posted.replies] == [RESTARTING]
        assert bot.answering == {} and queue.pending == 0
        embedder.open()
        assert not any(m.embeds for h in (running, waiting) for m in h.messages)

    held_scenario(world, body, embedder, queue=queue, listen=True)


def test_sigterm_tells_each_user_whose_request_it_drops(world: World) -> None:
    """Issue 22: SIGTERM as a process manager sends it, to the bot run as ``python -m bot`` runs it
    (``bot.__main__.serve``), while one request runs the model and two wait (a command and a posted clip): no
    "thinking" message is left, each user is told to send the request again, and the bot returns cleanly."""
    embedder = HeldEmbedder()
    queue = WorkQueue(workers=1, max_waiting=2, cooldown_s=0.0, timeout_s=WAIT_S)

    async def main(standin: StandIn) -> None:
        client = bot_for(world, config_for(world, standin, listen=True), embedder=embedder, queue=queue)
        served = asyncio.create_task(serve(client, standin.token, timeout_s=WAIT_S))
        try:
            await eventually(client.is_ready, what="the bot ready")
            running = await ask(standin, USER, 3)
            await eventually(lambda: embedder.started == [3], what="the first request in the model")
            waiting = await ask(standin, OTHER, 4)
            await waiting.wait_for_original(lambda m: "number 2 in the queue" in m.content, timeout=WAIT_S)
            posted = await standin.post_message("this?", attachments=[standin.add_attachment("p.wav", clip(5))])
            await eventually(lambda: len(client.answering) == 3, what="the posted clip waiting too")
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(served, timeout=WAIT_S)
        finally:
            embedder.open()
        for handle in (running, waiting):
            assert handle.original is not None and handle.original.deleted
            assert ephemeral_text(handle) == RESTARTING
        assert [m.content for m in posted.replies] == [RESTARTING]
        assert client.answering == {} and queue.pending == 0 and client.is_closed()
        assert not standin.errors

    run(main, timeout=WAIT_S * 3, heartbeat_interval=HEARTBEAT_S)


def test_a_request_during_the_shutdown_is_told_at_once() -> None:
    """Issue 22: a request that came while the bot was closing (telling the dropped requests' users) was admitted,
    shown as "thinking", then failed or was left so when the connection closed. Now the closing bot admits nothing
    more (MusrecBot.close stops admissions first) and the user is told at once to send it again."""
    queue = WorkQueue(workers=1, max_waiting=2, cooldown_s=0.0, timeout_s=WAIT_S)
    queue.admit(OTHER)
    queue.stop_admitting()
    with pytest.raises(BusyError) as refused:
        queue.admit(USER)
    assert user_message(refused.value) == RESTARTING and queue.pending == 1
    queue.shutdown()


def test_heartbeats_continue_through_long_work(world: World) -> None:
    """The model is held for several heartbeat intervals: the gateway heartbeat goes on meanwhile (one beat may be
    lost to where the window falls between two), and the answer comes once the model is let go."""
    embedder = HeldEmbedder()

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        handle = await ask(standin, USER, 3)
        await eventually(lambda: embedder.started == [3], what="the request in the model")
        loop = asyncio.get_running_loop()
        before, started = standin.gateway.heartbeats, loop.time()
        await asyncio.sleep(HELD_INTERVALS * HEARTBEAT_S)
        beats, held_s = standin.gateway.heartbeats - before, loop.time() - started
        assert embedder.finished == []  # the model was busy the whole time
        assert beats >= int(held_s / HEARTBEAT_S) - 1, (beats, held_s)
        embedder.open()
        await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)

    held_scenario(world, body, embedder)
