"""Decoding at less processor time, the samples unchanged (a library add decodes while the model runs on the same
cores: what the decoder takes, the model loses).

- An MP3 decoded from its start is mpg123's where it is installed (a third of ffmpeg's processor time), ffmpeg's
  otherwise or when mpg123 fails. The two give the same samples to one 16-bit step and trim the encoder's delay
  alike, so nothing a user sees depends on which one decoded.
- ffmpeg regroups decoded audio into large frames before its other threads handle it: the same samples, exactly.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from audio_fixtures import FORMATS, ffmpeg

from musrec.audio import decode as decode_module
from musrec.audio import runner
from musrec.audio.decode import decode, ffmpeg_executable
from musrec.errors import DecodeError, TooShortError

STEP = 1 / 32768  # one step of 16-bit PCM, the decoders' output


@pytest.fixture
def both(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """mpg123 installed (the test is skipped without it); each test looks the decoders up afresh."""
    if shutil.which("mpg123") is None:
        pytest.skip("mpg123 is not installed (scripts/test installs it)")
    monkeypatch.delenv("MUSREC_NO_MPG123", raising=False)
    for cached in (ffmpeg_executable, runner.mpg123_executable):
        cached.cache_clear()
        request.addfinalizer(cached.cache_clear)


def decoded_by(decoder: str, path: Path, monkeypatch: pytest.MonkeyPatch, **options: float) -> np.ndarray:
    with monkeypatch.context() as patch:
        if decoder == "ffmpeg":
            patch.setenv("MUSREC_NO_MPG123", "1")
        runner.mpg123_executable.cache_clear()
        samples = decode(path, **options).samples  # type: ignore[arg-type]
    runner.mpg123_executable.cache_clear()
    return np.asarray(samples, dtype=np.float64)


def decoders_run(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The commands of the decoders that :func:`decode` runs from now on, in order."""
    calls: list[list[str]] = []
    run = runner.run_decoder

    def recorded(cmd: list[str], **options: Any) -> Any:
        calls.append(cmd)
        return run(cmd, **options)

    monkeypatch.setattr("musrec.audio.decode.run_decoder", recorded)
    return calls


def onset_s(samples: np.ndarray) -> float:
    return float(np.flatnonzero(np.abs(samples) > 0.05)[0] / 16000)


def mp3(path: Path, *, rate: int, channels: int, seconds: float = 12.0) -> Path:
    """A tone from 3.0 s (its onset shows where the encoder's delay was trimmed), MP3 at ``rate``."""
    source = f"aevalsrc='gte(t,3)*0.5*sin(2*PI*440*t)|gte(t,3)*0.4*sin(2*PI*660*t)':s={rate}:d={seconds}"
    ffmpeg("-f", "lavfi", "-i", source, "-ac", str(channels), "-c:a", "libmp3lame", "-b:a", "128k", str(path))
    return path


