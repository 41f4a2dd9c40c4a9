"""Index benchmark on synthetic AudioSet-shaped data: build cost, size, query latency and recall@10.

Every figure is measured in the same run against exact numpy search (one thread, one query at a time, all vectors
in memory), the baseline that approximate search must beat. Queries are held out: fresh segments from the same
distribution that are not in the index, as a new clip would be. Each (size, representation) build runs in its own
process so that its peak memory is its own.

    python bench/index_bench.py                      # 20k and 200k segments, all representations
    python bench/index_bench.py --full               # also 1M
    python bench/index_bench.py --sizes 20000 --representations mean
    python bench/index_bench.py --backend ivf        # the faiss IVF structure instead of Annoy

bench/scale_bench.py runs the full-size (1M, 2M) measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SIZES = (20_000, 200_000)
FULL_SIZE = 1_000_000
REPRESENTATIONS = ("flatten", "mean", "meanstd")
QUERIES = 200
K = 10


def worker(size: int, representation: str, trees: int, target: float, backend: str) -> dict[str, object]:

    from musrec.audioset.labels import default_labels
    from musrec.audioset.representation import represent
    from musrec.audioset.synthetic import SyntheticAudioSet
    from musrec.index.build import BuildOptions, build_index
    from musrec.index.search import Index, exact_search_many

    gen = SyntheticAudioSet()
    with tempfile.TemporaryDirectory(prefix="musrec-bench-") as tmp:
        out = Path(tmp) / "idx"
        started = time.perf_counter()
        manifest = build_index(
            gen.segments(size, chunk=20_000),
            out,
            labels=default_labels(),
            options=BuildOptions(representation=representation, trees=trees, target_recall=target, backend=backend),
        )
        build_s = time.perf_counter() - started
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        size_mib = {p.name: p.stat().st_size / 2**20 for p in out.iterdir()}

        held_out, _ = gen.rows(10**9, QUERIES)  # far outside the indexed range: never indexed
        queries = represent(held_out, representation)
        approx = Index(out, backend=manifest.ann)
        approx.warm()
        exact = Index(out, backend="exact")
        truth, _ = exact_search_many(exact.embeddings, representation, queries, K, matrix=exact.backend.vectors)

        def run(index: Index) -> tuple[float, float]:
            index.search(queries[0], K)
            hits = 0
            t0 = time.perf_counter()
            for q, want in zip(queries, truth, strict=True):
                ids, _ = index.search(q, K)
                hits += len(set(ids.tolist()) & set(want.tolist()))
            return (time.perf_counter() - t0) / len(queries), hits / (K * len(queries))

        approx_s, approx_recall = run(approx)
        exact_s, exact_recall = run(exact)
    return {
        "size": size,
        "representation": representation,
        "dimension": manifest.dimension,
        "ann": manifest.ann,
        "trees": manifest.trees,
        "search_k": manifest.search_k if manifest.ann == "annoy" else manifest.nprobe,
        "build_recall_held_out": manifest.recall_at_10,
        "build_recall_leave_one_out": manifest.recall_leave_one_out,
        "build_s": round(build_s, 1),
        "peak_rss_mib": round(peak_mib),
        "files_mib": {k: round(v, 1) for k, v in size_mib.items()},
        "approx_ms": round(approx_s * 1000, 3),
        "approx_recall_at_10": round(approx_recall, 4),
        "exact_ms": round(exact_s * 1000, 3),
        "exact_recall_at_10": round(exact_recall, 4),
        "speedup_vs_exact": round(exact_s / approx_s, 2),
        "auto_backend": manifest.preferred_backend,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--full", action="store_true", help=f"add {FULL_SIZE:,} segments")
    parser.add_argument("--representations", nargs="+", choices=REPRESENTATIONS, default=list(REPRESENTATIONS))
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--backend", choices=("annoy", "ivf"), default="annoy", help="the structure to build")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "REPRESENTATION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        row = worker(int(args.worker[0]), args.worker[1], args.trees, args.target_recall, args.backend)
        print(json.dumps(row))
        return 0

    sizes = sorted(set(args.sizes + ([FULL_SIZE] if args.full else [])))
    # One BLAS thread: the baseline is single-query, single-thread exact search, and so is Annoy's query loop.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rows = []
    header = (
        f"{'size':>9} {'repr':>8} {'dim':>5} {'build s':>8} {'peak MiB':>9} {'disk MiB':>9} {'param':>9} "
        f"{args.backend + ' ms':>9} {'recall':>7} {'build h-o':>9} {'build loo':>9} {'exact ms':>9} {'speedup':>8} "
        f"{'auto':>6}"
    )
    print(header, flush=True)
    for size in sizes:
        for representation in args.representations:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                str(size),
                representation,
                "--trees",
                str(args.trees),
                "--target-recall",
                str(args.target_recall),
                "--backend",
                args.backend,
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                print(
                    f"{size:>9} {representation:>8} failed: {done.stderr.strip().splitlines()[-1:]}",
                    flush=True,
                )
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            disk = sum(row["files_mib"].values())
            print(
                f"{size:>9} {representation:>8} {row['dimension']:>5} {row['build_s']:>8} {row['peak_rss_mib']:>9} "
                f"{disk:>9.1f} {row['search_k']:>9} {row['approx_ms']:>9} {row['approx_recall_at_10']:>7} "
                f"{row['build_recall_held_out']:>9} {row['build_recall_leave_one_out']:>9} "
                f"{row['exact_ms']:>9} {row['speedup_vs_exact']:>7}x {row['auto_backend']:>6}",
                flush=True,
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
