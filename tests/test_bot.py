"""The Discord bot end to end: the real discord.py client against a Discord stand-in on 127.0.0.1, with the real
musrec library underneath (a random-weight VGGish and a small index)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from audio_fixtures import ffmpeg
from bot_fixtures import (
    WAIT_S,
    World,
    all_handled,
    bot_for,
    config_for,
    ephemeral_text,
    eventually,
    make_world,
    scenario,
)
from discord_standin import StandIn, run
from vggish_fixtures import distinct_clip
from youtube_fixtures import drip_server, media_server, stepped_tones

from bot.client import MusrecBot, command_payload
from musrec.audio.decode import decode
from musrec.audio.wav import to_wav_bytes

RATE = 16000


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def world(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> World:
    """The bot's world on each index structure: Annoy (small indexes) and IVF (what the full AudioSet builds)."""
    return make_world(tmp_path_factory, request.param)


def test_recommend_a_clip(world: World) -> None:
    async def body(standin: StandIn, bot: MusrecBot) -> None:
        clip = standin.add_attachment("my clip.wav", world.clips[1], "audio/wav")
        handle = await standin.dispatch_interaction("recommend", {"clip": clip, "top_k": 3, "start": "0"})
        await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        assert handle.deferred is not None  # acknowledged at once, answered later
        message = handle.original
        assert not message.ephemeral and not message.deleted
        embed = message.embeds[0]
        assert embed["title"] == "Sounds like this"
        assert embed["description"].startswith("my clip.wav (0:00–0:10)")
        assert len(embed["fields"]) == 3
        top = embed["fields"][0]
        assert top["name"].startswith("1. 100% · Guitar, Jazz")
        assert "https://www.youtube.com/watch?v=botclip0001&t=0s" in top["value"] and "0:00–0:10" in top["value"]
        assert "203 AudioSet segments searched" in embed["footer"]["text"]
        assert not standin.unexpected

    scenario(world, body)


def test_a_long_mp3_without_a_start_is_answered_from_its_loudest_part(world: World, tmp_path: Path) -> None:
    """A minute of MP3 (a quiet 30 s, the clip, a quiet 20 s) posted without a start: the window is the clip's."""
    rng = np.random.default_rng(7)
    clip = decode(world.clips[1]).samples[: 10 * RATE].astype(np.float64)
    quiet = 0.003 * rng.standard_normal(50 * RATE)
    wav = tmp_path / "long.wav"
    wav.write_bytes(to_wav_bytes(np.concatenate([quiet[: 30 * RATE], clip, quiet[30 * RATE :]])))
    mp3 = tmp_path / "long.mp3"
    ffmpeg("-i", str(wav), "-ar", "44100", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "192k", str(mp3))

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        attachment = standin.add_attachment("long.mp3", mp3.read_bytes(), "audio/mpeg")
        handle = await standin.dispatch_interaction("recommend", {"clip": attachment, "top_k": 3})
        await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        embed = handle.original.embeds[0]
        assert embed["description"].startswith("long.mp3 (0:30–0:40)")
        assert "watch?v=botclip0001&t=0s" in embed["fields"][0]["value"]

    scenario(world, body)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "Give exactly one of `clip` (a file) or `link` (a YouTube link)."),
        ({"link": "https://youtu.be/dQw4w9WgXcQ", "clip": "ATTACHMENT"}, "Give exactly one of `clip`"),
        ({"clip": "ATTACHMENT", "start": "soon"}, "'soon' is not a start time: write it like 90, 1:30 or 1m30s."),
        ({"link": "https://example.com/song.mp3"}, "Links to example.com are not supported."),
        ({"clip": "TEXT"}, "notes.txt does not look like audio or video"),
        ({"clip": "HUGE"}, "the limit is 1 MiB"),
    ],
)
def test_bad_requests_get_an_ephemeral_answer_without_work(
    world: World, options: dict[str, Any], expected: str
) -> None:
    async def body(standin: StandIn, bot: MusrecBot) -> None:
        resolved = dict(options)
        for key, value in options.items():
            if value == "ATTACHMENT":
                resolved[key] = standin.add_attachment("a.wav", world.clips[0], "audio/wav")
            elif value == "TEXT":
                resolved[key] = standin.add_attachment("notes.txt", b"hello", "text/plain")
            elif value == "HUGE":
                resolved[key] = standin.add_attachment("big.wav", b"\0" * (2 << 20), "audio/wav")
        handle = await standin.dispatch_interaction("recommend", resolved)
        await handle.wait_for_response()
        assert handle.deferred is None  # refused before deferring: nothing downloaded, nothing queued
        assert expected in ephemeral_text(handle)
        assert not [c for c in standin.recorded if "/attachments/" in c.path]
        assert bot.queue.pending == 0

    scenario(world, body, max_attachment_bytes=1 << 20)


