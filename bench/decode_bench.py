"""A file without a start against a 10-s clip (issue 16): decoding + embedding, warm, as multiples of the clip's time.

"before" is the one-pass path (the first 3 minutes at full quality, then the loudest window); "after" is
:func:`musrec.audio.scan.decode_loudest` (a low-rate scan, then only the window). The clip is a 10-s MP3 decoded
whole. Each figure is the median of ``--repeats`` runs; the machine is shared, so repeat the whole run too.
Index search (about 2 ms) is left out: it is the same for every input.

    python bench/decode_bench.py
    python bench/decode_bench.py --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXPR = "0.3*sin(2*PI*(220+110*floor(mod(t,8)))*t)+0.1*sin(2*PI*3*t)*sin(2*PI*660*t)"


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    from musrec.audio.decode import SEARCH_S, WINDOW_S, choose_window, cut, decode, ffmpeg_executable
    from musrec.audio.scan import SCAN_RATE, decode_loudest
    from musrec.embedding.local import LocalEmbedder
    from musrec.vggish.checkpoint import write_random_checkpoint, write_random_pca_params
    from musrec.vggish.tfutil import import_tensorflow

    import_tensorflow()
    import subprocess

    with tempfile.TemporaryDirectory(prefix="musrec-decode-") as tmp_name:
        tmp = Path(tmp_name)
        embedder = LocalEmbedder(
            write_random_checkpoint(tmp / "vggish_model.ckpt"), write_random_pca_params(tmp / "pca.npz")
        )
        embedder.warm_up()
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

        def before(path: Path) -> None:
            audio = decode(path, duration_s=SEARCH_S)
            embedder.embed(cut(audio.samples, choose_window(audio.samples, search_s=SEARCH_S)))

        def after(path: Path) -> None:
            embedder.embed(decode_loudest(path, duration_s=WINDOW_S, search_s=SEARCH_S).samples)

        clip_ms = _median_ms(lambda: embedder.embed(decode(files[10]).samples), args.repeats)
        rows = []
        for seconds in (180, 600):
            for name, fn in (("before", before), ("after", after)):
                ms = _median_ms(lambda fn=fn, s=seconds: fn(files[s]), args.repeats)  # type: ignore[misc]
                rows.append((f"{seconds}-s MP3, {name}", ms))
        scan_ms = _median_ms(lambda: decode(files[180], duration_s=SEARCH_S, sample_rate=SCAN_RATE), args.repeats)
        ffmpeg_ms = _median_ms(
            lambda: subprocess.run(
                [ffmpeg_executable(), "-nostdin", "-v", "error", "-i", str(files[180]), "-f", "null", "-"], check=True
            ),
            args.repeats,
        )
    print(f"decode + embed, warm, median of {args.repeats} runs (2 shared cores: figures vary by 10-20% between runs)")
    print(f"{'input (no start)':<22} {'ms':>8} {'x 10-s clip':>12}")
    print(f"{'10-s MP3 clip':<22} {clip_ms:>8.1f} {1.0:>12.2f}")
    for label, ms in rows:
        print(f"{label:<22} {ms:>8.1f} {ms / clip_ms:>12.2f}")
    print(f"of which the {SCAN_RATE} Hz scan of 180 s: {scan_ms:.1f} ms")
    print(f"ffmpeg alone decoding those 180 s to nothing: {ffmpeg_ms:.1f} ms (the floor of any full scan)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
