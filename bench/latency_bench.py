"""Query latency per stage for a warm process, and the total as a multiple of the model's forward pass alone.

A recommendation for an uploaded file goes: decode the loudest 10-s window (:func:`musrec.audio.scan.decode_loudest`:
a cheap envelope of the first minutes, then exact spans around its candidates; "window" is only bookkeeping) ->
VGGish front end (log-mel) -> the network -> PCA + quantisation -> index search (+ metadata) -> formatting. The
network is the irreducible cost; everything else is overhead to keep small.

Uses a random-weight checkpoint in the official layout (the real weights have the same shapes, so the same cost)
and a synthetic index.

    python bench/latency_bench.py                       # 3-minute MP3, 20k-segment flatten index
    python bench/latency_bench.py --segments 200000 --representation mean --repeats 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=20_000)
    parser.add_argument("--representation", default="flatten", choices=("flatten", "mean", "meanstd"))
    parser.add_argument("--audio-seconds", type=float, default=180.0)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    from musrec.audio.decode import ffmpeg_executable
    from musrec.audio.scan import decode_loudest
    from musrec.audio.window import Window
    from musrec.audioset.labels import default_labels
    from musrec.audioset.synthetic import SyntheticAudioSet
    from musrec.config import Config
    from musrec.embedding.local import LocalEmbedder
    from musrec.index.build import BuildOptions, build_index
    from musrec.index.search import Index
    from musrec.recommend.nearest import recommend_resolved
    from musrec.recommend.results import Query, Resolved
    from musrec.render import render_table
    from musrec.vggish.checkpoint import write_random_checkpoint, write_random_pca_params
    from musrec.vggish.frontend import waveform_to_examples
    from musrec.vggish.postprocess import load_pca_params, postprocess
    from musrec.vggish.tfutil import import_tensorflow

    import_tensorflow()
    config = Config()
    with tempfile.TemporaryDirectory(prefix="musrec-latency-") as tmp_name:
        tmp = Path(tmp_name)
        ckpt = write_random_checkpoint(tmp / "vggish_model.ckpt")
        pca = write_random_pca_params(tmp / "vggish_pca_params.npz")
        build_index(
            SyntheticAudioSet().segments(args.segments),
            tmp / "index",
            labels=default_labels(),
            options=BuildOptions(representation=args.representation, trees=50),
        )
        index = Index(tmp / "index")
        index.warm()
        audio_path = tmp / "song.mp3"
        import subprocess

        expr = "0.3*sin(2*PI*(220+110*floor(mod(t,8)))*t)+0.1*sin(2*PI*3*t)*sin(2*PI*660*t)"
        subprocess.run(
            [
                ffmpeg_executable(),
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                f"aevalsrc='{expr}':s=44100:d={args.audio_seconds}",
                "-ac",
                "2",
                "-c:a",
                "libmp3lame",
                "-b:a",
                "192k",
                str(audio_path),
            ],
            check=True,
            timeout=300,
        )
        embedder = LocalEmbedder(ckpt, pca)
        embedder.warm_up()
        eigen, means = load_pca_params(pca)
        limits = config.audio
        stages: dict[str, list[float]] = {
            k: [] for k in ("decode", "window", "frontend", "model", "postprocess", "search", "format")
        }
        for i in range(args.repeats + 1):
            t_dec, audio = _timed(lambda: decode_loudest(audio_path, search_s=config.audio.search_s, limits=limits))
            t_win, window = _timed(lambda: Window(audio.offset_s, audio.offset_s + audio.duration_s))
            clip = audio.samples
            t_fe, examples = _timed(lambda: waveform_to_examples(clip, 16000))
            t_model, raw = _timed(lambda: embedder.embed_examples(examples))
            t_pp, rows = _timed(lambda: postprocess(raw, eigen_vectors=eigen, means=means))
            query = Query(kind="file", source="song.mp3", start_s=window.start_s, end_s=window.end_s)
            t_search, result = _timed(lambda: recommend_resolved(Resolved(rows, query), index=index, k=10))
            t_fmt, _ = _timed(lambda: (render_table(result), json.dumps(result.to_json())))
            if i == 0:
                continue  # warm-up round
            for name, value in zip(stages, (t_dec, t_win, t_fe, t_model, t_pp, t_search, t_fmt), strict=True):
                stages[name].append(value)
        check = embedder.embed(clip)
        assert np.array_equal(check, rows), "stage-by-stage result differs from LocalEmbedder.embed"

    med = {name: statistics.median(values) * 1000 for name, values in stages.items()}
    total = sum(med.values())
    model = med["model"]
    print(
        f"{args.audio_seconds:.0f}-s MP3 (44.1 kHz stereo), {args.segments:,}-segment {args.representation} index "
        f"({index.backend.name}), median of {args.repeats} warm runs"
    )
    print(f"{'stage':<12} {'ms':>9} {'x model':>8}")
    for name, ms in med.items():
        print(f"{name:<12} {ms:>9.2f} {ms / model:>8.3f}")
    print(f"{'total':<12} {total:>9.2f} {total / model:>8.3f}")
    print(f"total without decoding: {total - med['decode']:.2f} ms = {(total - med['decode']) / model:.3f} x the model")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
