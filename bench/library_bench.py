"""``musrec library``: how fast ``library add`` stores recordings against the model's own bound, and how a Milvus Lite
library answers at scale.

1. Throughput: ``--tracks`` 3-minute tracks (made here as music libraries hold them: 44.1 kHz stereo, ``--format``
   mp3 at 192 kbit/s by default, or flac, m4a, ogg) added as ``musrec library add`` does (decoding, hashing, tags,
   embedding, storing), in tracks/min, against the VGGish forward pass alone for 18 windows (180 examples) per
   track, measured in the same run with the same weights (random, the real shapes). Where mpg123 is installed it
   decodes MP3s (``MUSREC_NO_MPG123=1``: ffmpeg).
2. Scale: ``--segments`` synthetic AudioSet-shaped segments (musrec.audioset.synthetic, 18 per track) in one library of
   a Milvus Lite store per ``--index`` type; query latency (median and 95th percentile over ``--queries`` held-out
   segments, one match per track and plain) and recall@10 against exact search (computed here in numpy over the
   same vectors, chunk by chunk): of segments for plain search, of tracks for one match per track (the first 10
   tracks of the exact ranking).

Run: ``.venv/bin/python bench/library_bench.py`` (defaults: 8 tracks; 100,000 segments; FLAT IVF_FLAT HNSW).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import median_s, random_embedder  # noqa: E402

from musrec.audio.limits import AudioLimits  # noqa: E402
from musrec.audioset.representation import represent  # noqa: E402
from musrec.audioset.synthetic import SyntheticAudioSet  # noqa: E402
from musrec.config.library import LibraryConfig  # noqa: E402
from musrec.cores import usable_cores  # noqa: E402
from musrec.library import Library  # noqa: E402
from musrec.library.add import add_paths  # noqa: E402
from musrec.library.segments import REPRESENTATION, add_workers  # noqa: E402
from musrec.library.store import MilvusStore  # noqa: E402
from musrec.vggish.tfutil import import_tensorflow, set_intra_op_threads  # noqa: E402

TRACK_S = 180.0
WINDOWS = 18  # 10-s segments of a 3-minute track
EXAMPLES = 10 * WINDOWS
SEGMENTS_PER_TRACK = WINDOWS
CHUNK = 20_000
K = 10
SETTLE_PASSES = 30
SETTLE_QUERIES = 20
SETTLE_PAUSE_S = 5.0


# --format -> ffmpeg's encoder arguments for a track as a music library holds it
FORMATS = {
    "mp3": ("-c:a", "libmp3lame", "-b:a", "192k"),
    "flac": ("-c:a", "flac"),
    "m4a": ("-c:a", "aac", "-b:a", "192k"),
    "ogg": ("-c:a", "libvorbis", "-q:a", "5"),
}
TRACK_RATE = 44100


def make_track(path: Path, *, seed: int, title: str) -> None:
    """A 3-minute stereo track at 44.1 kHz: a melody of its own (library_fixtures.melody), the right channel 7 ms
    behind the left, encoded by ffmpeg in ``path``'s format and tagged."""
    from audio_fixtures import ffmpeg
    from library_fixtures import melody

    left = melody(seed, TRACK_S, rate=TRACK_RATE)
    pcm = np.clip(np.round(np.stack([left, np.roll(left, 300)], axis=1) * 32767), -32768, 32767).astype("<i2")
    raw = path.with_suffix(".raw")
    raw.write_bytes(pcm.tobytes())
    ffmpeg("-f", "s16le", "-ar", str(TRACK_RATE), "-ac", "2", "-i", str(raw), "-metadata", f"title={title}",
           "-metadata", "artist=Bench", *FORMATS[path.suffix.lstrip(".")], str(path))  # fmt: skip
    raw.unlink()


