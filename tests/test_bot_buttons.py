"""Issue 15, the bot's part: "More like N" and "More" buttons under every result (working after a restart, polite
when what they point at is gone, under the same per-user limits as commands), label filters with autocomplete, and
blends. The real discord.py client clicks and types against the Discord stand-in, on both index structures."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from audioset_fixtures import make_segments
from bot_fixtures import WAIT_S, World, bot_for, config_for, ephemeral_text, eventually, make_world
from discord_standin import InteractionHandle, StandIn, StoredMessage, run
from discord_standin.events import buttons

from bot.client import MusrecBot
from bot.results import GONE_SEARCH, GONE_SEGMENT
from bot.work import WorkQueue
from musrec.audioset.labels import default_labels
from musrec.config import Config
from musrec.index.build import BuildOptions, build_index

VIDEO = re.compile(r"youtu\.be/([A-Za-z0-9_-]+)\]")


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def world(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> World:
    return make_world(tmp_path_factory, request.param)


class Counting:
    """The world's embedder, counting its calls: "More" must not embed again."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def embed(self, samples: Any, sample_rate: int = 16000) -> Any:
        self.calls += 1
        return self.inner.embed(samples, sample_rate)


def configured(world: World, standin: StandIn, data: Path, **bot: Any) -> Config:
    config = config_for(world, standin, **bot)
    return replace(config, data=replace(config.data, dir=data))


def scenario(world: World, body: Callable[[StandIn, MusrecBot], Awaitable[None]], tmp_path: Path, **bot: Any) -> None:
    async def main(standin: StandIn) -> None:
        if bot.pop("listen", False):
            bot["listen_channels"] = (str(standin.world.channel_id),)
        client = bot_for(world, configured(world, standin, tmp_path / "data", **bot))
        async with standin.running(client, timeout=WAIT_S):
            await body(standin, client)
        assert not standin.errors and not standin.unexpected

    run(main, timeout=WAIT_S * 3, heartbeat_interval=0.5)


def videos(message: StoredMessage) -> list[str]:
    return [VIDEO.search(f["value"]).group(1) for f in message.embeds[0]["fields"]]  # type: ignore[union-attr]


def labels_of(message: StoredMessage) -> list[str]:
    return [b["label"] for b in buttons(message.data)]


async def answered(handle: InteractionHandle) -> StoredMessage:
    return await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)


async def recommend(standin: StandIn, world: World, user: int | None = None, **options: Any) -> StoredMessage:
    clip = standin.add_attachment("my clip.wav", world.clips[1], "audio/wav")
    handle = await standin.dispatch_interaction(
        "recommend", {"clip": clip, "start": "0", "top_k": 3, **options}, user_id=user
    )
    return await answered(handle)


def test_more_like_a_match_and_more_of_an_uploaded_clip(world: World, tmp_path: Path) -> None:
    counting = Counting(world.embedder)
    world = replace(world, embedder=counting)

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        first = await recommend(standin, world)
        assert labels_of(first) == ["More like 1", "More like 2", "More like 3", "More"]
        assert all(len(b["custom_id"]) <= 100 for b in buttons(first.data))
        shown = videos(first)
        assert shown[0] == "botclip0001"
        embedded = counting.calls

        like = await standin.click(first, label="More like 1")
        liked = await answered(like)
        assert like.deferred is not None and liked.id != first.id  # a new message; the first stays as it was
        assert labels_of(first) == ["More like 1", "More like 2", "More like 3", "More"]
        assert liked.embeds[0]["description"].startswith("AudioSet segment [botclip0001]")
        assert not set(videos(liked)) & set(shown)  # neither the segment nor what was shown
        assert labels_of(liked)[0] == "More like 1" and labels_of(liked)[-1] == "More"

        more = await standin.click(first, label="More")
        page2 = await answered(more)
        assert page2.embeds[0]["description"].startswith("my clip.wav (0:00–0:10)")
        assert "from number 4, leaving out those already shown" in page2.embeds[0]["description"]
        assert [f["name"].split(".")[0] for f in page2.embeds[0]["fields"]] == ["4", "5", "6"]
        assert not set(videos(page2)) & set(shown)
        assert labels_of(page2) == ["More like 4", "More like 5", "More like 6", "More"]
        page3 = await answered(await standin.click(page2, label="More"))
        assert [f["name"].split(".")[0] for f in page3.embeds[0]["fields"]] == ["7", "8", "9"]
        assert not set(videos(page3)) & {*shown, *videos(page2)}
        assert counting.calls == embedded  # "More" searched the remembered rows: nothing embedded again

    scenario(world, body, tmp_path)


