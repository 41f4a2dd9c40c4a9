"""The loudest window without a full decode (issue 16): a cheap envelope, then exact spans around its candidates.

The choice is compared with the one :func:`choose_window` makes on the full decode, on recordings of several codecs
with a loud part at a known place, with each envelope decoder (mpg123 for MP3 where installed, ffmpeg otherwise).
bench/scan_bench.py makes the same comparison on real music.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from audio_fixtures import FORMATS, ffmpeg, tone

from musrec.audio import scan
from musrec.audio.decode import decode
from musrec.audio.head import read_head
from musrec.audio.limits import AudioLimits
from musrec.audio.scan import decode_loudest, mpg123_executable, scan_envelope
from musrec.audio.window import choose_window, cut, window_energies
from musrec.errors import DecodeError, TooLongError, TooShortError

SECONDS = 45
# name -> (aevalsrc expression, where the full decode's loudest 10 s start)
SIGNALS: dict[str, tuple[str, float]] = {
    # a quiet 300 Hz tone, four times louder from 23 s to 33 s
    "tone": ("(0.1+0.3*between(t,23,33))*sin(2*PI*300*t)", 23.0),
    # white noise at the full band (up to 8 kHz after decoding), louder from 11 s to 21 s
    "noise": ("(2*random(0)-1)*(0.08+0.25*between(t,11,21))", 11.0),
    # a chord with harmonics under a swell peaking at 30 s: the loudest window is centred there
    "music": (
        "(0.05+0.3*exp(-pow((t-30)/5,2)))*(sin(2*PI*220*t)+0.5*sin(2*PI*440*t)+0.3*sin(2*PI*1320*t)"
        "+0.2*sin(2*PI*277*t)*(1+sin(2*PI*2*t)))/2",
        25.0,
    ),
}


def record(directory: Path, signal: str, codec: str, *, seconds: float = SECONDS) -> Path:
    suffix, rate, args = FORMATS[codec]
    path = directory / f"{signal}.{suffix}"
    ffmpeg("-f", "lavfi", "-i", f"aevalsrc='{SIGNALS[signal][0]}':s={rate}:d={seconds}", *args, str(path))
    return path


HAVE_MPG123 = scan.mpg123_executable() is not None
needs_mpg123 = pytest.mark.skipif(not HAVE_MPG123, reason="mpg123 is not installed (scripts/test installs it)")


@pytest.fixture(params=["mpg123", "ffmpeg"])
def envelope_decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which decoder makes MP3 envelopes: mpg123 (skipped where it is missing) or ffmpeg (mpg123 turned off)."""
    if request.param == "mpg123" and not HAVE_MPG123:
        pytest.skip("mpg123 is not installed (scripts/test installs it)")
    if request.param == "ffmpeg":
        monkeypatch.setenv("MUSREC_NO_MPG123", "1")
    mpg123_executable.cache_clear()
    request.addfinalizer(mpg123_executable.cache_clear)
    return str(request.param)


@pytest.fixture
def ffmpeg_only(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv("MUSREC_NO_MPG123", "1")
    mpg123_executable.cache_clear()
    request.addfinalizer(mpg123_executable.cache_clear)


@pytest.mark.parametrize("codec", ["mp3", "m4a", "ogg", "flac"])
@pytest.mark.parametrize("signal", sorted(SIGNALS))
def test_scan_picks_the_full_decodes_window(tmp_path: Path, signal: str, codec: str, envelope_decoder: str) -> None:
    path = record(tmp_path, signal, codec)
    expects = "mpg123" if codec == "mp3" and envelope_decoder == "mpg123" else "ffmpeg"
    assert scan_envelope(path).decoder == expects
    full = decode(path, duration_s=180.0)
    expected = choose_window(full.samples, search_s=180.0)
    assert expected.start_s == pytest.approx(SIGNALS[signal][1], abs=1.0)
    audio = decode_loudest(path, duration_s=10.0, search_s=180.0)
    # The exact spans make the full decode's choice (the issue allows a second; these signals have no near-ties).
    assert audio.offset_s == expected.start_s
    assert audio.duration_s == pytest.approx(10.0, abs=1e-3)
    # The same sound: a seek lands on a codec frame (AAC, Vorbis: a few ms off the full decode's samples), so the
    # samples are compared by energy, within the rounding of int16 samples and the first milliseconds of a seek.
    reference = cut(full.samples, expected)
    energy = float(np.dot(audio.samples, audio.samples.astype(np.float64)))
    assert energy == pytest.approx(float(np.dot(reference, reference.astype(np.float64))), rel=0.01)


def test_the_window_is_the_full_decodes_samples(tmp_path: Path) -> None:
    """FLAC seeks to the sample: the window is the full decode's, bit for bit, but for the resampler's edges.

    The span around the candidates starts at 21 s (a window as loud, within the margin, in the envelope); the window
    at 23 s is cut from it, so its samples come from the middle of a decode, as in the full one. The first and last
    10 ms differ: the reference resampler's filter sees the span's edges there.
    """
    path = record(tmp_path, "tone", "flac")
    full = decode(path, duration_s=180.0)
    expected = choose_window(full.samples, search_s=180.0)
    audio = decode_loudest(path, duration_s=10.0, search_s=180.0)
    edge = 160  # 10 ms at 16 kHz
    assert np.array_equal(audio.samples[edge:-edge], cut(full.samples, expected)[edge:-edge])


@needs_mpg123
def test_mp3s_are_recognised_by_their_frames(tmp_path: Path) -> None:
    """Only a file that starts with two MP3 frames (after an ID3 tag) goes to mpg123; the rest stays with ffmpeg."""
    mp3 = record(tmp_path, "tone", "mp3", seconds=12)
    assert read_head(mp3).mp3_rate == 44100
    tagged = tmp_path / "tagged.mp3"
    ffmpeg("-i", str(mp3), "-c", "copy", "-id3v2_version", "3", "-metadata", "title=" + "x" * 5000, str(tagged))
    assert tagged.read_bytes()[:3] == b"ID3" and read_head(tagged).mp3_rate == 44100
    lsf = tmp_path / "lsf.mp3"
    ffmpeg("-i", str(mp3), "-ar", "22050", "-c:a", "libmp3lame", str(lsf))
    assert read_head(lsf).mp3_rate == 22050
    assert scan_envelope(lsf).rate == 11025  # half of 22.05 kHz: still above 8 kHz
    for other in ("m4a", "ogg", "flac", "wav"):
        assert read_head(record(tmp_path, "tone", other, seconds=3)).mp3_rate is None
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"\xff\xfb\x90\x00" + bytes(4000))  # one frame header, then no second frame
    assert read_head(junk).mp3_rate is None


