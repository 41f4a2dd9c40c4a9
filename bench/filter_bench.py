"""Label filters at scale: a filtered query's time against the same query unfiltered, on a 1M-segment index.

The index is synthetic and AudioSet-shaped (256 clusters, each with one to three of the 527 labels), so a single
label holds a few thousand segments (rare: answered by scoring them exactly) while "Music" with its 150 kinds, or
"not Music", holds hundreds of thousands (common: answered through the approximate index, asking it for more
candidates). Every figure is measured in the same run on the same held-out queries; recall@10 is against exact
search among the segments the filter lets through.

    python bench/filter_bench.py                        # 1M flatten IVF (builds once into --keep, about 5 min)
    python bench/filter_bench.py --count 200000 --keep /tmp/filter-idx
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from musrec.audioset.representation import represent
from musrec.index.search import Index

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUERIES = 100
K = 10
TRUTH_DEPTH = 2_000
HELD_OUT_START = 10**9  # synthetic segments from here on are never indexed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--representation", default="flatten")
    parser.add_argument("--keep", type=Path, help="index directory to build once and reuse")
    args = parser.parse_args()

    from musrec.audioset.labels import default_labels
    from musrec.audioset.synthetic import SyntheticAudioSet, SyntheticSpec
    from musrec.index.build import BuildOptions, build_index
    from musrec.recommend.nearest import nearest
    from musrec.recommend.results import Filters

    labels = default_labels()
    gen = SyntheticAudioSet(SyntheticSpec(seed=7))
    with tempfile.TemporaryDirectory(prefix="musrec-filter-bench-") as tmp:
        out = args.keep or Path(tmp) / "idx"
        if not (out / "manifest.json").is_file():
            started = time.monotonic()
            options = BuildOptions(representation=args.representation, backend="ivf")
            build_index(gen.segments(args.count), out, labels=labels, options=options, force=True)
            print(f"built {args.count:,} segments in {time.monotonic() - started:.0f} s")
        index = Index(out)
        index.warm()
        rows, _ = gen.rows(HELD_OUT_START, QUERIES)
        queries = represent(rows, index.representation)

        # One label per cluster-label frequency class: the rarest label present, a typical one, the commonest.
        item_labels = index.store.item_labels()
        counts = np.bincount(item_labels.flat, minlength=len(labels.names))
        present = np.flatnonzero(counts)
        by_count = present[np.argsort(counts[present])]
        rarest, median, commonest = (labels.names[by_count[i]] for i in (0, len(by_count) // 2, -1))
        cases = [
            ("unfiltered", Filters()),
            (f"rarest label: {rarest}", Filters(labels=(rarest,))),
            (f"median label: {median}", Filters(labels=(median,))),
            (f"commonest label: {commonest}", Filters(labels=(commonest,))),
            ("Music and its kinds", Filters(labels=("Music",))),
            ("not Music", Filters(not_labels=("Music",))),
            ("music only", Filters(music_only=True)),
        ]  # fmt: skip
        from musrec.index.backends import exact_search_many

        # The exact neighbours of every query, once: each filter's truth is the best of these it lets through.
        exact_ids, _ = exact_search_many(index.embeddings, index.representation, queries, TRUTH_DEPTH)
        rows_out = []
        base_ms = 0.0
        for name, filters in cases:
            allowed = filters.allowed(index, labels)
            passing = len(index) if allowed is None else int(allowed.sum())
            nearest(queries[0], index=index, k=K, filters=filters, labels=labels)  # masks built, pages warm
            times, hits = [], 0
            for q, near in zip(queries, exact_ids, strict=True):
                started = time.perf_counter()
                got = nearest(q, index=index, k=K, filters=filters, labels=labels)
                times.append(1000 * (time.perf_counter() - started))
                hits += len({m.item for m in got} & _truth(index, q, near, allowed))
            ms = statistics.median(times)
            base_ms = base_ms or ms
            recall = hits / (K * len(queries))
            rows_out.append((name, passing, ms, statistics.quantiles(times, n=20)[-1], ms / base_ms, recall))
        print(f"\n{len(index):,} segments, {index.manifest.structure()}; {QUERIES} held-out queries, k={K}")
        head = f"{'passing':>10} {'median ms':>10} {'p95 ms':>8} {'x unfiltered':>13} {'recall@10':>10}"
        print(f"{'filter (kinds included)':<44} {head}")
        for name, passing, ms, p95, ratio, recall in rows_out:
            print(f"{name[:44]:<44} {passing:>10,} {ms:>10.2f} {p95:>8.2f} {ratio:>13.2f} {recall:>10.3f}")
    return 0


def _truth(index: Index, query: np.ndarray, near: np.ndarray, allowed: np.ndarray | None) -> set[int]:
    """The exact best ``K`` among the items the filter lets through (synthetic video ids are all distinct, so one
    segment per video changes nothing)."""
    if allowed is None:
        return set(near[:K].tolist())
    kept = near[allowed[near]]
    if len(kept) >= K:
        return set(kept[:K].tolist())
    passing = np.flatnonzero(allowed)  # a rare filter: its best lie beyond the overall top TRUTH_DEPTH
    scores = represent(np.asarray(index.embeddings[passing]), index.representation) @ query
    return {int(i) for i in passing[np.argsort(-scores)][:K]}


if __name__ == "__main__":
    raise SystemExit(main())