def throughput(tmp: Path, tracks: int, fmt: str) -> None:
    from musrec.audio.runner import mpg123_executable

    decoder = "mpg123" if fmt == "mp3" and mpg123_executable() else "ffmpeg"
    print(f"making {tracks} 3-minute {fmt} tracks (44.1 kHz stereo; decoded by {decoder}) ...", flush=True)
    music = tmp / "music"
    music.mkdir()
    for i in range(tracks):
        make_track(music / f"track{i:02d}.{fmt}", seed=100 + i, title=f"Track {i}")
    # As `musrec library add` runs the model: ADD_WORKERS passes at once, the cores shared among them. The bound is
    # the same passes alone, as many at once.
    workers = add_workers()
    threads = max(1, usable_cores() // workers)
    set_intra_op_threads(threads)
    import_tensorflow()
    embedder = random_embedder(tmp / "vggish")
    examples = np.random.default_rng(0).normal(0, 1, size=(EXAMPLES, 96, 64)).astype(np.float32)

    def forward_s() -> float:
        return median_s(lambda: at_once(workers, lambda: embedder.embed_examples(examples)), repeats=3) / workers

    before = forward_s()
    batched = hasattr(embedder, "embed_batch")
    uri = tmp / "add.db"
    library = Library(MilvusStore(str(uri)), options=LibraryConfig(uri=str(uri)), limits=AudioLimits(),
                      embedder=embedder)  # fmt: skip
    try:
        warm = add_paths(library, [music / f"track00.{fmt}"], library="warm")  # start-up costs out of the measure
        assert warm.added == 1
        report = add_paths(library, [music], library="bench")
    finally:
        library.close()
    # The bound before and after the add: a shared machine's speed drifts over a run, by a few percent.
    after = forward_s()
    bound = 60.0 / statistics.mean([before, after])
    print(f"model bound: {before:.3f} s per track before the add, {after:.3f} s after (VGGish forward pass, "
          f"{EXAMPLES} examples, {workers} at once on {threads} thread(s) each) = {bound:.1f} tracks/min")  # fmt: skip
    rate = report.tracks_per_min
    print(f"library add: {report.added} tracks ({report.segments} segments) in {report.seconds:.2f} s = "
          f"{rate:.1f} tracks/min = {100 * rate / bound:.0f}% of the model bound "
          f"({'batched forward passes' if batched else 'one forward pass per window'})")  # fmt: skip


def at_once(workers: int, work: Callable[[], object]) -> None:
    """``work`` in ``workers`` threads at once, until all have done it."""
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def vectors(gen: SyntheticAudioSet, start: int, count: int) -> npt.NDArray[np.float32]:
    rows, _ = gen.rows(start, count)
    return represent(rows, REPRESENTATION)


def exact_top(gen: SyntheticAudioSet, queries: npt.NDArray[np.float32], total: int,
              depth: int = K) -> npt.NDArray[np.int64]:  # fmt: skip
    """The exact top-``depth`` segment numbers for each query, by cosine (the vectors are unit length), chunk by
    chunk."""
    best_scores = np.full((len(queries), depth), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), depth), dtype=np.int64)
    for start in range(0, total, CHUNK):
        n = min(CHUNK, total - start)
        scores = queries @ vectors(gen, start, n).T
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, np.arange(start, start + n)[None, :].repeat(len(queries), 0)], axis=1)
        top = np.argsort(-merged_scores, axis=1)[:, :depth]
        best_scores = np.take_along_axis(merged_scores, top, 1)
        best_ids = np.take_along_axis(merged_ids, top, 1)
    return best_ids