def test_buttons_after_a_restart_and_after_a_rebuild(world: World, tmp_path: Path) -> None:
    rebuilt = tmp_path / "rebuilt"
    build_index(make_segments(40, split="eval", seed=7), rebuilt, labels=default_labels(),
                options=BuildOptions(trees=4, backend=world.structure))  # fmt: skip

    async def main(standin: StandIn) -> None:
        config = configured(world, standin, tmp_path / "data")
        async with standin.running(bot_for(world, config), timeout=WAIT_S):
            first = await recommend(standin, world)
        # A new bot object on the same data directory: the buttons of the first one's message still work.
        async with standin.running(bot_for(world, config), timeout=WAIT_S):
            page2 = await answered(await standin.click(first, label="More"))
            assert [f["name"].split(".")[0] for f in page2.embeds[0]["fields"]] == ["4", "5", "6"]
            liked = await answered(await standin.click(first, label="More like 2"))
            assert liked.embeds[0]["description"].startswith("AudioSet segment")
        # The index rebuilt: the search and the segment are gone, and the user is told so, only them.
        moved = replace(config, index=replace(config.index, path=rebuilt))
        async with standin.running(bot_for(replace(world, index=rebuilt), moved), timeout=WAIT_S):
            for label, expected in (("More", GONE_SEARCH), ("More like 1", GONE_SEGMENT)):
                handle = await standin.click(first, label=label, user_id=hash(label) % 10**6)
                await standin.wait_until(lambda h=handle: any(m.ephemeral for m in h.messages), timeout=WAIT_S)
                assert ephemeral_text(handle) == expected + "."
        assert not standin.errors and not standin.unexpected

    run(main, timeout=WAIT_S * 4, heartbeat_interval=0.5)


def test_clicks_have_the_limits_of_commands(world: World, tmp_path: Path) -> None:
    now = [1000.0]
    queue = WorkQueue(workers=1, max_waiting=2, cooldown_s=30.0, timeout_s=WAIT_S, clock=lambda: now[0])

    async def main(standin: StandIn) -> None:
        client = bot_for(world, configured(world, standin, tmp_path / "data"))
        client.queue = queue
        async with standin.running(client, timeout=WAIT_S):
            first = await recommend(standin, world)
            early = await standin.click(first, label="More")
            await early.wait_for_response()
            assert early.deferred is None and ephemeral_text(early).startswith("Please wait 30 s")
            other = await standin.click(first, label="More", user_id=777)  # anyone may click; limits are per user
            await answered(other)
            now[0] += 31.0
            assert (await answered(await standin.click(first, label="More like 3"))).embeds
        assert not standin.errors

    run(main, timeout=WAIT_S * 3, heartbeat_interval=0.5)


def test_posted_clips_get_buttons(world: World, tmp_path: Path) -> None:
    async def body(standin: StandIn, bot: MusrecBot) -> None:
        clip = standin.add_attachment("posted.wav", world.clips[0], "audio/wav")
        posted = await standin.post_message("what is this?", attachments=[clip])
        reply = await posted.wait_for_reply(timeout=WAIT_S)
        assert labels_of(reply)[0] == "More like 1" and labels_of(reply)[-1] == "More"
        await eventually(lambda: bot.queue.pending == 0, what="the posted clip's request released")
        page2 = await answered(await standin.click(reply, label="More"))
        assert not set(videos(page2)) & set(videos(reply))

    scenario(world, body, tmp_path, listen=True)


def test_label_autocomplete_and_filters(world: World, tmp_path: Path) -> None:
    async def body(standin: StandIn, bot: MusrecBot) -> None:
        typed = await standin.autocomplete("recommend", {"label": "roc"}, focused="label")
        await typed.wait_for_response()
        names = [c["name"] for c in typed.choices or []]
        assert "Rock music" in names and all("roc" in n.lower() for n in names) and len(names) <= 25
        anything = await standin.autocomplete("recommend", {"exclude_label": ""}, focused="exclude_label")
        await anything.wait_for_response()
        music = {default_labels().names[i] for i in default_labels().music}
        assert len(anything.choices or []) == 25 and all(c["name"] in music for c in anything.choices or [])

        only = await recommend(standin, world, label="Jazz", exclude_label="Guitar")
        description = only.embeds[0]["description"]
        assert "*only Jazz (or a kind of it)*" in description and "*no Guitar (nor a kind of it)*" in description
        assert all("Jazz" in f["name"] and "Guitar" not in f["name"] for f in only.embeds[0]["fields"])
        assert "botclip0001" not in videos(only)  # labelled Guitar too
        more = await answered(await standin.click(only, label="More"))
        assert "*only Jazz (or a kind of it)*" in more.embeds[0]["description"]  # "More" keeps the filters
        assert all("Jazz" in f["name"] and "Guitar" not in f["name"] for f in more.embeds[0]["fields"])

        clip = standin.add_attachment("a.wav", world.clips[1], "audio/wav")
        wrong = await standin.dispatch_interaction("recommend", {"clip": clip, "label": "Jaz"}, user_id=55)
        await wrong.wait_for_response()
        assert wrong.deferred is None and ephemeral_text(wrong).startswith("Unknown AudioSet label 'Jaz'")
        # Issue 26: a misspelling gets the names close to it, in the refusal and as the user types.
        misspelt = await standin.dispatch_interaction("recommend", {"clip": clip, "label": "Rok music"}, user_id=56)
        await misspelt.wait_for_response()
        assert ephemeral_text(misspelt).startswith("Unknown AudioSet label 'Rok music': did you mean 'Rock music'?")
        typo = await standin.autocomplete("recommend", {"label": "rock musik"}, focused="label")
        await typo.wait_for_response()
        assert [c["name"] for c in typo.choices or []] == ["Rock music"]

    scenario(world, body, tmp_path)


