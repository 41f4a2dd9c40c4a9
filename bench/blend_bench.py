"""Blends: the normalised mean of the sounds' vectors against reciprocal rank fusion of their separate searches.

A blend should find what sounds like *all* its sounds, so a result is only as good as its similarity to the sound
it is farthest from. For pairs (and triples) of indexed segments from different clusters of an AudioSet-shaped
synthetic index, each method's top 10 is scored by that worst similarity (higher: closer to all of them), beside
the best possible (exact search for the segments whose worst similarity is highest) and the time per blend.

    python bench/blend_bench.py                  # 50k segments, 100 pairs and 100 triples
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

K = 10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--blends", type=int, default=100)
    args = parser.parse_args()

    from musrec.audioset.labels import default_labels
    from musrec.audioset.representation import represent
    from musrec.audioset.synthetic import SyntheticAudioSet, SyntheticSpec
    from musrec.index.build import BuildOptions, build_index
    from musrec.index.search import Index
    from musrec.recommend.blend import blend
    from musrec.recommend.segments import resolve_segment

    labels = default_labels()
    gen = SyntheticAudioSet(SyntheticSpec(seed=11))
    _, clusters = gen.rows(0, args.count)  # the generator is deterministic per range: the index's own clusters
    rng = np.random.default_rng(5)
    with tempfile.TemporaryDirectory(prefix="musrec-blend-bench-") as tmp:
        out = Path(tmp) / "idx"
        build_index(gen.segments(args.count, chunk=args.count), out, labels=labels, options=BuildOptions())
        index = Index(out)
        vectors = represent(np.asarray(index.embeddings), index.representation)
        print(f"{len(index):,} segments, {index.manifest.structure()}; top {K}, {args.blends} blends of each size")
        print(f"{'sounds':>6} {'method':>7} {'worst sim (mean)':>17} {'of the best possible':>21} {'ms/blend':>9}")
        for size in (2, 3):
            picks = []
            while len(picks) < args.blends:
                items = rng.choice(len(index), size=size, replace=False)
                if len(set(clusters[items].tolist())) == size:  # sounds that really differ
                    picks.append(items)
            best = [_best_possible(vectors, items) for items in picks]
            for method in ("mean", "rrf"):
                worst, took = [], []
                for items in picks:
                    refs = [index.store.get(int(i)) for i in items]
                    sounds = [resolve_segment(f"audioset:{r.video_id}@{r.start_s:g}", index=index) for r in refs]
                    started = time.perf_counter()
                    result = blend(sounds, index=index, k=K, labels=labels, method=method)
                    took.append(1000 * (time.perf_counter() - started))
                    worst.append(float(np.mean([min(m.similarities) for m in result.matches])))
                share = statistics.mean(w / b for w, b in zip(worst, best, strict=True))
                ms = statistics.median(took)
                print(f"{size:>6} {method:>7} {statistics.mean(worst):>17.4f} {share:>21.3f} {ms:>9.2f}")
    return 0


def _best_possible(vectors: np.ndarray, items: np.ndarray) -> float:
    """The mean worst similarity of the K segments (other than the sounds) whose worst similarity is highest."""
    worst = np.min(vectors @ vectors[items].T, axis=1)
    worst[items] = -np.inf
    return float(np.mean(np.sort(worst)[-K:]))


if __name__ == "__main__":
    raise SystemExit(main())