def test_corrupt_audio_is_reported_privately_after_deferring(world: World) -> None:
    async def body(standin: StandIn, bot: MusrecBot) -> None:
        clip = standin.add_attachment("song.mp3", b"ID3" + b"\x17garbage" * 500, "audio/mpeg")
        handle = await standin.dispatch_interaction("recommend", {"clip": clip})
        await standin.wait_until(lambda: any(m.ephemeral for m in handle.messages), timeout=WAIT_S)
        assert handle.deferred is not None
        assert handle.original is not None and handle.original.deleted  # the public "thinking" message is gone
        assert ephemeral_text(handle) == "Could not read this as audio."

    scenario(world, body)


def test_unexpected_errors_are_logged_and_answered_generically(world: World, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def embed(self, samples: Any, sample_rate: int = RATE) -> Any:
            raise RuntimeError("internal detail: /secret/path")

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        clip = standin.add_attachment("a.wav", world.clips[0], "audio/wav")
        handle = await standin.dispatch_interaction("recommend", {"clip": clip})
        await standin.wait_until(lambda: any(m.ephemeral for m in handle.messages), timeout=WAIT_S)
        text = ephemeral_text(handle)
        assert text.startswith("Sorry, something went wrong on my side") and "secret" not in text

    with caplog.at_level(logging.ERROR, logger="bot"):
        scenario(world, body, embedder=Broken())
    assert any("internal detail" in (r.exc_text or "") for r in caplog.records)


def test_recommend_a_link_fetches_only_the_window_and_caches_it(world: World, tmp_path: Path) -> None:
    wav = tmp_path / "clip1.wav"
    wav.write_bytes(to_wav_bytes(distinct_clip(1, 40.0)))
    ffmpeg("-i", str(wav), "-c:a", "aac", "-b:a", "128k", str(tmp_path / "clip1.m4a"))

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        with media_server(tmp_path) as media:
            url = media.media("clip1.m4a")
            first = await standin.dispatch_interaction("recommend", {"link": f"listen <{url}>", "start": "0:00"})
            await first.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
            embed = first.original.embeds[0]
            assert "botclip0001" in embed["fields"][0]["value"]
            assert embed["description"].startswith(f"[clip1]({url}) (0:00–0:10)")
            fetched = media.count("/media/")
            assert fetched > 0
            again = await standin.dispatch_interaction("recommend", {"link": url, "start": "0"}, user_id=4321)
            await again.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
            assert media.count("/media/") == fetched  # answered from the embedding cache
            gone = await standin.dispatch_interaction("recommend", {"link": media.media("nope.m4a")}, user_id=99)
            await standin.wait_until(lambda: any(m.ephemeral for m in gone.messages), timeout=WAIT_S)
            assert ephemeral_text(gone) == "Nothing was found at that link (HTTP 404)."

    scenario(world, body)


def test_a_trickling_link_is_given_up_at_the_fetch_deadline(world: World, tmp_path: Path) -> None:
    """A link whose server keeps the download trickling (never stalling as long as the socket timeout) is answered
    with a timeout once ``fetch_timeout_s`` has passed: the worker is not held for as long as the server likes."""
    mp3 = stepped_tones(tmp_path / "tones.mp3", seconds=60, codec="mp3")

    async def main(standin: StandIn) -> None:
        config = config_for(world, standin)
        config = replace(config, youtube=replace(config.youtube, fetch_timeout_s=2.0))
        client = bot_for(world, config)
        with drip_server(mp3.read_bytes()) as drip:
            async with standin.running(client, timeout=WAIT_S):
                handle = await standin.dispatch_interaction("recommend", {"link": drip.url, "start": "0:00"})
                await standin.wait_until(lambda: any(m.ephemeral for m in handle.messages), timeout=WAIT_S)
                assert ephemeral_text(handle) == "The download timed out; try again."
                assert drip.sent < len(drip.body) / 2
        assert not standin.errors

    run(main, timeout=WAIT_S * 2, heartbeat_interval=0.5)


def test_links_elsewhere_are_refused(world: World) -> None:
    async def body(standin: StandIn, bot: MusrecBot) -> None:
        for link, expected in [
            ("https://www.youtube.com/playlist?list=PL0123456789", "playlists are not supported"),
            ("http://10.0.0.1/admin", "links to ip addresses are not accepted"),
            ("no link at all", "that is not a link"),
        ]:
            handle = await standin.dispatch_interaction("recommend", {"link": link}, user_id=hash(link) % 10**6)
            await handle.wait_for_response()
            assert handle.deferred is None and expected in ephemeral_text(handle).lower()

    scenario(world, body)


def test_compare_two_clips_with_a_picture(world: World) -> None:
    async def body(standin: StandIn, bot: MusrecBot) -> None:
        a = standin.add_attachment("a.wav", world.clips[0], "audio/wav")
        b = standin.add_attachment("b.wav", world.clips[0], "audio/wav")
        handle = await standin.dispatch_interaction("compare", {"first_clip": a, "second_clip": b})
        await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        embed = handle.original.embeds[0]
        assert embed["title"] == "100% alike"
        assert embed["image"]["url"] == "attachment://similarity.png"
        png = handle.original.file("similarity.png").data
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 200

    scenario(world, body)


def test_about(world: World) -> None:
    async def body(standin: StandIn, bot: MusrecBot) -> None:
        handle = await standin.dispatch_interaction("about")
        await handle.wait_for_response()
        embed = handle.original.embeds[0]
        assert embed["fields"][0]["value"].startswith("203 segments")
        assert "AudioSet (CC BY 4.0)" in embed["footer"]["text"]

    scenario(world, body)


def test_queue_under_many_concurrent_requests(world: World) -> None:
    """Eight users at once with one worker and two places to wait: each gets one clear outcome, promptly."""

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        users = [9000 + i for i in range(8)]
        handles = []
        for user in users:
            clip = standin.add_attachment("a.wav", world.clips[2], "audio/wav")
            handles.append(await standin.dispatch_interaction("recommend", {"clip": clip}, user_id=user))
        # A second request from a user still waiting is refused at once.
        again = standin.add_attachment("a.wav", world.clips[2], "audio/wav")
        repeat = await standin.dispatch_interaction("recommend", {"clip": again}, user_id=users[0])
        await repeat.wait_for_response()
        assert "You already have a request in progress" in ephemeral_text(repeat)

        def settled(h: Any) -> bool:
            return any(m.embeds for m in h.messages) or any(m.ephemeral for m in h.messages)

        await standin.wait_until(lambda: all(settled(h) for h in handles), timeout=WAIT_S * 2)
        answered = [h for h in handles if h.original is not None and h.original.embeds and not h.original.deleted]
        busy = [h for h in handles if h.deferred is None]
        assert len(answered) == 3 and len(busy) == 5  # one working + two waiting; the rest told at once
        for h in busy:
            assert "you would be number" in ephemeral_text(h) and "which is full" in ephemeral_text(h)
        # Those that waited saw their place in line before the answer replaced it.
        waited = [
            h for h in answered if any("in the queue" in ((p or {}).get("content") or "") for p in h.original.payloads)
        ]
        assert len(waited) == 2
        # The last answer is recorded a moment before its request releases its place.
        await eventually(lambda: bot.queue.pending == 0, what="every place released")

    scenario(world, body, workers=1, max_waiting=2)


def test_heartbeats_continue_while_the_model_works(world: World) -> None:
    """Model work runs in worker threads: the gateway connection stays alive through a long request."""

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        long_clip = to_wav_bytes(distinct_clip(1, 240.0))
        clip = standin.add_attachment("long.wav", long_clip, "audio/wav")
        before = standin.gateway.heartbeats
        started = time.monotonic()
        handle = await standin.dispatch_interaction("recommend", {"clip": clip})
        await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        elapsed = time.monotonic() - started
        beats = standin.gateway.heartbeats - before
        assert beats >= int(elapsed / 0.5) - 2  # one every 0.5 s throughout
        assert bot.latency < 5

    scenario(world, body)


def test_posted_clips_in_listened_channels(world: World) -> None:
    async def body(standin: StandIn, bot: MusrecBot) -> None:
        clip = standin.add_attachment("posted.wav", world.clips[0], "audio/wav")
        posted = await standin.post_message("what is this?", attachments=[clip])
        reply = await posted.wait_for_reply(timeout=WAIT_S)
        assert reply.embeds[0]["title"] == "Sounds like this"
        assert "botclip0000" in reply.embeds[0]["fields"][0]["value"]
        chatter = await standin.post_message("just talking, no audio here")
        await all_handled(standin)
        assert not chatter.replies

    async def wrapped(standin: StandIn, bot: MusrecBot) -> None:
        await body(standin, bot)

    async def main(standin: StandIn) -> None:
        config = config_for(world, standin, listen=True)
        client = bot_for(world, config)
        assert client.intents.message_content
        async with standin.running(client, timeout=WAIT_S):
            await wrapped(standin, client)

    run(main, timeout=WAIT_S * 2, heartbeat_interval=0.5)


def test_a_refused_posted_clip_starts_no_cooldown(world: World) -> None:
    """A posted file too large to read is refused at once, without taking the user's turn: the next post is
    answered, although the cooldown is long. The answered one starts it: a third post is told to wait."""

    async def body(standin: StandIn, bot: MusrecBot) -> None:
        huge = standin.add_attachment("huge.wav", b"\0" * (2 << 20), "audio/wav")
        refused = await standin.post_message("this one?", attachments=[huge])
        reply = await refused.wait_for_reply(timeout=WAIT_S)
        assert "the limit is 1 MiB" in reply.content and not reply.embeds
        clip = standin.add_attachment("posted.wav", world.clips[0], "audio/wav")
        posted = await standin.post_message("and this?", attachments=[clip])
        answer = await posted.wait_for_reply(timeout=WAIT_S)
        assert answer.embeds and answer.embeds[0]["title"] == "Sounds like this"
        again = await standin.post_message("one more", attachments=[clip])
        assert "wait" in (await again.wait_for_reply(timeout=WAIT_S)).content

    async def main(standin: StandIn) -> None:
        listen = (str(standin.world.channel_id),)
        config = config_for(world, standin, listen_channels=listen, cooldown_s=600.0, max_attachment_bytes=2**20)
        client = bot_for(world, config)
        async with standin.running(client, timeout=WAIT_S):
            await body(standin, client)

    run(main, timeout=WAIT_S * 2, heartbeat_interval=0.5)


def test_unlistened_channels_and_default_intents(world: World) -> None:
    async def body(standin: StandIn, bot: MusrecBot) -> None:
        assert not bot.intents.message_content  # slash commands need no privileged intent
        clip = standin.add_attachment("posted.wav", world.clips[0], "audio/wav")
        posted = await standin.post_message("", attachments=[clip])
        await all_handled(standin)
        assert not posted.replies

    scenario(world, body)


def test_owner_sync_sends_exactly_the_printed_payload(world: World) -> None:
    async def body(standin: StandIn, bot: MusrecBot) -> None:
        mention = f"<@{standin.world.application_id}> sync"
        stranger = await standin.post_message(mention, author=424242)
        assert (await stranger.wait_for_reply()).content == "Only the bot's owner can do that."
        owner = await standin.post_message(mention, author=standin.world.user_id)
        reply = await owner.wait_for_reply(timeout=WAIT_S)
        assert reply.content.startswith("Synced 5 commands to guild")
        synced = standin.commands[standin.world.guild_id]
        expected = await command_payload(bot.config)
        assert [c["name"] for c in synced] == ["recommend", "blend", "compare", "about", "library"]
        assert json.loads(json.dumps(expected)) == [{k: v for k, v in c.items() if k in expected[0]} for c in synced]

    scenario(world, body, owner_ids=())


def test_print_commands_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bot", "print-commands"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent,
    )
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert {c["name"] for c in payload} == {"recommend", "blend", "compare", "about", "library"}
    recommend = next(c for c in payload if c["name"] == "recommend")
    assert [o["name"] for o in recommend["options"]] == [
        "clip", "link", "start", "top_k", "music_only", "label", "exclude_label", "source"
    ]  # fmt: skip
    assert [o.get("autocomplete", False) for o in recommend["options"]][-3:] == [True, True, False]
    # Issue 23: every text option has a length Discord's client keeps to (an option with choices sends one of them).
    lengths = {o["name"]: o.get("max_length") for c in payload for o in c["options"] if o["type"] == 3 and
               "choices" not in o}  # fmt: skip
    assert lengths == {
        "link": 2048, "start": 32, "label": 100, "exclude_label": 100, "first_link": 2048, "second_link": 2048,
        "third_link": 2048, "first_start": 32, "second_start": 32, "third_start": 32,
    }  # fmt: skip
    blend = next(c for c in payload if c["name"] == "blend")
    assert [o["name"] for o in blend["options"]][:6] == [
        "first_clip", "first_link", "second_clip", "second_link", "third_clip", "third_link"
    ]  # fmt: skip
    assert out.stderr == ""


