"""What a hostile or damaged file can make the decoders do (issue 23, points 5, 6 and 8).

- A request has one decoding budget in all (``[audio] decode_timeout_s``): files made to run ffmpeg up to its timeout
  at every step (envelope, exact spans, each sound of a blend) held a worker for about 12 minutes.
- ffmpeg and mpg123 parse files from strangers: they start without musrec's secrets in their environment.
- A DASH manifest named ``x.mp4`` is not followed to the local files it names.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from audio_fixtures import FORMATS, ffmpeg
from bot_fixtures import WAIT_S, World, bot_for, config_for, ephemeral_text, make_world
from discord_standin import StandIn, run
from vggish_fixtures import music_like

from musrec.audio import decode as decode_module
from musrec.audio.decode import decode, ffmpeg_executable
from musrec.audio.limits import AudioLimits
from musrec.audio.scan import decode_loudest, mpg123_executable
from musrec.audio.wav import to_wav_bytes
from musrec.errors import DecodeError

SECRETS = {
    "MUSREC_DISCORD_TOKEN": "MTIz.discord-token-never-shown",
    "MUSREC_YOUTUBE_API_KEY": "AIza-youtube-key-never-shown",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-never-shown",
}


def stand_in(directory: Path, name: str, real: str, *, before: str = "") -> Path:
    """A program named ``name`` that writes its environment to ``NAME.env`` beside it, runs ``before``, then becomes
    ``real`` with the same arguments."""
    script = directory / name
    script.write_text(f'#!/bin/sh\nenv > "{directory / name}.env"\n{before}\nexec "{real}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def clean_executables(request: pytest.FixtureRequest) -> None:
    """The decoders are looked up again in each test and after it."""
    for cached in (ffmpeg_executable, mpg123_executable):
        cached.cache_clear()
        request.addfinalizer(cached.cache_clear)


def loud_recording(directory: Path, name: str, *, seconds: float = 25.0, codec: str = "ogg") -> Path:
    suffix, rate, args = FORMATS[codec]
    source = directory / f"{name}.src.wav"
    source.write_bytes(to_wav_bytes(music_like(seconds, seed=len(name))))
    out = directory / f"{name}.{suffix}"
    ffmpeg("-i", str(source), "-ar", str(rate), *args, str(out))
    return out


def test_ffmpeg_starts_without_the_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_executables: None
) -> None:
    real = ffmpeg_executable()
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MUSREC_FFMPEG", str(stand_in(tmp_path, "ffmpeg", real)))
    ffmpeg_executable.cache_clear()
    monkeypatch.setenv("MUSREC_NO_MPG123", "1")
    audio = decode_loudest(loud_recording(tmp_path, "song"))
    assert len(audio.samples) == 160_000
    seen = (tmp_path / "ffmpeg.env").read_text()
    assert "PATH=" in seen  # what ffmpeg needs is still there
    for name, value in SECRETS.items():
        assert name not in seen and value not in seen


def test_mpg123_starts_without_the_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_executables: None
) -> None:
    real = shutil.which("mpg123")
    if real is None:
        pytest.skip("mpg123 is not installed (scripts/test installs it)")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in(bin_dir, "mpg123", real)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("MUSREC_NO_MPG123", raising=False)
    audio = decode_loudest(loud_recording(tmp_path, "song", seconds=40.0, codec="mp3"))
    assert len(audio.samples) == 160_000
    seen = (bin_dir / "mpg123.env").read_text()
    for name, value in SECRETS.items():
        assert name not in seen and value not in seen


def test_a_dash_manifest_is_not_followed_to_local_files(tmp_path: Path) -> None:
    """Without the demuxer whitelist, ffmpeg's dash demuxer decoded ``secret.m4a`` named by the manifest."""
    secret = loud_recording(tmp_path, "secret", seconds=12.0, codec="m4a")
    assert len(decode(secret).samples) > 0  # readable as itself
    manifest = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT12S" '
        'minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period>'
        '<AdaptationSet mimeType="audio/mp4"><Representation id="a" bandwidth="96000">'
        f"<BaseURL>file:{secret}</BaseURL></Representation></AdaptationSet></Period></MPD>\n"
    )
    upload = tmp_path / "x.mp4"
    upload.write_text(manifest)
    for attempt in (lambda: decode(upload), lambda: decode_loudest(upload), lambda: decode(manifest.encode())):
        with pytest.raises(DecodeError, match="could not read this as audio"):
            attempt()


def slow_ffmpeg(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ffmpeg that takes 0.8 s longer to start: each step of a decode stays well inside a 2-s timeout."""
    script = stand_in(directory, "ffmpeg", ffmpeg_executable(), before="sleep 0.8")
    monkeypatch.setattr(decode_module, "ffmpeg_executable", lambda: str(script))
    monkeypatch.setenv("MUSREC_NO_MPG123", "1")
    return script


def test_one_sound_has_one_budget_for_all_its_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_executables: None
) -> None:
    """The envelope and the exact span each take about 0.8 s: each under a 1.2-s timeout, both not."""
    song = loud_recording(tmp_path, "song")
    slow_ffmpeg(tmp_path, monkeypatch)
    assert len(decode_loudest(song, limits=AudioLimits(decode_timeout_s=20.0)).samples) == 160_000
    with pytest.raises(DecodeError, match="took too long to decode"):
        decode_loudest(song, limits=AudioLimits(decode_timeout_s=1.2))


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def world(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> World:
    return make_world(tmp_path_factory, request.param)


def test_a_blend_has_one_budget_for_its_three_sounds(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_executables: None
) -> None:
    """Three sounds of two slow steps each: every step fits the 2-s timeout, the request does not. The user is told,
    the worker is free again (a clip after it is answered), and nothing else is lost."""
    songs = [loud_recording(tmp_path, name).read_bytes() for name in ("a", "b", "c")]
    clip = world.clips[0]
    slow_ffmpeg(tmp_path, monkeypatch)

    async def body(standin: StandIn) -> None:
        attachments = {
            key: standin.add_attachment(f"{key}.ogg", data, "audio/ogg")
            for key, data in zip(("first_clip", "second_clip", "third_clip"), songs, strict=True)
        }
        handle = await standin.dispatch_interaction("blend", attachments)
        await handle.wait_for_followups(timeout=WAIT_S)
        text = ephemeral_text(handle).lower()
        assert "took too long to decode" in text and " sound (" in text  # the first, or a later one on a busy machine
        again = await standin.dispatch_interaction("recommend", {"clip": standin.add_attachment(
            "ok.wav", clip, "audio/wav"), "start": "0", "top_k": 3})  # fmt: skip
        await again.wait_for_original(lambda m: bool(m.embeds), timeout=WAIT_S)
        assert "botclip0000" in again.original.embeds[0]["fields"][0]["value"]

    async def main(standin: StandIn) -> None:
        config = config_for(world, standin)
        config = replace(config, audio=replace(config.audio, decode_timeout_s=2.0))
        async with standin.running(bot_for(world, config), timeout=WAIT_S):
            await body(standin)
        assert not standin.errors

    run(main, timeout=WAIT_S * 2, heartbeat_interval=0.5)
