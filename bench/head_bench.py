"""Reading a file's head (issue 22): mutagen's MP3 header reading against the hand-written frame parser it replaced,
in the same run on the same files, and both as a share of the decode the bot runs on them.

Files: 3-minute recordings of a tone and noise, encoded as constant-bitrate MP3 (192 kbit/s), variable-bitrate MP3
(LAME quality 4, with its Xing tag), 22.05-kHz MPEG-2 MP3 (64 kbit/s), an ID3-tagged MP3, a 16-bit WAV and Ogg.
Printed for each: microseconds per head read by each (median of ``--repeats`` rounds of ``--reads``), their ratio
(above 1: mutagen is slower), the durations each gives, and :func:`~musrec.audio.scan.decode_loudest`'s time (the
bot's path, which reads the head once).

    python bench/head_bench.py
    python bench/head_bench.py --reads 2000 --repeats 7
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

from common import median_s

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SECONDS = 180
ENCODINGS = {
    "mp3 cbr": ("-c:a", "libmp3lame", "-b:a", "192k"),
    "mp3 vbr": ("-c:a", "libmp3lame", "-q:a", "4"),
    "mp3 lsf": ("-ac", "1", "-ar", "22050", "-c:a", "libmp3lame", "-b:a", "64k"),
    "mp3 id3": ("-c:a", "libmp3lame", "-b:a", "192k", "-id3v2_version", "3", "-metadata", "title=" + "x" * 5000),
    "wav": ("-c:a", "pcm_s16le"),
    "ogg": ("-c:a", "libvorbis"),
}
SUFFIX = {"wav": ".wav", "ogg": ".ogg"}

# ---- the hand-written parser musrec used before (the baseline) ----------------------------------------------
_BITRATES = {
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def old_head(path: Path) -> tuple[int | None, float | None]:
    """(MP3 sample rate, seconds) as the frame parser gave them, after the same WAV check."""
    from musrec.audio.wav import read_wav_header
    from musrec.errors import DecodeError

    size = path.stat().st_size
    with path.open("rb") as f:
        try:
            channels, rate, data_bytes = read_wav_header(f.read)
            return None, (data_bytes if data_bytes is not None else size - f.tell()) / (2 * channels * rate)
        except (DecodeError, ZeroDivisionError):
            f.seek(0)
            mp3 = _old_mp3(f)
    if mp3 is None:
        return None, None
    rate, kbps, offset, variable = mp3
    return rate, None if variable else (size - offset) * 8 / (kbps * 1000)


def _old_mp3(f: BinaryIO) -> tuple[int, int, int, bool] | None:
    head = f.read(10)
    offset = 0
    if head[:3] == b"ID3" and len(head) == 10:
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
        offset = 10 + size + (10 if head[5] & 0x10 else 0)
    f.seek(offset)
    data = f.read(4096)
    first = _old_frame(data, 0)
    if first is None:
        return None
    rate, length, kbps = first
    second = _old_frame(data, length)
    if second is None or second[0] != rate:
        return None
    return rate, kbps, offset, b"Xing" in data[:length] or b"VBRI" in data[:length]


def _old_frame(data: bytes, at: int) -> tuple[int, int, int] | None:
    if at + 4 > len(data) or data[at] != 0xFF or data[at + 1] & 0xE0 != 0xE0:
        return None
    version, layer = (data[at + 1] >> 3) & 3, (data[at + 1] >> 1) & 3
    bitrate_index, rate_index, padding = data[at + 2] >> 4, (data[at + 2] >> 2) & 3, (data[at + 2] >> 1) & 1
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    rate, kbps = _RATES[version][rate_index], _BITRATES[mpeg1][bitrate_index]
    return rate, (144 if mpeg1 else 72) * 1000 * kbps // rate + padding, kbps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from musrec.audio.decode import ffmpeg_executable
    from musrec.audio.head import read_head
    from musrec.audio.scan import decode_loudest

    ffmpeg = ffmpeg_executable()
    with tempfile.TemporaryDirectory(prefix="musrec-head-bench-") as tmp:
        source = Path(tmp) / "source.wav"
        lavfi = f"sine=f=440:d={SECONDS}[a];anoisesrc=d={SECONDS}:a=0.2[b];[a][b]amix"
        subprocess.run(
            [ffmpeg, "-loglevel", "error", "-filter_complex", lavfi, "-ar", "44100", str(source)], check=True
        )
        print(f"{SECONDS}-s recordings; head reads: median of {args.repeats} rounds of {args.reads}")
        for name, options in ENCODINGS.items():
            path = Path(tmp) / (name.replace(" ", "-") + SUFFIX.get(name, ".mp3"))
            subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(source), *options, str(path)], check=True)
            old_us = median_s(lambda: [old_head(path) for _ in range(args.reads)], args.repeats) / args.reads * 1e6
            new_us = median_s(lambda: [read_head(path) for _ in range(args.reads)], args.repeats) / args.reads * 1e6
            decode_s = median_s(lambda: decode_loudest(path), 3)
            head = read_head(path)
            old_rate, old_seconds = old_head(path)
            print(
                f"{name:8s}: parser {old_us:6.1f} us (rate {old_rate}, {_s(old_seconds)}); "
                f"mutagen {new_us:6.1f} us (rate {head.mp3_rate}, {_s(head.seconds)}); x{new_us / old_us:.2f}; "
                f"decode_loudest {decode_s:.3f} s, the difference {(new_us - old_us) / 1e4 / decode_s:.4f}% of it"
            )


def _s(seconds: float | None) -> str:
    return "length unknown" if seconds is None else f"{seconds:.2f} s"


if __name__ == "__main__":
    main()