def first_tracks(ranked: npt.NDArray[np.int64]) -> set[int]:
    """The first K tracks (numbers) of a ranking of segment numbers (K of them among its first K x 18)."""
    tracks: dict[int, None] = {}
    for segment in ranked.tolist():
        tracks.setdefault(segment // SEGMENTS_PER_TRACK, None)
        if len(tracks) == K:
            break
    return set(tracks)


def settle(store: MilvusStore, queries: npt.NDArray[np.float32]) -> None:
    """Search until a pass over the queries is no faster than the one before: Milvus Lite builds a flushed segment's
    index in the background (until then it searches that segment exhaustively), and says nothing when it is done."""
    before = float("inf")
    for _ in range(SETTLE_PASSES):
        started = time.perf_counter()
        for q in queries[:SETTLE_QUERIES]:
            store.search(q, library="bench", limit=K, one_per_track=False)
        took = time.perf_counter() - started
        if took > 0.9 * before:
            return
        before = took
        time.sleep(SETTLE_PAUSE_S)


def scale(tmp: Path, total: int, index: str, n_queries: int) -> None:
    gen = SyntheticAudioSet()
    queries = vectors(gen, 10**9, n_queries)  # held out: never inserted
    uri = tmp / f"scale-{index}-{total}.db"
    store = MilvusStore(str(uri), index=index, timeout_s=3600)
    try:
        started = time.perf_counter()
        for start in range(0, total, CHUNK):
            n = min(CHUNK, total - start)
            ids = np.arange(start, start + n)
            tracks = [f"{i // SEGMENTS_PER_TRACK:016x}" for i in ids]
            spans = np.stack([(ids % SEGMENTS_PER_TRACK) * 10.0, (ids % SEGMENTS_PER_TRACK) * 10.0 + 10], 1)
            store.insert_segments("bench", tracks, spans.astype(np.float32), vectors(gen, start, n))
        inserted_s = time.perf_counter() - started
        started = time.perf_counter()
        store.flush()
        flushed_s = time.perf_counter() - started
        ranked = exact_top(gen, queries, total, depth=min(K * SEGMENTS_PER_TRACK, total))
        exact = ranked[:, :K]

        def segment_number(hit: tuple[str, float, float, float]) -> int:
            return int(hit[0], 16) * SEGMENTS_PER_TRACK + int(hit[1] // 10)

        settle(store, queries)
        # plain and one per track, then the store's "exact" search, the reference `library add` measures recall
        # against (exhaustive on FLAT and IVF_FLAT; on HNSW a search at QUERY_LIMIT's ef)
        for kind in ("plain", "grouped", "exact"):
            times, recalls = [], []
            for q, truth, order in zip(queries, exact, ranked, strict=True):
                t = time.perf_counter()
                hits = store.search(q, library="bench", limit=K, one_per_track=kind == "grouped", exact=kind == "exact")
                times.append(time.perf_counter() - t)
                if kind == "grouped":
                    recalls.append(len({int(h[0], 16) for h in hits} & first_tracks(order)) / K)
                else:
                    recalls.append(len({segment_number(h) for h in hits} & set(truth.tolist())) / K)
            p95 = sorted(times)[int(0.95 * (len(times) - 1))]
            what = "tracks" if kind == "grouped" else "segments"
            median = 1000 * statistics.median(times)
            print(f"{total:>9,} segments  {index:<8}  {kind:<7}  median {median:7.1f} ms  p95 {1000 * p95:7.1f} ms  "
                  f"recall@10 {statistics.mean(recalls):.3f} ({what})", flush=True)  # fmt: skip
        print(f"{'':>19}{index:<8}  inserted in {inserted_s:.0f} s ({total / inserted_s:,.0f} segments/s), "
              f"flushed in {flushed_s:.1f} s", flush=True)  # fmt: skip
    finally:
        store.close()
        shutil.rmtree(uri, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=8, help="3-minute tracks added (0: skip)")
    parser.add_argument("--format", default="mp3", choices=sorted(FORMATS), help="the tracks' format")
    parser.add_argument("--segments", type=int, nargs="*", default=[100_000], help="library sizes for the scale part")
    parser.add_argument("--index", nargs="+", default=["FLAT", "IVF_FLAT", "HNSW"], help="Milvus index types")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="library-bench-"))
    try:
        if args.tracks:
            throughput(tmp, args.tracks, args.format)
        for total in args.segments:
            for index in args.index:
                scale(tmp, total, index, args.queries)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
