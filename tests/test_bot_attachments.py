"""Issue 14: attachments are read only from the hosts in ``[bot] attachment_hosts`` (Discord's CDN).

The stand-in's CDN is 127.0.0.1, which every bot test allows. Here the files are on a second loopback server that
counts every request it gets, reached as ``localhost`` (a host the configuration does not allow) or through a
redirect from an allowed host: the user is told why, briefly and only to them, and that server gets no request for
the file. A control run that allows ``localhost`` fetches the same URL, so the refusals are the check's doing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from bot_fixtures import (
    WAIT_S,
    FileHost,
    HeldEmbedder,
    World,
    attachment_at,
    bot_for,
    clip,
    config_for,
    ephemeral_text,
    file_host,
    small_world,
)
from discord_standin import InteractionHandle, StandIn, run

from bot.client import MusrecBot

OTHER_HOST = "I only read attachments from Discord's own file servers."
NOT_DOWNLOADED = "I could not download that attachment from Discord; try sending it again."


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return small_world(tmp_path_factory)


def settled(handle: InteractionHandle) -> bool:
    """Answered, or told why not."""
    return any(m.embeds or m.ephemeral for m in handle.messages)


def scenario(world: World, body: Callable[[StandIn, MusrecBot, FileHost], Awaitable[None]], **bot: Any) -> None:
    async def main(standin: StandIn) -> None:
        async with file_host() as host:
            client = bot_for(world, config_for(world, standin, **bot), embedder=HeldEmbedder(held=False))
            async with standin.running(client, timeout=WAIT_S):
                await body(standin, client, host)
        assert not standin.errors

    run(main, timeout=WAIT_S * 2, heartbeat_interval=0.5)


@pytest.mark.parametrize("host_part", ["localhost", "127.0.0.1@localhost"], ids=["other-host", "userinfo"])
def test_an_attachment_on_another_host_is_refused_before_any_request(world: World, host_part: str) -> None:
    async def body(standin: StandIn, bot: MusrecBot, host: FileHost) -> None:
        data = clip(3)
        host.serve("a.wav", data)
        url = host.url("a.wav", host=host_part)
        handle = await standin.dispatch_interaction("recommend", {"clip": attachment_at(standin, url, "a.wav", data)})
        await handle.wait_for_response()
        assert handle.deferred is None  # refused before acknowledging: nothing queued, nothing downloaded
        assert ephemeral_text(handle) == OTHER_HOST
        assert host.requests == []
        assert bot.queue.pending == 0

    scenario(world, body)


def test_a_redirect_to_another_host_is_not_followed(world: World) -> None:
    async def body(standin: StandIn, bot: MusrecBot, host: FileHost) -> None:
        data = clip(3)
        host.serve("a.wav", data)
        url = host.redirect(host.url("a.wav", host="localhost"))  # on an allowed host, leading to another
        handle = await standin.dispatch_interaction("recommend", {"clip": attachment_at(standin, url, "a.wav", data)})
        await standin.wait_until(lambda: settled(handle), timeout=WAIT_S)
        assert ephemeral_text(handle) == NOT_DOWNLOADED
        assert host.requests == ["/redirect"]

    scenario(world, body)


def test_a_posted_clip_on_another_host_is_refused(world: World) -> None:
    async def body(standin: StandIn, bot: MusrecBot, host: FileHost) -> None:
        data = clip(3)
        host.serve("posted.wav", data)
        attachment = attachment_at(standin, host.url("posted.wav", host="localhost"), "posted.wav", data)
        posted = await standin.post_message("listen", attachments=[attachment])
        assert (await posted.wait_for_reply(timeout=WAIT_S)).content == OTHER_HOST
        assert host.requests == []

    scenario(world, body, listen=True)


def test_allowed_hosts_are_fetched_but_never_beyond_the_size_limit(world: World) -> None:
    """The control: with ``localhost`` allowed, the same kind of URL is fetched and answered. A file larger than
    Discord announced is not read past ``max_attachment_bytes``."""

    async def body(standin: StandIn, bot: MusrecBot, host: FileHost) -> None:
        data = clip(3)
        host.serve("a.wav", data)
        url = host.url("a.wav", host="localhost")
        handle = await standin.dispatch_interaction("recommend", {"clip": attachment_at(standin, url, "a.wav", data)})
        await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        assert host.requests == ["/files/a.wav"]
        big = clip(9)
        assert len(big) > bot.config.bot.max_attachment_bytes
        host.serve("big.wav", big)
        announced = attachment_at(standin, host.url("big.wav", host="localhost"), "big.wav", data)  # says 3 s
        lying = await standin.dispatch_interaction("recommend", {"clip": announced}, user_id=4242)
        await standin.wait_until(lambda: settled(lying), timeout=WAIT_S)
        assert ephemeral_text(lying) == "big.wav is larger than the limit."

    scenario(world, body, attachment_hosts=("127.0.0.1", "localhost"), max_attachment_bytes=200_000)
