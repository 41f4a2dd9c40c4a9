"""Real encoded audio for tests, made by ffmpeg (the system's or imageio-ffmpeg's) from synthetic signals."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

from musrec.audio.decode import ffmpeg_executable

TONE_HZ = 440.0
TONE_S = 3.0

# name -> (file suffix, sample rate, encoder arguments)
FORMATS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "wav": ("wav", 44100, ("-c:a", "pcm_s16le")),
    "mp3": ("mp3", 44100, ("-c:a", "libmp3lame", "-b:a", "96k")),
    "ogg": ("ogg", 44100, ("-c:a", "libvorbis", "-q:a", "3")),
    "opus": ("opus", 48000, ("-c:a", "libopus", "-b:a", "48k")),
    "m4a": ("m4a", 44100, ("-c:a", "aac", "-b:a", "96k")),
    "flac": ("flac", 44100, ("-c:a", "flac")),
    "webm": ("webm", 48000, ("-c:a", "libopus", "-b:a", "48k")),
}


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly, overwriting outputs; raise with its stderr on failure."""
    cmd = [ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr.decode(errors='replace')}")


def tone(
    path: Path,
    *,
    seconds: float = TONE_S,
    hz: float = TONE_HZ,
    rate: int = 44100,
    channels: int = 1,
    codec: tuple[str, ...] = ("-c:a", "pcm_s16le"),
) -> Path:
    """Channel c plays a sine of ``hz * (1 + c / 2)`` Hz at amplitude ``0.5 / (1 + c)``: 440 Hz at 0.5, 660 at 0.25."""
    chans = "|".join(f"{0.5 / (1 + c)}*sin(2*PI*{hz * (1 + c / 2)}*t)" for c in range(channels))
    ffmpeg("-f", "lavfi", "-i", f"aevalsrc={chans}:s={rate}:d={seconds}", *codec, str(path))
    return path


def encoded(directory: Path, name: str, *, seconds: float = TONE_S) -> Path:
    """The 440 Hz tone in one of :data:`FORMATS` (the WAV one in stereo: 440 Hz left, 660 Hz right)."""
    suffix, rate, codec = FORMATS[name]
    channels = 2 if name == "wav" else 1
    return tone(directory / f"tone.{suffix}", seconds=seconds, rate=rate, channels=channels, codec=codec)


def video(path: Path, *, seconds: float = TONE_S, with_audio: bool = True) -> Path:
    """A small MPEG-4 video (test pattern), with a 440 Hz AAC track or none."""
    args = ["-f", "lavfi", "-i", f"testsrc=size=64x48:rate=10:duration={seconds}"]
    if with_audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:sample_rate=44100:duration={seconds}"]
        args += ["-c:a", "aac", "-shortest"]
    ffmpeg(*args, "-c:v", "mpeg4", str(path))
    return path


def long_mp3(path: Path, *, hours: float) -> Path:
    """A long, small CBR MP3 (8 kHz mono, 8 kbit/s: 3.6 MB an hour) made by repeating a 4-minute block.

    Without an ID3 tag or Xing header, MP3 frames concatenate into a valid stream. Minute m of each block
    plays ``long_mp3_hz(m)``; encoder padding shifts later blocks by a few frames (under a second an hour).
    """
    block = path.with_name("block.mp3")
    expr = "+".join(f"between(t,{60 * m},{60 * (m + 1)})*0.5*sin(2*PI*{long_mp3_hz(m)}*t)" for m in range(4))
    ffmpeg(
        "-f", "lavfi", "-i", f"aevalsrc='{expr}':s=8000:d=240",
        "-c:a", "libmp3lame", "-b:a", "8k", "-write_xing", "0", "-id3v2_version", "0", str(block),
    )  # fmt: skip
    data = block.read_bytes()
    block.unlink()
    path.write_bytes(data * math.ceil(hours * 15))
    return path


def long_mp3_hz(minute: int) -> float:
    """The tone :func:`long_mp3` plays in a given minute."""
    return 200.0 + 100.0 * (minute % 4)
