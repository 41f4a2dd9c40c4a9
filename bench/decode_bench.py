"""A file without a start against a 10-s clip (issue 16): decoding + embedding, warm, as multiples of the clip's time.

"one pass" decodes the first 3 minutes at full quality, then takes the loudest window; the other rows are
:func:`musrec.audio.scan.decode_loudest` (a cheap envelope, then exact spans around its candidates) with the envelope
from ffmpeg at 8 kHz, and from mpg123 at a quarter rate (where mpg123 is installed: the default then). The clip is a
10-s MP3 decoded whole. Each figure is the median of ``--repeats`` runs; the machine is shared, so repeat the whole
run too. Index search (about 2 ms) is left out: it is the same for every input.

    python bench/decode_bench.py
    python bench/decode_bench.py --repeats 15
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import median_s, random_embedder

EXPR = "0.3*sin(2*PI*(220+110*floor(mod(t,8)))*t)+0.1*sin(2*PI*3*t)*sin(2*PI*660*t)"


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    return median_s(fn, repeats) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    import os

    from musrec.audio.decode import decode, ffmpeg_executable
    from musrec.audio.scan import decode_loudest, mpg123_executable
    from musrec.audio.window import SEARCH_S, WINDOW_S, choose_window, cut
    from musrec.vggish.tfutil import import_tensorflow

    import_tensorflow()
    import subprocess

    with tempfile.TemporaryDirectory(prefix="musrec-decode-") as tmp_name:
        tmp = Path(tmp_name)
        embedder = random_embedder(tmp)
        files = {}
        for seconds in (10, 180, 600):
            path = tmp / f"song{seconds}.mp3"
            subprocess.run(
                [ffmpeg_executable(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi"]
                + ["-i", f"aevalsrc='{EXPR}':s=44100:d={seconds}", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "192k"]
                + [str(path)],
                check=True,
                timeout=300,
            )
            files[seconds] = path

        def one_pass(path: Path) -> None:
            audio = decode(path, duration_s=SEARCH_S)
            embedder.embed(cut(audio.samples, choose_window(audio.samples, search_s=SEARCH_S)))

        def envelope(path: Path, *, mpg123: bool) -> None:
            if mpg123:
                os.environ.pop("MUSREC_NO_MPG123", None)
            else:
                os.environ["MUSREC_NO_MPG123"] = "1"
            mpg123_executable.cache_clear()
            embedder.embed(decode_loudest(path, duration_s=WINDOW_S, search_s=SEARCH_S).samples)

        have_mpg123 = bool(mpg123_executable())
        ways: list[tuple[str, Callable[[Path], None]]] = [
            ("one pass", one_pass),
            ("ffmpeg envelope", lambda p: envelope(p, mpg123=False)),
        ]
        if have_mpg123:
            ways.append(("mpg123 envelope", lambda p: envelope(p, mpg123=True)))
        clip_ms = _median_ms(lambda: embedder.embed(decode(files[10]).samples), args.repeats)
        rows = []
        for seconds in (180, 600):
            for name, fn in ways:
                ms = _median_ms(lambda fn=fn, s=seconds: fn(files[s]), args.repeats)  # type: ignore[misc]
                rows.append((f"{seconds}-s MP3, {name}", ms))
        ffmpeg_ms = _median_ms(
            lambda: subprocess.run(
                [ffmpeg_executable(), "-nostdin", "-v", "error", "-i", str(files[180]), "-f", "null", "-"], check=True
            ),
            args.repeats,
        )
    print(f"decode + embed, warm, median of {args.repeats} runs (2 shared cores: figures vary by 10-20% between runs)")
    print(f"{'input (no start)':<30} {'ms':>8} {'x 10-s clip':>12}")
    print(f"{'10-s MP3 clip':<30} {clip_ms:>8.1f} {1.0:>12.2f}")
    for label, ms in rows:
        print(f"{label:<30} {ms:>8.1f} {ms / clip_ms:>12.2f}")
    print(f"ffmpeg alone decoding 180 s to nothing: {ffmpeg_ms:.1f} ms ({ffmpeg_ms / clip_ms:.2f} x the clip)")
    if not have_mpg123:
        print("mpg123 is not installed: no mpg123 row (apt-get install mpg123)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
