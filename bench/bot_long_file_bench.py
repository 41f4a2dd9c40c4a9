"""A whole song posted to the bot without a start, against a 10-s clip (issue 16): answer times as a user sees them.

The bot runs with its default settings (``bot.workers`` and the model's threads as configured by default) on the
loopback Discord stand-in (tests/discord_standin), VGGish with random weights (the real weights have the same
shapes, so the same cost) and a synthetic index. Requests go one at a time, from dispatch to the answer with results;
each figure is the median of ``--repeats``. Three MP3s (44.1 kHz stereo, 192 kbit/s): a 10-s clip, 3 minutes and 10
minutes, cut from ``--music FILE`` (repeated as needed; a real recording is the honest test: decoding cost depends
on the music) or, without it, from a synthetic piece with loud and quiet parts.

    python bench/bot_long_file_bench.py
    python bench/bot_long_file_bench.py --music song.ogg --repeats 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from common import random_embedder, scratch_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the Discord stand-in
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LENGTHS_S = (10, 180, 600)
# A piece with loud and quiet parts: notes under a swell every 40 s, a little noise.
SYNTHETIC = (
    "(0.08+0.3*pow(sin(PI*t/40),2))*(sin(2*PI*(220+55*floor(mod(t*2,8)))*t)+0.4*sin(2*PI*660*t)*sin(2*PI*0.5*t))"
    "+0.01*(2*random(0)-1)"
)


def make_mp3s(directory: Path, music: Path | None) -> dict[int, bytes]:
    from musrec.audio.decode import ffmpeg_executable

    out = {}
    for seconds in LENGTHS_S:
        path = directory / f"{seconds}.mp3"
        if music is None:
            source = ["-f", "lavfi", "-i", f"aevalsrc='{SYNTHETIC}':s=44100:d={seconds}"]
        else:
            source = ["-stream_loop", "-1", "-i", str(music), "-t", str(seconds)]
        cmd = [ffmpeg_executable(), "-nostdin", "-v", "error", "-y", *source]
        cmd += ["-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "192k", str(path)]
        subprocess.run(cmd, check=True, timeout=600)
        out[seconds] = path.read_bytes()
    return out


async def answer_times(standin: Any, data: bytes, name: str, repeats: int, user: list[int]) -> list[float]:
    """``repeats`` + 1 requests one after the other (the first not counted): dispatch to the answer with results."""
    times = []
    for i in range(repeats + 1):
        user[0] += 1
        attachment = standin.add_attachment(name, data, "audio/mpeg")
        handle = await standin.dispatch_interaction("recommend", {"clip": attachment}, user_id=user[0])
        await handle.wait_for_original(lambda m: bool(m.embeds), timeout=600.0)
        calls = sorted(handle.edits + handle.followups, key=lambda c: c.at)
        answered = next(c.at for c in calls if c.status < 300 and (c.json or {}).get("embeds"))
        if i:
            times.append(answered - handle.dispatched_at)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--music", type=Path, help="a recording to cut the MP3s from (default: a synthetic piece)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--segments", type=int, default=20_000)
    args = parser.parse_args()

    from musrec.config import load_config
    from musrec.configured import use_model_threads

    base = load_config(None, environ={})
    threads = use_model_threads(base, base.bot.workers)  # as the bot does, before TensorFlow starts
    from discord_standin import run

    from bot.client import make_bot
    from musrec.audio.scan import mpg123_executable
    from musrec.audioset.labels import default_labels
    from musrec.audioset.synthetic import SyntheticAudioSet
    from musrec.index.build import BuildOptions, build_index
    from musrec.index.search import Index
    from musrec.pipeline import Musrec
    from musrec.vggish.tfutil import import_tensorflow

    import_tensorflow()  # quietly
    with tempfile.TemporaryDirectory(prefix="musrec-longfile-") as tmp_name:
        tmp = Path(tmp_name)
        mp3s = make_mp3s(tmp, args.music)
        embedder = random_embedder(tmp)
        build_index(
            SyntheticAudioSet().segments(args.segments), tmp / "index", labels=default_labels(), options=BuildOptions()
        )
        config = scratch_config(base, tmp)

        async def scenario(standin: Any) -> dict[int, list[float]]:
            bot_config = replace(
                config, bot=replace(config.bot, attachment_hosts=(standin.cdn_hostname,), cooldown_s=0)
            )
            bot = make_bot(
                bot_config,
                musrec_factory=lambda: Musrec(config=bot_config, index=Index(tmp / "index"), embedder=embedder),
                guild_ready_timeout=0.05,
            )
            user = [90_000]
            async with standin.running(bot, timeout=300.0):
                return {s: await answer_times(standin, mp3s[s], f"{s}.mp3", args.repeats, user) for s in LENGTHS_S}

        started = time.monotonic()
        times = run(scenario, timeout=3600.0)
    source = args.music.name if args.music else "a synthetic piece"
    envelope = "mpg123" if mpg123_executable() else "ffmpeg (no mpg123)"
    print(
        f"bot answers, one request at a time, median of {args.repeats}: MP3s cut from {source}; "
        f"{base.bot.workers} workers x {threads} model threads; envelope by {envelope}; "
        f"{args.segments:,}-segment index; {time.monotonic() - started:.0f} s"
    )
    clip = statistics.median(times[LENGTHS_S[0]])
    print(f"{'posted file (no start)':<26}{'answer s':>10}{'x 10-s clip':>13}")
    for seconds in LENGTHS_S:
        median = statistics.median(times[seconds])
        print(f"{f'{seconds}-s MP3':<26}{median:>10.3f}{median / clip:>13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