def test_blend_two_clips(world: World, tmp_path: Path) -> None:
    async def body(standin: StandIn, bot: MusrecBot) -> None:
        a = standin.add_attachment("a.wav", world.clips[0], "audio/wav")
        b = standin.add_attachment("b.wav", world.clips[2], "audio/wav")
        handle = await standin.dispatch_interaction(
            "blend", {"first_clip": a, "second_clip": b, "first_start": "0", "second_start": "0", "top_k": 4}
        )
        message = await answered(handle)
        embed = message.embeds[0]
        assert embed["title"] == "Sounds like all of them"
        lines = embed["description"].split("\n")
        assert lines[:3] == ["**1:** a.wav (0:00–0:10)", "**2:** b.wav (0:00–0:10)", "*blend of 2 sounds*"]
        assert {"botclip0000", "botclip0002"} <= set(videos(message))
        for f in embed["fields"]:
            assert re.search(r"close to 1: \d+% · 2: \d+%$", f["value"])
        top = next(f for f in embed["fields"] if "botclip0000" in f["value"])
        assert top["value"].endswith("close to 1: 100% · 2: " + top["value"].rsplit("2: ", 1)[1])
        assert labels_of(message) == ["More like 1", "More like 2", "More like 3", "More like 4", "More"]
        liked = await answered(await standin.click(message, label="More like 1"))
        assert not set(videos(liked)) & set(videos(message))

        half = await standin.dispatch_interaction("blend", {"first_clip": a}, user_id=56)
        await half.wait_for_response()
        assert "second sound: give exactly one of" in ephemeral_text(half).lower()

    scenario(world, body, tmp_path)


def test_more_of_a_blend_and_a_filtered_blend(world: World, tmp_path: Path) -> None:
    counting = Counting(world.embedder)
    world = replace(world, embedder=counting)

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        a = standin.add_attachment("a.wav", world.clips[0], "audio/wav")
        b = standin.add_attachment("b.wav", world.clips[2], "audio/wav")
        options = {"first_clip": a, "second_clip": b, "first_start": "0", "second_start": "0", "top_k": 3}
        first = await answered(await standin.dispatch_interaction("blend", options))
        embedded = counting.calls
        page2 = await answered(await standin.click(first, label="More"))
        embed = page2.embeds[0]
        assert embed["title"] == "Sounds like all of them"
        lines = embed["description"].split("\n")
        assert lines[:3] == ["**1:** a.wav (0:00–0:10)", "**2:** b.wav (0:00–0:10)", "*blend of 2 sounds*"]
        assert "*more results: from number 4, leaving out those already shown*" in lines
        assert [f["name"].split(".")[0] for f in embed["fields"]] == ["4", "5", "6"]
        assert all(re.search(r"close to 1: \d+% · 2: \d+%$", f["value"]) for f in embed["fields"])
        assert not set(videos(page2)) & set(videos(first))
        assert labels_of(page2) == ["More like 4", "More like 5", "More like 6", "More"]
        page3 = await answered(await standin.click(page2, label="More"))
        assert [f["name"].split(".")[0] for f in page3.embeds[0]["fields"]] == ["7", "8", "9"]
        assert not set(videos(page3)) & {*videos(first), *videos(page2)}
        assert counting.calls == embedded  # the remembered sounds were blended again, not embedded

        typed = await standin.autocomplete("blend", {"label": "jaz"}, focused="label")
        await typed.wait_for_response()
        assert "Jazz" in [c["name"] for c in typed.choices or []]
        only = {**options, "label": "Jazz", "exclude_label": "Guitar", "music_only": True}
        filtered = await answered(await standin.dispatch_interaction("blend", only, user_id=57))
        description = filtered.embeds[0]["description"]
        assert "*only Jazz (or a kind of it)*" in description and "*no Guitar (nor a kind of it)*" in description
        assert filtered.embeds[0]["fields"]
        assert all("Jazz" in f["name"] and "Guitar" not in f["name"] for f in filtered.embeds[0]["fields"])
        more = await answered(await standin.click(filtered, label="More", user_id=57))
        assert "*only Jazz (or a kind of it)*" in more.embeds[0]["description"]  # "More" keeps the filters
        assert all("Jazz" in f["name"] and "Guitar" not in f["name"] for f in more.embeds[0]["fields"])
        assert not set(videos(more)) & set(videos(filtered))

        wrong = await standin.dispatch_interaction("blend", {**options, "label": "Jaz"}, user_id=58)
        await wrong.wait_for_response()
        assert wrong.deferred is None and ephemeral_text(wrong).startswith("Unknown AudioSet label 'Jaz'")

    scenario(world, body, tmp_path)
