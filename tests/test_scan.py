"""The two-pass loudest window (issue 16): a cheap low-rate scan, then an exact decode of the window it picks.

The scan's choice is compared with the one :func:`choose_window` makes on the full decode, on real recordings of
several codecs with a loud part at a known place: within one second of it (the grid is one second).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from audio_fixtures import FORMATS, ffmpeg, tone

from musrec.audio.decode import AudioLimits, choose_window, decode
from musrec.audio.scan import decode_loudest
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


@pytest.mark.parametrize("codec", ["mp3", "m4a", "ogg", "flac"])
@pytest.mark.parametrize("signal", sorted(SIGNALS))
def test_scan_picks_the_full_decodes_window(tmp_path: Path, signal: str, codec: str) -> None:
    path = record(tmp_path, signal, codec)
    full = decode(path, duration_s=180.0)
    expected = choose_window(full.samples, search_s=180.0)
    assert expected.start_s == pytest.approx(SIGNALS[signal][1], abs=1.0)
    audio = decode_loudest(path, duration_s=10.0, search_s=180.0)
    assert audio.offset_s == pytest.approx(expected.start_s, abs=1.0)
    assert audio.duration_s == pytest.approx(10.0, abs=1e-3)
    # The window is decoded exactly as a decode with that start: the same samples.
    again = decode(path, start_s=audio.offset_s or None, duration_s=10.0)
    assert np.array_equal(audio.samples, again.samples)


def test_scan_keeps_to_the_search_span(tmp_path: Path) -> None:
    """The loud part from 23 s lies outside the first 20 s: the window is the loudest within them."""
    path = record(tmp_path, "tone", "mp3")
    audio = decode_loudest(path, duration_s=10.0, search_s=20.0)
    assert audio.offset_s + audio.duration_s <= 20.0 + 1e-3
    full = decode(path, duration_s=20.0)
    assert audio.offset_s == pytest.approx(choose_window(full.samples, search_s=20.0).start_s, abs=1.0)


def test_bytes_and_a_clip_shorter_than_the_window(tmp_path: Path) -> None:
    path = tone(tmp_path / "short.ogg", seconds=4.0, codec=FORMATS["ogg"][2])
    audio = decode_loudest(path.read_bytes(), duration_s=10.0)
    assert audio.offset_s == 0.0 and audio.duration_s == pytest.approx(4.0, abs=0.01)
    assert audio.source_duration_s == pytest.approx(4.0, abs=0.01)


def test_scan_errors_are_decodes_errors(tmp_path: Path) -> None:
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