def test_missing_token_is_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "bot"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "musrec-bot: set MUSREC_DISCORD_TOKEN to your bot's token (Discord developer portal > Bot > Reset Token)"
    )


def test_main_entry_serves_and_shuts_down_on_sigterm(world: World, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The production start-up path (`python -m bot`'s _serve): loads musrec from the configuration, answers, and a
    SIGTERM closes the connection and returns cleanly."""
    import os
    import signal

    from vggish_fixtures import shared_vggish_files

    from bot.__main__ import _prepare, _serve

    files = shared_vggish_files(tmp_path_factory)

    async def main(standin: StandIn) -> None:
        base = config_for(world, standin)
        config = replace(
            base,
            embedder=replace(base.embedder, checkpoint=files.checkpoint, pca_params=files.pca_column),
            setup=replace(base.setup, checkpoint_sha512="", pca_sha512=""),  # a model of our own
        )
        before = (world.index / "manifest.json").stat().st_mtime_ns
        await asyncio.to_thread(_prepare, config)  # issue 12: start-up accepts the index as it is, IVF too
        assert (world.index / "manifest.json").stat().st_mtime_ns == before
        served = asyncio.create_task(_serve(config, standin.token))
        await standin.wait_until(lambda: standin.gateway.identifies >= 1, timeout=WAIT_S)
        handle = None
        for _ in range(200):  # READY, then the guild: wait until the bot answers
            handle = await standin.dispatch_interaction("about")
            try:
                await handle.wait_for_response(timeout=1.0)
                break
            except AssertionError:
                continue
        assert handle is not None and handle.original is not None and handle.original.embeds
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(served, timeout=WAIT_S)
        # One gateway connection, the session that identified (issue 22: no probe before it): the bot closed it.
        assert standin.gateway.identifies == 1 and len(standin.gateway.close_codes) == 1

    run(main, timeout=WAIT_S * 3, heartbeat_interval=0.5)


def test_posted_clips_answered_in_a_thread(world: World) -> None:
    async def main(standin: StandIn) -> None:
        config = config_for(world, standin, listen=True, reply_mode="thread")
        client = bot_for(world, config)
        async with standin.running(client, timeout=WAIT_S):
            link_free = standin.add_attachment("tune.wav", world.clips[2], "audio/wav")
            await standin.post_message("", attachments=[link_free])

            def in_thread() -> list[Any]:
                return [m for m in standin.bot_messages() if m.embeds and m.channel_id != standin.world.channel_id]

            await standin.wait_until(lambda: bool(in_thread()), timeout=WAIT_S)
            answer = in_thread()[0]
            assert "botclip0002" in answer.embeds[0]["fields"][0]["value"]
            assert standin.calls(method="POST", route="thread_from_message") or any(
                "/threads" in c.path for c in standin.recorded
            )

    run(main, timeout=WAIT_S * 2, heartbeat_interval=0.5)