@needs_mpg123
def test_envelope_parts_join_sample_for_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two mpg123 runs over whole frames give the samples of one run: 20 s searched in a 45-s file, and 180 s.

    Up to the last bit: after its seek mpg123 primes the decoder again, and a few float sums round to the other
    side of a 16-bit step (3 samples in 220,000 here), so a sample may differ by one step (two allowed).
    """
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    path = record(tmp_path, "music", "mp3")
    for search_s in (20.0, 180.0):
        monkeypatch.setattr(scan, "ENVELOPE_PARTS", 2)
        halves = scan_envelope(path, search_s=search_s)
        monkeypatch.setattr(scan, "ENVELOPE_PARTS", 1)
        whole = scan_envelope(path, search_s=search_s)
        assert halves.decoder == whole.decoder == "mpg123"
        assert len(halves.samples) == len(whole.samples)
        differ = np.abs(halves.samples - whole.samples)
        assert differ.max() <= 2 / 32768 and np.count_nonzero(differ) <= len(differ) // 1000
        assert len(whole.samples) / whole.rate >= min(search_s, SECONDS - 0.1)


@pytest.mark.parametrize("codec", ["mp3", "m4a", "ogg", "flac"])
def test_ffmpeg_envelope_parts_join_where_the_seek_lands(
    tmp_path: Path, codec: str, monkeypatch: pytest.MonkeyPatch, ffmpeg_only: None
) -> None:
    """ffmpeg's halves join within a codec frame (AAC's 1024 samples, MP3's 1152: under 30 ms): as long as one run's
    output, every window's energy within 1% of one run's (a frame is 0.3% of a 10-s window)."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    path = record(tmp_path, "music", codec)
    envelopes = []
    for parts in (2, 1):
        monkeypatch.setattr(scan, "ENVELOPE_PARTS", parts)
        envelopes.append(scan_envelope(path, search_s=30.0))
    halves, whole = envelopes
    assert halves.decoder == whole.decoder == "ffmpeg"
    assert abs(len(halves.samples) - len(whole.samples)) <= 0.03 * scan.SCAN_RATE
    n = min(len(halves.samples), len(whole.samples))
    width = 10 * scan.SCAN_RATE
    _, split = window_energies(halves.samples[:n], sample_rate=scan.SCAN_RATE, width=width, search_s=30.0)
    _, one = window_energies(whole.samples[:n], sample_rate=scan.SCAN_RATE, width=width, search_s=30.0)
    assert np.allclose(split, one, rtol=0.01)


@needs_mpg123
def test_when_mpg123_fails_ffmpeg_scans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = record(tmp_path, "tone", "mp3")
    broken = tmp_path / "mpg123"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(scan, "mpg123_executable", lambda: str(broken))
    assert scan_envelope(path).decoder == "ffmpeg"
    assert decode_loudest(path, duration_s=10.0, search_s=180.0).offset_s == SIGNALS["tone"][1]


def test_candidates_stay_within_the_budget() -> None:
    """A plateau (every window as loud) keeps the loudest candidates up to the budget of exact decoding."""
    starts = np.arange(0.0, 171.0)
    energies = np.full(len(starts), 100.0)
    energies[90] = 101.0
    chosen = scan._candidates(starts, energies, duration_s=10.0)
    assert 90.0 in chosen
    assert sum(b - a for a, b in scan._spans(chosen, 10.0)) <= scan.EXACT_BUDGET_S
    clear = energies.copy()
    clear[40] = 200.0
    assert scan._candidates(starts, clear, duration_s=10.0) == [40.0]


