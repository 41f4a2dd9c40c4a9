"""Issue 21, the bot's part: answers, "More" and "More like N" leave gone videos out and keep k matches, name the
others by title and channel (escaped, within Discord's limits), and /about says how many videos were checked. The
real discord.py client against the Discord stand-in, the oEmbed stand-in of tests/test_videos.py, both index
structures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bot_fixtures import WAIT_S, World, bot_for, config_for, make_world
from discord_standin import StandIn, StoredMessage, run
from videos_fixtures import BUDGET_S, YouTubeStandIn, serving_youtube

from musrec.config import Config, load_config
from musrec.index.search import Index
from musrec.pipeline import Musrec
from musrec.recommend.results import Match

WATCH = re.compile(r"watch\?v=([A-Za-z0-9_-]+)&")
FIELD_VALUE_MAX, EMBED_TOTAL_MAX = 1024, 6000  # Discord's limits (REFERENCE.md section 8)
HOSTILE = "**Bold** [link](https://evil.example) @everyone <@123456789012345678> `code` " + "long " * 300


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def world(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> World:
    return make_world(tmp_path_factory, request.param)


@pytest.fixture
def youtube() -> Iterator[YouTubeStandIn]:
    with serving_youtube() as standin:
        yield standin


def checked_config(world: World, standin: StandIn, youtube: YouTubeStandIn, data: Path) -> Config:
    config = config_for(world, standin)
    videos = replace(config.videos, oembed_url=youtube.oembed_url, api_url=youtube.api_url, budget_s=BUDGET_S)
    return replace(config, data=replace(config.data, dir=data), videos=videos)


def unchecked(world: World, source: Any, k: int, **options: Any) -> list[Match]:
    """The best ``k`` matches with the check off."""
    base = load_config(None, environ={})
    off = replace(base, index=replace(base.index, path=world.index), videos=replace(base.videos, check=False))
    musrec = Musrec(config=off, index=Index(world.index), embedder=world.embedder)
    return list(musrec.recommend(source, k=k, **options).matches)


def shown(message: StoredMessage) -> list[str]:
    return [WATCH.search(f["value"]).group(1) for f in message.embeds[0]["fields"]]  # type: ignore[union-attr]


def embed_size(embed: dict[str, Any]) -> int:
    parts = [embed.get("title", ""), embed.get("description", ""), embed.get("footer", {}).get("text", "")]
    parts += [f["name"] + f["value"] for f in embed.get("fields", [])]
    return sum(len(p) for p in parts)


def test_answers_and_their_buttons_leave_gone_videos_out(world: World, youtube: YouTubeStandIn, tmp_path: Path) -> None:
    clip = world.clips[1]
    matches = unchecked(world, clip, 20, start_s=0.0)
    before = [m.video_id for m in matches]
    like_before = [m.video_id for m in unchecked(world, f"audioset:{before[0]}@{matches[0].start_s:g}", 20)]
    gone = {before[1], before[4], *[v for v in like_before if v not in before[:8]][:2]}
    youtube.answers.update(dict.fromkeys(gone, 404))
    youtube.titles[before[0]] = HOSTILE

    async def main(standin: StandIn) -> None:
        client = bot_for(world, checked_config(world, standin, youtube, tmp_path / "data"))
        async with standin.running(client, timeout=WAIT_S):
            attachment = standin.add_attachment("my clip.wav", clip, "audio/wav")
            handle = await standin.dispatch_interaction("recommend", {"clip": attachment, "start": "0", "top_k": 3})
            first = await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
            live = [v for v in before if v not in gone]
            assert shown(first) == live[:3]  # k kept, the next ones in the gone ones' places
            top = first.embeds[0]["fields"][0]["value"]
            # YouTube's text as text: no bold, no link of its own, no mention, cut to fit.
            escaped = r"[\*\*Bold\*\* \(link)(https://evil.example) @" + "\u200beveryone <@\u200b123456789012345678> "
            assert top.startswith(escaped + r"\`code\` long") and "…](https://www.youtube.com/watch?v=" in top
            assert f"· Channel of {before[0]}" in top and len(top) <= FIELD_VALUE_MAX
            assert first.embeds[0]["fields"][1]["value"].startswith(f"[Title of {live[1]}](https://www.youtube.com/")
            assert embed_size(first.embeds[0]) <= EMBED_TOTAL_MAX

            page2 = await (await standin.click(first, label="More")).wait_for_original(
                lambda m: bool(m.embeds), timeout=WAIT_S
            )
            assert shown(page2) == live[3:6]  # consistent with the first page, disjoint from it
            liked = await (await standin.click(first, label="More like 1")).wait_for_original(
                lambda m: bool(m.embeds), timeout=WAIT_S
            )
            page1 = set(shown(first))
            assert shown(liked) == [v for v in like_before if v not in page1 and v not in gone][:3]
            assert set(like_before[:6]) & gone  # (among its candidates were gone ones)

            about = await standin.dispatch_interaction("about")
            await about.wait_for_response()
            assert about.original is not None
            videos = next(f for f in about.original.embeds[0]["fields"] if f["name"] == "Videos")
            checked = len(youtube.requests)
            share = round(100 * len(gone & set(youtube.requests)) / checked)
            assert videos["value"].startswith(f"{checked:,} checked, {share}% of them gone")
        assert not standin.errors and not standin.unexpected

    run(main, timeout=WAIT_S * 3, heartbeat_interval=0.5)