def test_mpg123_decodes_an_mp3_from_its_start(tmp_path: Path, both: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """At 16 kHz nothing is resampled: the two decoders' samples differ by one 16-bit step at most. At 44.1 kHz
    stereo (what music libraries hold) they have the same length and the same onset: the same delay trimmed."""
    calls = decoders_run(monkeypatch)
    plain = mp3(tmp_path / "plain.mp3", rate=16000, channels=1)
    by_mpg123 = decoded_by("mpg123", plain, monkeypatch)
    by_ffmpeg = decoded_by("ffmpeg", plain, monkeypatch)
    names = [Path(cmd[0]).name for cmd in calls]
    assert len(names) == 2 and names[0] == "mpg123" and names[1].startswith("ffmpeg")
    assert len(by_mpg123) == len(by_ffmpeg) == 12 * 16000
    assert np.max(np.abs(by_mpg123 - by_ffmpeg)) <= STEP * (1 + 1e-6)  # float32 samples: a step exactly
    stereo = mp3(tmp_path / "stereo.mp3", rate=44100, channels=2)
    a, b = decoded_by("mpg123", stereo, monkeypatch), decoded_by("ffmpeg", stereo, monkeypatch)
    assert len(a) == len(b) and onset_s(a) == pytest.approx(onset_s(b), abs=1 / 16000) == pytest.approx(3.0, abs=0.002)


@pytest.mark.parametrize("channels", [2, 1])
def test_mpg123_writes_into_memory_what_a_pipe_would_carry(
    tmp_path: Path, channels: int, both: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mpg123 writes its samples into a memfd (less processor time than a pipe), or into a pipe where there is
    none: bit for bit the same samples either way, a mono MP3's too (mpg123 writes its channel twice). A hole in
    the stream, after which mpg123 rewinds a file it can seek in, is test_a_damaged_mp3_gets_the_same_answer_from_
    either's."""
    path = mp3(tmp_path / "song.mp3", rate=44100, channels=channels)
    read = []
    real = runner._read_memory
    monkeypatch.setattr(runner, "_read_memory", lambda *args, **kw: read.append(args) or real(*args, **kw))
    in_memory = decoded_by("mpg123", path, monkeypatch)
    assert len(read) == 1
    monkeypatch.setattr(runner, "_memory_file", lambda: None)
    through_a_pipe = decoded_by("mpg123", path, monkeypatch)
    assert len(read) == 1 and len(in_memory) == 12 * 16000 and np.array_equal(in_memory, through_a_pipe)


def test_a_start_or_a_part_is_still_ffmpeg_s(tmp_path: Path, both: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """ffmpeg seeks to the sample; the duration limit bounds what mpg123 is asked for (whole frames)."""
    calls = decoders_run(monkeypatch)
    path = mp3(tmp_path / "song.mp3", rate=44100, channels=2)
    audio = decode(path, start_s=2.0, duration_s=2.0)
    assert Path(calls[-1][0]).name.startswith("ffmpeg") and onset_s(np.asarray(audio.samples)) == pytest.approx(
        1.0, abs=0.002
    )
    decode(path, duration_s=4.0)
    frames = int(calls[-1][calls[-1].index("--frames") + 1])
    assert frames * 1152 / 44100 <= 4.0 + 0.5 + 3 * 1152 / 44100  # the span, the trim margin, the delay's frames


def test_a_failing_mpg123_leaves_the_mp3_to_ffmpeg(tmp_path: Path, both: None, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "mpg123"
    broken.write_text("#!/bin/sh\necho 'mpg123: cannot decode' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr("musrec.audio.decode.mpg123_executable", lambda: str(broken))
    path = mp3(tmp_path / "song.mp3", rate=44100, channels=2)
    assert onset_s(np.asarray(decode(path).samples)) == pytest.approx(3.0, abs=0.002)


def test_a_damaged_mp3_gets_the_same_answer_from_either(
    tmp_path: Path, both: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hole of noise in the middle is passed over, not the end of the recording (mpg123 ends there by default,
    with success); an MP3 that is noise after its first frames is refused by either."""
    good = mp3(tmp_path / "good.mp3", rate=44100, channels=2, seconds=40.0).read_bytes()
    noise = np.random.default_rng(5).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    holed = tmp_path / "holed.mp3"
    holed.write_bytes(good[: len(good) // 3] + noise + good[len(good) // 3 + len(noise) :])
    lengths = [len(decoded_by(decoder, holed, monkeypatch)) / 16000 for decoder in ("mpg123", "ffmpeg")]
    assert lengths[0] == pytest.approx(lengths[1], abs=1.0) and lengths[0] > 30.0  # 40 s, less the hole's 6 s
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(good[:2000] + noise)
    for decoder in ("mpg123", "ffmpeg"):
        with pytest.raises((TooShortError, DecodeError)):
            decoded_by(decoder, damaged, monkeypatch)


@pytest.mark.parametrize("name", ["m4a", "flac", "ogg", "opus", "wav", "mp3"])
def test_regrouped_frames_leave_the_samples_as_they_were(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the start and from a start time, with and without ``asetnsamples`` (an ffmpeg built without filters):
    bit for bit the same samples, the same length."""
    monkeypatch.setenv("MUSREC_NO_MPG123", "1")
    runner.mpg123_executable.cache_clear()
    suffix, rate, codec = FORMATS[name]
    path = tmp_path / f"song.{suffix}"
    source = f"aevalsrc='0.4*sin(2*PI*440*t)*sin(2*PI*0.5*t)|0.3*sin(2*PI*620*t)':s={rate}:d=25"
    ffmpeg("-f", "lavfi", "-i", source, "-ac", "2", *codec, str(path))
    assert decode_module.regroups(ffmpeg_executable())
    for options in ({}, {"start_s": 7.3, "duration_s": 10.0}):
        regrouped = decode(path, **options)  # type: ignore[arg-type]
        with monkeypatch.context() as patch:
            patch.setattr(decode_module, "regroups", lambda ffmpeg: False)
            plain = decode(path, **options)  # type: ignore[arg-type]
        assert np.array_equal(np.asarray(regrouped.samples), np.asarray(plain.samples))
    runner.mpg123_executable.cache_clear()