def test_scan_keeps_to_the_search_span(tmp_path: Path, envelope_decoder: str) -> None:
    """The loud part from 23 s lies outside the first 20 s: the window is the loudest within them."""
    path = record(tmp_path, "tone", "mp3")
    audio = decode_loudest(path, duration_s=10.0, search_s=20.0)
    assert audio.offset_s + audio.duration_s <= 20.0 + 1e-3
    full = decode(path, duration_s=20.0)
    assert audio.offset_s == pytest.approx(choose_window(full.samples, search_s=20.0).start_s, abs=1.0)


def test_bytes_and_a_clip_shorter_than_the_window(tmp_path: Path, envelope_decoder: str) -> None:
    path = tone(tmp_path / "short.ogg", seconds=4.0, codec=FORMATS["ogg"][2])
    audio = decode_loudest(path.read_bytes(), duration_s=10.0)
    assert audio.offset_s == 0.0 and audio.duration_s == pytest.approx(4.0, abs=0.01)
    assert audio.source_duration_s == pytest.approx(4.0, abs=0.01)


def test_scan_errors_are_decodes_errors(tmp_path: Path, envelope_decoder: str) -> None:
    silent = tmp_path / "silent.mp3"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-t", "12", "-c:a", "libmp3lame", str(silent))
    with pytest.raises(DecodeError, match="silent"):
        decode_loudest(silent)
    with pytest.raises(DecodeError, match="could not read"):
        decode_loudest(b"\x00not audio at all" * 64)
    with pytest.raises(TooShortError):
        decode_loudest(tone(tmp_path / "blip.wav", seconds=0.5))
    with pytest.raises(TooLongError, match="larger than"):
        decode_loudest(tone(tmp_path / "t.wav", seconds=2.0), limits=AudioLimits(max_bytes=1000))


def test_header_estimates_of_duration(tmp_path: Path) -> None:
    """16-bit WAV: exact; constant-bitrate MP3: its bitrate over its size (tags and padding make it a little long);
    variable-bitrate MP3: its Xing tag's frame count (issue 22: mutagen reads it); other formats: unknown."""
    wav = record(tmp_path, "tone", "wav", seconds=12)
    assert read_head(wav).seconds == pytest.approx(12.0, abs=1e-3)
    cbr = record(tmp_path, "tone", "mp3", seconds=12)
    estimate = read_head(cbr).seconds
    assert estimate is not None and 12.0 <= estimate <= 12.0 + scan.SHORT_SLACK_S
    vbr = tmp_path / "vbr.mp3"
    ffmpeg("-i", str(wav), "-c:a", "libmp3lame", "-q:a", "4", str(vbr))
    vbr_head = read_head(vbr)
    assert vbr_head.mp3_rate == 44100 and vbr_head.seconds is not None
    assert 12.0 <= vbr_head.seconds <= 12.0 + scan.SHORT_SLACK_S  # the encoder's delay and padding count
    for other in ("ogg", "m4a", "flac"):
        assert read_head(record(tmp_path, "tone", other, seconds=3)).seconds is None


@pytest.mark.parametrize("codec", ["wav", "mp3"])
def test_a_clip_known_to_fit_the_window_needs_no_envelope(
    tmp_path: Path, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 10-s WAV or constant-bitrate MP3 is decoded once, whole; a 12-s one goes through the envelope."""
    envelopes: list[Path] = []
    real = scan.scan_envelope
    monkeypatch.setattr(scan, "scan_envelope", lambda path, **kw: envelopes.append(path) or real(path, **kw))
    short = record(tmp_path, "tone", codec, seconds=10)
    audio = decode_loudest(short, duration_s=10.0)
    assert envelopes == [] and audio.offset_s == 0.0
    assert np.array_equal(audio.samples, decode(short, duration_s=10.0).samples)
    longer = record(tmp_path, "noise", codec, seconds=12)
    decode_loudest(longer, duration_s=10.0)
    assert envelopes == [longer]


@pytest.mark.parametrize("codec", ["wav", "mp3", "flac"])
def test_a_files_head_is_read_once_per_query(tmp_path: Path, codec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 22: the checks, ffmpeg's probe size, the envelope's decoder and the length known from the header all come
    from one read of the file's head, however many decoders the loudest window takes."""
    from musrec.audio import decode as decode_module

    reads: list[Path] = []
    real = decode_module.read_head
    monkeypatch.setattr(decode_module, "read_head", lambda path: reads.append(path) or real(path))
    path = record(tmp_path, "noise", codec, seconds=30)
    audio = decode_loudest(path, duration_s=10.0, search_s=30.0)
    assert reads == [path] and audio.duration_s == pytest.approx(10.0, abs=0.01)
