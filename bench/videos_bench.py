"""What checking matches' videos adds to an answer: the answer's time with the check, against a YouTube stand-in
that answers each oEmbed request in 50 ms, cold (nothing known: every candidate asked) and warm (all known: the
store answers), as a ratio to the same answer with the check off, in the same run.

The answers are searches from indexed segments (``audioset:VIDEO@START``): nothing is embedded, so the search is
all an answer costs and the check's share is as large as it gets. Then the same for uploaded clips (10-s WAVs,
VGGish with random weights: the real model's cost), what the bot answers most.

    python bench/videos_bench.py                       # 50,000 synthetic segments (builds in about a minute)
    python bench/videos_bench.py --count 200000 --keep /tmp/videos-idx
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUERIES = 60
REPEATS = 5  # rounds of the warm and unchecked answers
CLIPS = 12
K = 10
ANSWER_S = 0.05  # the stand-in's time to answer one oEmbed request
GONE_EVERY = 6  # about a sixth of AudioSet's videos are gone (REFERENCE.md section 9)


@contextmanager
def standin(delay_s: float) -> Iterator[tuple[str, list[int]]]:
    """An oEmbed stand-in on 127.0.0.1 answering after ``delay_s``: 404 for one video in GONE_EVERY (by a hash of
    its id), else 200 with a title; (its URL, requests served)."""
    served = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            time.sleep(delay_s)
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            video_id = urllib.parse.parse_qs(urllib.parse.urlsplit(query["url"][0]).query)["v"][0]
            gone = zlib.crc32(video_id.encode()) % GONE_EVERY == 0
            body = b"Not Found" if gone else json.dumps({"title": f"Title of {video_id}", "author_name": "C"}).encode()
            self.send_response(404 if gone else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            served[0] += 1

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/oembed", served
    finally:
        server.shutdown()
        server.server_close()


def timed(answer: Callable[[str], object], refs: list[str]) -> list[float]:
    times = []
    for ref in refs:
        started = time.perf_counter()
        answer(ref)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50_000, help="synthetic segments in the index")
    parser.add_argument("--keep", type=Path, help="index directory to build once and reuse")
    parser.add_argument("--queries", type=int, default=QUERIES)
    parser.add_argument("--clips", type=int, default=CLIPS, help="clip answers (0: none)")
    args = parser.parse_args()

    from bench.common import random_embedder, scratch_config
    from musrec.audio.wav import to_wav_bytes
    from musrec.audioset.labels import default_labels
    from musrec.audioset.synthetic import SyntheticAudioSet, SyntheticSpec
    from musrec.config import load_config
    from musrec.index.build import BuildOptions, build_index
    from musrec.index.search import Index
    from musrec.pipeline import Musrec

    with tempfile.TemporaryDirectory(prefix="musrec-videos-bench-") as tmp:
        config = scratch_config(load_config(None, environ={}), Path(tmp))
        out = args.keep or config.index_path
        config = replace(config, index=replace(config.index, path=out))
        if not (out / "manifest.json").is_file():
            started = time.monotonic()
            segments = SyntheticAudioSet(SyntheticSpec(seed=11)).segments(args.count)
            build_index(segments, out, labels=default_labels(), options=BuildOptions(), force=True)
            print(f"built {args.count:,} segments in {time.monotonic() - started:.0f} s")
        index = Index(out)
        index.warm()
        step = max(1, len(index) // args.queries)
        refs = []
        for item in range(0, step * args.queries, step):
            info = index.store.get(item)
            refs.append(f"audioset:{info.video_id}@{info.start_s:g}")
        print(f"{len(index):,} segments ({index.manifest.structure()}), {len(refs)} answers of k={K} each")

        embedder = random_embedder(Path(tmp)) if args.clips else None
        clips = [to_wav_bytes(tone(i)) for i in range(args.clips)]
        off = Musrec(config=replace(config, videos=replace(config.videos, check=False)), index=index, embedder=embedder)
        off.recommend(refs[0], k=K)  # labels, masks: loaded before timing
        print(f"stand-in: {ANSWER_S * 1000:.0f} ms an oEmbed request, a sixth of the videos gone; budget "
              f"{config.videos.budget_s} s, {config.videos.concurrency} requests at once")  # fmt: skip
        with standin(ANSWER_S) as (url, served):
            videos = replace(config.videos, oembed_url=url, cache_path=Path(tmp) / "videos.sqlite3")
            on = Musrec(config=replace(config, videos=videos), index=index, embedder=embedder)
            compare("indexed segments", off, on, refs, served, repeats=REPEATS)
            if clips:
                compare("10-s clips", off, on, clips, served, repeats=2)
            named = sum(m.video is not None and m.video.title is not None for m in on.recommend(refs[0], k=K).matches)
            on.close()
        print(f"names shown: {named} of {K} matches of an answer")
    return 0


def tone(i: int) -> Any:
    """10 s of a tone of its own (each clip finds other matches)."""
    import numpy as np

    t = np.arange(10 * 16000) / 16000
    return 0.3 * np.sin(2 * np.pi * (110.0 * 2 ** (i / 5)) * t) + 0.1 * np.sin(2 * np.pi * (3 + i) * t)


def compare(what: str, off: Any, on: Any, sources: list[Any], served: list[int], *, repeats: int) -> None:
    """Answers to ``sources`` checked cold (once), then warm and unchecked interleaved ``repeats`` times, each first in
    turn (the machine's drift and the second one's warmer caches fall on both alike); the figures printed."""
    before = served[0]
    cold = timed(lambda s: on.recommend(s, k=K, start_s=0.0 if isinstance(s, bytes) else None), sources)
    asked_cold = served[0] - before
    baseline: list[float] = []
    warm: list[float] = []
    for round_ in range(repeats):
        for i, source in enumerate(sources):
            start = 0.0 if isinstance(source, bytes) else None
            for musrec, times in ((off, baseline), (on, warm))[:: 1 if (round_ + i) % 2 else -1]:
                times += timed(functools.partial(musrec.recommend, k=K, start_s=start), [source])
    asked_warm = served[0] - before - asked_cold
    base = statistics.median(baseline)
    print(f"{what}: no check: median {base * 1000:.2f} ms an answer ({len(baseline)} answers)")
    for name, times, asked in (("cold", cold, asked_cold), ("warm", warm, asked_warm)):
        median = statistics.median(times)
        print(
            f"{what}: check {name}: median {median * 1000:.2f} ms = {median / base:.3f}x no check "
            f"({(median / base - 1) * 100:+.1f}%), max {max(times) * 1000:.1f} ms; "
            f"{asked} oEmbed requests for {len(times)} answers"
        )


if __name__ == "__main__":
    raise SystemExit(main())
