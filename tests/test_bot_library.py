"""Issue 25, the bot's part: a library of its own tracks per server (/library add, remove, list; /recommend
source:library; the buttons under its results).

The real discord.py client against the Discord stand-in on loopback, with the real Milvus Lite underneath (no mock),
the random-weight VGGish and tracks made here: who may change a library (Manage Server, or the configured role),
its limits (the attachment checks, the per-server quota), two servers that never see each other's tracks, and file
names and tags shown as they are named, pinging nobody. Adding, searching, removing and two servers' isolation also
run on Milvus standalone with authentication (tests/milvus_servers.py). A Milvus server that refuses the token is
the gRPC stand-in of tests/milvus_standin.py (Milvus Lite has no authentication).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from audio_fixtures import FORMATS, ffmpeg
from bot_fixtures import RATE, WAIT_S, ZWSP, World, bot_for, config_for, ephemeral_text, make_world, named
from conftest import child_environment
from discord_standin import InteractionHandle, StandIn, StoredMessage, run
from discord_standin.events import buttons
from discord_standin.objects import MANAGE_GUILD, MEMBER_PERMISSIONS, MENTION_EVERYONE
from milvus_servers import STANDALONE_TOKEN, Server, standalone_server
from milvus_standin import refusing_milvus
from vggish_fixtures import distinct_clip
from youtube_fixtures import media_server

from bot.client import MusrecBot, command_payload
from bot.libraries import UNAVAILABLE
from musrec.audio.decode import decode
from musrec.audio.wav import to_wav_bytes
from musrec.audio.window import Window
from musrec.library.segments import Segments
from musrec.library.tracks import TrackInfo

TRACK_S = 30.0
MANAGER, MEMBER, DJ = 5001, 5002, 5003
Body = Callable[[StandIn, MusrecBot, list[int]], Awaitable[None]]


@pytest.fixture(scope="module")
def annoy_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Where the AudioSet side does not matter: one index structure."""
    return make_world(tmp_path_factory, "annoy")


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def world(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> World:
    """Where /recommend's default source matters: both AudioSet index structures."""
    return make_world(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("milvus-standalone")
    with standalone_server(root, child_environment(root / "home")) as running:
        yield running


COLLECTIONS = itertools.count()


@pytest.fixture(params=["lite", "standalone"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Where the libraries live, as ``scenario(library=...)`` takes it: Milvus Lite in the bot's data directory (the
    default), or Milvus standalone (its token in MUSREC_LIBRARY_TOKEN), in collections of this test's own."""
    if request.param == "lite":
        return {}
    server: Server = request.getfixturevalue("standalone")
    monkeypatch.setenv("MUSREC_LIBRARY_TOKEN", STANDALONE_TOKEN)
    return {"uri": server.uri, "collection": f"bot{next(COLLECTIONS)}"}


@pytest.fixture(scope="module")
def tracks() -> list[bytes]:
    """Three 30-s tracks (WAV) unlike each other and unlike the AudioSet clips of the world."""
    return [to_wav_bytes(distinct_clip(i, TRACK_S)) for i in (3, 4, 5)]


def excerpt(track: bytes, start_s: float) -> bytes:
    """The 10 s of ``track`` from ``start_s``, as a file of its own (the same samples)."""
    samples = decode(track).samples
    return to_wav_bytes(samples[int(start_s * RATE) : int((start_s + 10) * RATE)])


def scenario(
    world: World,
    body: Body,
    tmp_path: Path,
    *,
    guilds: int = 1,
    library: dict[str, Any] | None = None,
    permissions: int = MEMBER_PERMISSIONS,
    **bot: Any,
) -> None:
    """Run ``body(standin, bot, guild_ids)`` against a bot in ``guilds`` servers (the first is the stand-in's own),
    its commands registered as a sync registers them, its library in ``tmp_path``; MANAGER has Manage Server in
    every server, DJ the role "DJ" in the first."""

    async def main(standin: StandIn) -> None:
        guild_ids = [standin.world.guild_id, *(standin.world.add_guild()[0] for _ in range(guilds - 1))]
        standin.world.permissions_of[MANAGER] = MEMBER_PERMISSIONS | MANAGE_GUILD
        standin.world.give_role(DJ, standin.world.add_role("DJ"))  # a role no permission of its own
        config = config_for(world, standin, **bot)
        config = replace(
            config, data=replace(config.data, dir=tmp_path / "data"), library=replace(config.library, **(library or {}))
        )
        standin.register_commands(await command_payload(config))
        client = bot_for(world, config)
        async with standin.running(client, timeout=WAIT_S):
            await body(standin, client, guild_ids)
        assert not standin.errors and not standin.unexpected

    run(main, timeout=WAIT_S * 5, heartbeat_interval=0.5, bot_permissions=permissions)


async def add(
    standin: StandIn, data: bytes, filename: str = "track.wav", *, user: int = MANAGER, guild: int | None = None
) -> InteractionHandle:
    clip = standin.add_attachment(filename, data, "audio/wav")
    return await standin.dispatch_interaction("library add", {"clip": clip}, user_id=user, guild_id=guild)


async def answered(handle: InteractionHandle) -> StoredMessage:
    return await handle.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)


async def refused(standin: StandIn, handle: InteractionHandle) -> str:
    """The private refusal of ``handle`` (its only visible message)."""
    await standin.wait_until(lambda: any(m.ephemeral and m.content for m in handle.messages), timeout=WAIT_S)
    return ephemeral_text(handle)


async def listed(standin: StandIn, *, guild: int | None = None, user: int = MEMBER) -> str:
    handle = await standin.dispatch_interaction("library list", {}, user_id=user, guild_id=guild)
    message = await answered(handle)
    assert message.ephemeral  # only the one who asked sees the list
    return str(message.embeds[0]["description"])


async def search(
    standin: StandIn, data: bytes, *, guild: int | None = None, user: int = MEMBER, top_k: int = 3
) -> StoredMessage:
    clip = standin.add_attachment("excerpt.wav", data, "audio/wav")
    options = {"clip": clip, "start": "0", "top_k": top_k, "source": "library"}
    return await answered(await standin.dispatch_interaction("recommend", options, user_id=user, guild_id=guild))


def name_of(field: dict[str, Any]) -> str:
    """A match's track, as its field names it ("1. 100% · Title — Artist")."""
    return str(field["name"]).split(" · ", 1)[1]


def labels_of(message: StoredMessage) -> list[str]:
    return [b["label"] for b in buttons(message.data)]


def downloads(standin: StandIn) -> int:
    return len([c for c in standin.recorded if "/attachments/" in c.path])


def test_a_server_adds_searches_and_removes_its_tracks(annoy_world: World, tracks: list[bytes], tmp_path: Path,
                                                       store: dict[str, Any]) -> None:  # fmt: skip
    """A manager adds three tracks (the same content again adds nothing), a member lists them and finds a track by
    an excerpt of itself, at the excerpt's place; "More like 1" and "More" answer from the library; a removed track
    is found no more."""

    async def body(standin: StandIn, bot: MusrecBot, guilds: list[int]) -> None:
        first = await answered(await add(standin, tracks[0], "first.wav"))
        assert first.embeds[0]["title"] == "Added to this server's library" and not first.ephemeral
        assert "first" in first.embeds[0]["description"] and "0:30" in first.embeds[0]["description"]
        for i, data in enumerate(tracks[1:], start=2):
            await answered(await add(standin, data, f"track {i}.wav"))
        again = await answered(await add(standin, tracks[0], "renamed copy.wav"))
        assert again.embeds[0]["title"] == "Already in this server's library"
        assert "first" in again.embeds[0]["description"]  # the track already there, not the copy's name
        shown = await listed(standin)
        assert [line.split(" ", 1)[1].split(" · ")[0] for line in shown.splitlines()] == ["first", "track 2", "track 3"]

        found = await search(standin, excerpt(tracks[1], 10.0), top_k=2)
        embed = found.embeds[0]
        assert embed["title"] == "Sounds like this, in this server's library"
        assert embed["fields"][0]["name"].startswith("1. 100% · track 2")
        assert "0:10–0:20" in embed["fields"][0]["value"]
        assert len(embed["fields"]) == 2
        assert "3 tracks in this server's library" in embed["footer"]["text"]
        assert labels_of(found) == ["More like 1", "More like 2", "More"]
        shown = {name_of(f) for f in embed["fields"]}
        (third,) = {"first", "track 2", "track 3"} - shown

        # "More like 1": other tracks like track 2's segment, leaving out what was shown (as AudioSet's button does).
        like = await answered(await standin.click(found, label="More like 1", user_id=MEMBER))
        assert like.embeds[0]["description"].startswith("track 2 (0:10–0:20)")
        assert [name_of(f) for f in like.embeds[0]["fields"]] == [third]
        more = await answered(await standin.click(found, label="More", user_id=MEMBER))
        assert "from number 3" in more.embeds[0]["description"]
        assert [f["name"].split(".")[0] for f in more.embeds[0]["fields"]] == ["3"]
        assert [name_of(f) for f in more.embeds[0]["fields"]] == [third]
        last = await answered(await standin.click(more, label="More", user_id=MEMBER))
        assert "No more matches." in last.embeds[0]["description"] and not last.embeds[0].get("fields")

        track_id = embed["fields"][0]["value"].rsplit("`", 2)[1]
        gone = await answered(
            await standin.dispatch_interaction("library remove", {"track": track_id}, user_id=MANAGER)
        )
        assert gone.embeds[0]["description"].startswith("Removed track 2 (`")
        assert "track 2" not in await listed(standin)
        after = await search(standin, excerpt(tracks[1], 10.0))
        assert not any("track 2" in f["name"] for f in after.embeds[0]["fields"])
        stale = await standin.click(found, label="More like 1", user_id=MEMBER)
        assert "no longer in this server's library" in await refused(standin, stale)

    scenario(annoy_world, body, tmp_path, library=store)


def test_two_servers_never_see_each_others_tracks(annoy_world: World, tracks: list[bytes], tmp_path: Path,
                                                  store: dict[str, Any]) -> None:  # fmt: skip
    async def body(standin: StandIn, bot: MusrecBot, guilds: list[int]) -> None:
        one, two = guilds
        await answered(await add(standin, tracks[0], "ours.wav", guild=one))
        await answered(await add(standin, tracks[1], "theirs.wav", guild=two))
        assert "ours" in await listed(standin, guild=one) and "theirs" not in await listed(standin, guild=one)
        assert "theirs" in await listed(standin, guild=two) and "ours" not in await listed(standin, guild=two)
        # An excerpt of the first server's track, searched in the second: only the second's track is there.
        found = await search(standin, excerpt(tracks[0], 0.0), guild=two)
        assert [name_of(f) for f in found.embeds[0]["fields"]] == ["theirs"]
        ours = (await search(standin, excerpt(tracks[0], 0.0), guild=one)).embeds[0]["fields"][0]
        our_id = ours["value"].rsplit("`", 2)[1]
        # The second server cannot remove, nor be offered, the first's track.
        choices = await standin.autocomplete("library remove", {"track": ""}, focused="track", user_id=MANAGER,
                                             channel_id=_channel_of(standin, two))  # fmt: skip
        await standin.wait_until(lambda: choices.choices is not None, timeout=WAIT_S)
        assert [c["name"].split(" · ")[0] for c in choices.choices or []] == ["theirs"]
        handle = await standin.dispatch_interaction("library remove", {"track": our_id}, user_id=MANAGER, guild_id=two)
        assert (await refused(standin, handle)).startswith(f"`{our_id}` names no one track of this server's library")
        assert "ours" in await listed(standin, guild=one)

    scenario(annoy_world, body, tmp_path, guilds=2, library=store)


def _channel_of(standin: StandIn, guild_id: int) -> int:
    return next(c for c, data in standin.world.channels.items() if int(data["guild_id"]) == guild_id)


def test_only_managers_change_a_library(annoy_world: World, tracks: list[bytes], tmp_path: Path) -> None:
    """Adding and removing need Manage Server or the configured role (by name or id); a member without either is
    told so privately, before anything is downloaded; anyone may list and search."""

    async def body(standin: StandIn, bot: MusrecBot, guilds: list[int]) -> None:
        handle = await add(standin, tracks[0], user=MEMBER)
        text = await refused(standin, handle)
        assert text == "Only members with Manage Server or the dj role may change this server's library."
        assert handle.deferred is None and downloads(standin) == 0
        added = await answered(await add(standin, tracks[0], "by the dj.wav", user=DJ))
        track_id = added.embeds[0]["description"].rsplit("`", 2)[1]
        removal = await standin.dispatch_interaction("library remove", {"track": track_id}, user_id=MEMBER)
        assert (await refused(standin, removal)).startswith("Only members with Manage Server")
        assert "by the dj" in await listed(standin, user=MEMBER)
        await answered(await standin.dispatch_interaction("library remove", {"track": track_id}, user_id=MANAGER))
        assert "No tracks yet" in await listed(standin)

    scenario(annoy_world, body, tmp_path, library={"manage_role": "dj"})


def test_limits_quota_and_names(annoy_world: World, tracks: list[bytes], tmp_path: Path) -> None:
    """A damaged file is refused in the decoder's words (nothing of the spool's paths); a full library refuses
    before downloading; a file over the size limit, or not audio, is refused as every attachment is; a track that
    does not name one is refused; a hostile file name shows as it is named and pings nobody, in a server where the
    bot may ping everyone; an empty library says so before any decoding."""
    hostile = "@everyone [x](https://evil.example) **loud**.wav"

    async def body(standin: StandIn, bot: MusrecBot, guilds: list[int]) -> None:
        damaged = await add(standin, b"ID3" + b"\x17garbage" * 500, "song.mp3")
        said = await refused(standin, damaged)
        assert said == "Could not read this as audio." and damaged.deferred is not None  # nothing of the spool shown
        empty = await standin.dispatch_interaction(
            "recommend", {"clip": standin.add_attachment("q.wav", tracks[0]), "source": "library"}, user_id=MEMBER
        )
        assert "has no tracks yet" in await refused(standin, empty)
        label = standin.add_attachment("q.wav", tracks[0])
        filtered = await standin.dispatch_interaction(
            "recommend", {"clip": label, "source": "library", "music_only": True}, user_id=MEMBER
        )
        assert "apply to AudioSet, not to this server's library" in await refused(standin, filtered)

        added = await answered(await add_named(standin, hostile, tracks[0]))
        description = added.embeds[0]["description"]
        assert f"@{ZWSP}everyone \\[x](https://evil.example) \\*\\*loud\\*\\*" in description
        assert not added.data.get("mention_everyone") and not added.data.get("mentions")
        before = downloads(standin)
        full = await add(standin, tracks[1], "second.wav")
        assert (await refused(standin, full)).startswith("This server's library is full (1 track): remove some")
        assert downloads(standin) == before  # refused before downloading
        big = await add(standin, b"\0" * (2 << 20), "big.wav")
        assert "the limit is 1 MiB" in await refused(standin, big) and big.deferred is None
        text = standin.add_attachment("notes.txt", b"hello", "text/plain")
        notes = await standin.dispatch_interaction("library add", {"clip": text}, user_id=MANAGER)
        assert "does not look like audio" in await refused(standin, notes)
        typed = await standin.dispatch_interaction("library remove", {"track": "@everyone"}, user_id=MANAGER)
        answer = await refused(standin, typed)
        assert answer.startswith(f"'@{ZWSP}everyone' is not a track") and len(answer) < 200
        unknown = await standin.dispatch_interaction("library remove", {"track": "abcdef"}, user_id=MANAGER)
        assert await refused(standin, unknown) == (
            "`abcdef` names no one track of this server's library: `/library list` shows their ids."
        )

    scenario(annoy_world, body, tmp_path, permissions=MEMBER_PERMISSIONS | MENTION_EVERYONE,
             library={"max_server_tracks": 1}, max_attachment_bytes=1 << 20)  # fmt: skip


async def add_named(standin: StandIn, filename: str, data: bytes) -> InteractionHandle:
    return await standin.dispatch_interaction("library add", {"clip": named(standin, filename, data)}, user_id=MANAGER)


def test_recommend_searches_audioset_unless_asked_for_the_library(world: World, tmp_path: Path) -> None:
    """With a track in the server's library that sounds exactly like the query, /recommend still searches AudioSet
    by default; ``source:library`` searches the library; on both AudioSet index structures."""

    async def body(standin: StandIn, bot: MusrecBot, guilds: list[int]) -> None:
        await answered(await add(standin, to_wav_bytes(distinct_clip(1, TRACK_S)), "in the library.wav"))
        query = world.clips[1]
        plain = standin.add_attachment("q.wav", query, "audio/wav")
        audioset = await answered(
            await standin.dispatch_interaction("recommend", {"clip": plain, "start": "0", "top_k": 3}, user_id=MEMBER)
        )
        assert audioset.embeds[0]["title"] == "Sounds like this"
        assert "botclip0001" in audioset.embeds[0]["fields"][0]["value"]
        assert "203 AudioSet segments searched" in audioset.embeds[0]["footer"]["text"]
        ours = await search(standin, query)
        assert name_of(ours.embeds[0]["fields"][0]) == "in the library"
        assert labels_of(ours) == ["More like 1", "More"]

    scenario(world, body, tmp_path)


def test_a_clip_loudest_at_its_end_finds_its_track(annoy_world: World, tmp_path: Path) -> None:
    """/recommend source:library without a start, the 10 s of a track at the end of a longer, quieter recording, in
    the formats whose end once failed (Ogg Vorbis, Opus, AAC in M4A and in a video): the window is the track's, found
    at the end, and the track answers first, at its only segment."""
    track = distinct_clip(6, 10.0)
    quiet = np.random.default_rng(6).standard_normal(round(2.3 * RATE)) * 0.003
    source = tmp_path / "src.wav"
    source.write_bytes(to_wav_bytes(np.concatenate([quiet, track])))
    posted = []
    for kind in ("ogg", "opus", "m4a"):
        suffix, rate, codec = FORMATS[kind]
        posted.append(tmp_path / f"loud end.{suffix}")
        ffmpeg("-i", str(source), "-ar", str(rate), *codec, str(posted[-1]))
    posted.append(tmp_path / "loud end.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-i", str(source), "-map", "0:v", "-map", "1:a",
           "-shortest", "-c:v", "mpeg4", "-c:a", "aac", str(posted[-1]))  # fmt: skip

    async def body(standin: StandIn, bot: MusrecBot, guilds: list[int]) -> None:
        await answered(await add(standin, to_wav_bytes(distinct_clip(7, TRACK_S)), "another.wav"))
        await answered(await add(standin, to_wav_bytes(track), "the loud end.wav"))
        for path in posted:
            clip = standin.add_attachment(path.name, path.read_bytes(), "application/octet-stream")
            options = {"clip": clip, "top_k": 2, "source": "library"}
            found = await answered(await standin.dispatch_interaction("recommend", options, user_id=MEMBER))
            embed = found.embeds[0]
            assert embed["description"].startswith(f"{path.name} (0:02–0:12)"), (path.name, embed["description"])
            assert name_of(embed["fields"][0]) == "the loud end", path.name  # 99-100%: the codec's loss
            assert "0:00–0:10" in embed["fields"][0]["value"], path.name

    scenario(annoy_world, body, tmp_path)


def test_a_long_list_comes_in_pages_each_whole(annoy_world: World, tmp_path: Path) -> None:
    """45 tracks (stored directly, as complete adds leave them), some titled and by artists of the longest a tag may
    be and full of markdown to escape: /library list shows 20 a page, every one of them, within Discord's embed
    limits; the footer says which page of how many; a page past the end shows the last."""
    vector = np.ones((1, 1280), dtype=np.float32) / np.sqrt(1280)

    def title(i: int) -> str:
        return f"Track {i:02d} " + "*_" * 100 if i % 3 == 0 else f"Track {i:02d}"

    async def body(standin: StandIn, bot: MusrecBot, guilds: list[int]) -> None:
        store = bot.libraries.store().store
        for i in range(45):
            track_id = f"{i:016x}"
            store.write_segments(str(guilds[0]), track_id, Segments((Window(0.0, 10.0),), vector))
            store.mark_complete(TrackInfo(str(guilds[0]), track_id, title(i), "~" * 200 if i % 3 == 0 else None,
                                          None, f"t{i}.mp3", 10.0, 1, 1e9 + i))  # fmt: skip
        shown: list[str] = []
        for page, count in ((1, 20), (2, 20), (3, 5), (9, 5)):
            handle = await standin.dispatch_interaction("library list", {"page": page}, user_id=MEMBER)
            embed = (await answered(handle)).embeds[0]
            lines = embed["description"].splitlines()
            assert len(lines) == count and len(embed["description"]) <= 4096, page
            assert all(line.endswith("· 0:10") for line in lines), page  # no line cut short
            assert embed["footer"]["text"].startswith(f"45 of 1,000 tracks · page {min(page, 3)} of 3"), page
            shown += lines if page < 9 else []
        assert sorted(line.split(" ")[2] for line in shown) == [f"{i:02d}" for i in range(45)]  # each once

    scenario(annoy_world, body, tmp_path)


def test_a_link_is_added_once(annoy_world: World, tmp_path: Path) -> None:
    """/library add link: a link's media (on a loopback server, allowed in these tests as YouTube's hosts are) is
    added, titled by its name; the same link again adds nothing and fetches nothing; a clip and a link at once, neither,
    a link to nothing (404) or refused (403), a playlist, an IP address and text that is no link are each refused in
    a short private message, and add nothing."""
    wav = tmp_path / "linked.wav"
    wav.write_bytes(to_wav_bytes(distinct_clip(7, 20.0)))
    ffmpeg("-i", str(wav), "-c:a", "aac", "-b:a", "128k", str(tmp_path / "linked.m4a"))

    async def body(standin: StandIn, bot: MusrecBot, guilds: list[int]) -> None:
        with media_server(tmp_path) as media:
            url = media.media("linked.m4a")
            first = await answered(await standin.dispatch_interaction("library add", {"link": url}, user_id=MANAGER))
            assert first.embeds[0]["title"] == "Added to this server's library"
            assert first.embeds[0]["description"].startswith("**linked**\n")
            fetched = media.count("/media/")
            assert fetched > 0
            again = await answered(await standin.dispatch_interaction("library add", {"link": url}, user_id=MANAGER))
            assert again.embeds[0]["title"] == "Already in this server's library"
            assert media.count("/media/") == fetched
            clip = standin.add_attachment("a.wav", wav.read_bytes(), "audio/wav")
            both = await standin.dispatch_interaction("library add", {"link": url, "clip": clip}, user_id=MANAGER)
            assert (await refused(standin, both)).startswith("Give exactly one of `clip` (a file) or `link`")
            for status, said in ((404, "Nothing was found at that link (HTTP 404)."),
                                 (403, "The website refused the download (HTTP 403).")):  # fmt: skip
                gone = await standin.dispatch_interaction("library add", {"link": f"{media.url}/status/{status}"},
                                                          user_id=MANAGER)  # fmt: skip
                assert await refused(standin, gone) == said
        for options, said in [
            ({"link": "https://www.youtube.com/playlist?list=PL0123456789"}, "Playlists are not supported"),
            ({"link": "http://10.0.0.1/a"}, "Links to IP addresses are not accepted"),
            ({"link": "no link at all"}, "That is not a link"),
            ({}, "Give exactly one of `clip` (a file) or `link`"),
        ]:
            wrong = await standin.dispatch_interaction("library add", options, user_id=MANAGER)
            assert (await refused(standin, wrong)).startswith(said) and wrong.deferred is None  # before any work
        shown = await listed(standin)
        assert "linked" in shown and "\n" not in shown  # one track: nothing else was added

    scenario(annoy_world, body, tmp_path)


def test_a_recording_longer_than_a_track_may_be_is_stored_up_to_there(
    annoy_world: World, tracks: list[bytes], tmp_path: Path
) -> None:
    """With ``[library] max_track_s`` 20, a 30-s file and a 35-s link are added cut to their first 20 s, and the
    reply says so; a 15-s file is whole, and its reply says nothing of the kind."""
    wav = tmp_path / "long-link.wav"
    wav.write_bytes(to_wav_bytes(distinct_clip(8, 35.0)))
    ffmpeg("-i", str(wav), "-c:a", "aac", "-b:a", "128k", str(tmp_path / "long-link.m4a"))
    cut = "Only its first 0:20 is stored: a track is at most that long."

    async def body(standin: StandIn, bot: MusrecBot, guilds: list[int]) -> None:
        long_file = (await answered(await add(standin, tracks[0], "long.wav"))).embeds[0]["description"]
        assert "0:20 · 2 segments" in long_file and long_file.endswith(cut)
        short = (await answered(await add(standin, to_wav_bytes(distinct_clip(9, 15.0)), "short.wav"))).embeds[0]
        assert "0:15 · 2 segments" in short["description"] and "Only its first" not in short["description"]
        with media_server(tmp_path) as media:
            options = {"link": media.media("long-link.m4a")}
            linked = await answered(await standin.dispatch_interaction("library add", options, user_id=MANAGER))
        assert "0:20 · 2 segments" in linked.embeds[0]["description"]
        assert linked.embeds[0]["description"].endswith(cut)

    scenario(annoy_world, body, tmp_path, library={"max_track_s": 20})


def test_tags_name_the_track(annoy_world: World, tmp_path: Path) -> None:
    """An MP3's own tags give its title and artist (escaped: tags are the uploader's text)."""
    wav = tmp_path / "tagged.wav"
    wav.write_bytes(to_wav_bytes(distinct_clip(6, 12.0)))
    mp3 = tmp_path / "tagged.mp3"
    ffmpeg("-i", str(wav), "-metadata", "title=Night_Drive *live*", "-metadata", "artist=@here",
           "-c:a", "libmp3lame", "-b:a", "128k", str(mp3))  # fmt: skip

    async def body(standin: StandIn, bot: MusrecBot, guilds: list[int]) -> None:
        clip = standin.add_attachment("upload.mp3", mp3.read_bytes(), "audio/mpeg")
        added = await answered(await standin.dispatch_interaction("library add", {"clip": clip}, user_id=MANAGER))
        description = added.embeds[0]["description"]
        assert description.startswith(f"**Night\\_Drive \\*live\\* — @{ZWSP}here**")
        assert "upload.mp3" in description

    scenario(annoy_world, body, tmp_path)


HOLD = """
import sys
from dataclasses import replace
from pathlib import Path

from musrec.config import load_config
from musrec.library import Library

config = load_config(None, environ={})
with Library.from_config(replace(config, data=replace(config.data, dir=Path(sys.argv[1])))) as library:
    library.count("someone")
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_library_held_by_another_process(
    annoy_world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While another process holds the Milvus Lite library (``musrec library add`` running), a library request is
    told privately that the library is not available, without the store's path (the log has the store's own
    words); once that process is done, the next request is answered."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "data")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None and holder.stdout is not None

    async def body(standin: StandIn, bot: MusrecBot, guilds: list[int]) -> None:
        assert holder.stdin is not None
        handle = await standin.dispatch_interaction("library list", {}, user_id=MEMBER)
        assert await refused(standin, handle) == f"{UNAVAILABLE}."
        holder.stdin.close()
        assert await asyncio.to_thread(holder.wait) == 0
        assert "No tracks yet" in await listed(standin)

    try:
        assert holder.stdout.readline() == "held\n"
        with caplog.at_level(logging.WARNING, logger="bot"):
            scenario(annoy_world, body, tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert any("in use by another process" in r.getMessage() for r in caplog.records)


def test_print_commands_shows_the_library_group() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bot", "print-commands"], capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).parent,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    payload = {c["name"]: c for c in json.loads(out.stdout)}
    library = payload["library"]
    assert [o["name"] for o in library["options"]] == ["add", "remove", "list"]
    assert all(o["type"] == 1 for o in library["options"])  # subcommands
    assert library["dm_permission"] is False  # servers only: a library belongs to one
    source = next(o for o in payload["recommend"]["options"] if o["name"] == "source")
    assert [c["value"] for c in source["choices"]] == ["audioset", "library"]
    add = next(o for o in library["options"] if o["name"] == "add")
    assert [(o["name"], o.get("required", False), o.get("max_length")) for o in add["options"]] == [
        ("clip", False, None), ("link", False, 2048)
    ]  # fmt: skip
    remove = next(o for o in library["options"] if o["name"] == "remove")
    assert remove["options"][0]["autocomplete"] is True and remove["options"][0]["max_length"] == 100


LIBRARY_TOKEN = "root:tok-7d1e5a90c3b248"  # what an operator's MUSREC_LIBRARY_TOKEN looks like (user:password)
REFUSAL = (
    "the server libraries failed: could not open the library: the Milvus server at {uri} refused the credentials in "
    'MUSREC_LIBRARY_TOKEN: check that it holds a user and password ("user:password") or an API key the server '
    "accepts, then try again"
)


@pytest.mark.parametrize("admit_connect", [False, True], ids=["at-connect", "after-connect"])
@pytest.mark.parametrize("form", ["unauthenticated", "unknown"])
def test_a_library_server_refusing_the_token(
    form: str,
    admit_connect: bool,
    annoy_world: World,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 25: ``[library] uri`` a Milvus server that refuses the credentials in ``MUSREC_LIBRARY_TOKEN`` (as Milvus
    2.3.5+ does, UNAUTHENTICATED, and earlier 2.3, UNKNOWN with words naming the password; at Connect, or only after
    it: a password changed while the bot is connected, which pymilvus retries until ``[library] timeout_s`` in the
    UNKNOWN form). A member's
    /library list and /recommend source:library are told privately that the library is not available (nothing of the
    server's address, the token, or a traceback reaches Discord); the operator's log has, for each, the one line
    naming the server and MUSREC_LIBRARY_TOKEN, and the token in no record; the bot goes on answering AudioSet
    searches. The store is opened again at each request (each reached the server with the token)."""
    monkeypatch.setenv("MUSREC_LIBRARY_TOKEN", LIBRARY_TOKEN)
    secret = LIBRARY_TOKEN.partition(":")[2]

    async def body(standin: StandIn, bot: MusrecBot, guilds: list[int]) -> None:
        listing = await standin.dispatch_interaction("library list", {}, user_id=MEMBER)
        assert await refused(standin, listing) == f"{UNAVAILABLE}."
        clip = standin.add_attachment("q.wav", annoy_world.clips[1], "audio/wav")
        options = {"clip": clip, "start": "0", "top_k": 3, "source": "library"}
        searched = await standin.dispatch_interaction("recommend", options, user_id=MEMBER)
        assert await refused(standin, searched) == f"{UNAVAILABLE}."
        plain = standin.add_attachment("q.wav", annoy_world.clips[1], "audio/wav")
        audioset = await answered(
            await standin.dispatch_interaction("recommend", {"clip": plain, "start": "0", "top_k": 3}, user_id=MEMBER)
        )
        assert audioset.embeds[0]["title"] == "Sounds like this"
        assert "botclip0001" in audioset.embeds[0]["fields"][0]["value"]
        sent = json.dumps([call.json for call in standin.recorded])  # everything the bot sent to Discord
        for never in (milvus.uri, "127.0.0.1:", LIBRARY_TOKEN, secret, "MUSREC_LIBRARY_TOKEN", "Traceback", "Milvus"):
            assert never not in sent, never

    with refusing_milvus(form, admit_connect=admit_connect) as milvus, caplog.at_level(logging.DEBUG):
        scenario(annoy_world, body, tmp_path, library={"uri": milvus.uri, "timeout_s": 2.0})
    told = [r.getMessage() for r in caplog.records if r.name == "bot.libraries"]
    assert told == [REFUSAL.format(uri=milvus.uri)] * 2
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "bot.libraries")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert LIBRARY_TOKEN not in logged and secret not in logged and "auth check failure" not in logged
    assert milvus.authorizations and set(milvus.authorizations) == {LIBRARY_TOKEN}
    opened = 2 + admit_connect  # opened again at the second request (after Connect: its first call refused too)
    if form == "unknown" and admit_connect:  # pymilvus retries that form's later calls until [library] timeout_s
        assert len(milvus.authorizations) >= opened
    else:
        assert len(milvus.authorizations) == opened
