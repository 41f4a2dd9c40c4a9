"""Full-scale index benchmark: 1M and 2M synthetic AudioSet-shaped segments, every figure a ratio against exact search.

Each run builds an index in one process (its build time and peak memory are its own, on all cores), then loads and
queries it in another, with one thread: exact numpy search over all vectors in memory is the baseline, timed on the
same queries in the same run. Queries are held out (generated far outside the indexed range, so never indexed);
recall on indexed segments queried leave-one-out is measured too, as it can flatter an index.

    python bench/scale_bench.py                                   # 1M flatten and 2M mean, IVF (about 40 min)
    python bench/scale_bench.py --runs 2000000:meanstd --backend ivf
    python bench/scale_bench.py --runs 200000:flatten --backend annoy --keep /tmp/idx

Columns: build s / peak MiB (ru_maxrss, which counts the memory-mapped file pages the build touched) / anon MiB (the
peak of anonymous memory alone, sampled; the JSON also has the file-page peak) / disk MiB / load ms (constructing
``Index``) / warm s / query ms and its recall@10 on held-out and leave-one-out queries / the build's own held-out and
leave-one-out recall (manifest) / exact ms / speedup = exact ms / query ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_RUNS = ("1000000:flatten", "2000000:mean")
QUERIES = 200
EXACT_TIMED = 30  # exact search at 1M x 1280 takes a good fraction of a second per query
K = 10
CHUNK = 20_000
HELD_OUT_START = 10**9  # synthetic segments from here on are never indexed


class MemoryPeaks:
    """Samples this process's resident memory in the background: peaks of RssAnon and RssFile, in MiB.

    Anonymous memory is what the build allocates; file pages (memory-mapped files, shared libraries) are clean page
    cache that the kernel can drop at any time.
    """

    def __init__(self, every_s: float = 0.1) -> None:
        self.peaks = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            for line in Path("/proc/self/status").read_text().splitlines():
                key = line.split(":")[0]
                if key in self.peaks:
                    self.peaks[key] = max(self.peaks[key], int(line.split()[1]) // 1024)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def build_worker(size: int, representation: str, backend: str, out: Path, target: float) -> dict[str, Any]:
    from musrec.audioset.labels import default_labels
    from musrec.audioset.synthetic import SyntheticAudioSet
    from musrec.index.build import BuildOptions, build_index

    memory = MemoryPeaks()
    started = time.perf_counter()
    manifest = build_index(
        SyntheticAudioSet().segments(size, chunk=CHUNK),
        out,
        labels=default_labels(),
        options=BuildOptions(representation=representation, backend=backend, target_recall=target),
        force=True,
    )
    peaks = memory.stop()
    return {
        "build_s": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_anon_mib": peaks["RssAnon"],
        "peak_file_mib": peaks["RssFile"],
        "files_mib": {p.name: round(p.stat().st_size / 2**20, 1) for p in out.iterdir()},
        "manifest": json.loads(manifest.to_json()),
    }


def query_worker(out: Path) -> dict[str, Any]:
    import numpy as np

    from musrec.audioset.representation import represent
    from musrec.audioset.synthetic import SyntheticAudioSet
    from musrec.index.search import Index, exact_search_many

    t0 = time.perf_counter()
    index = Index(out)  # the backend the build chose
    load_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    index.warm()
    warm_s = time.perf_counter() - t0
    representation = index.representation

    held_out, _ = SyntheticAudioSet().rows(HELD_OUT_START, QUERIES)
    queries = represent(held_out, representation)
    rng = np.random.default_rng(1)
    own = np.sort(rng.choice(len(index), size=QUERIES, replace=False))
    loo_queries = represent(np.asarray(index.embeddings[own]), representation)

    def timed(search: Any, qs: Any, n: int = K) -> tuple[float, list[Any]]:
        search(qs[0], n)
        out = []
        t = time.perf_counter()
        for q in qs:
            out.append(search(q, n)[0])
        return (time.perf_counter() - t) / len(qs), out

    # The index is queried before the baseline's float matrix exists, so that matrix cannot push its pages out.
    ann_s, found = timed(index.search, queries)
    _, loo_found = timed(index.search, loo_queries, K + 1)

    t0 = time.perf_counter()
    matrix = index.all_vectors()  # the baseline holds every vector in memory
    matrix_s = time.perf_counter() - t0
    truth, _ = exact_search_many(index.embeddings, representation, queries, K, matrix=matrix)
    loo_truth, _ = exact_search_many(index.embeddings, representation, loo_queries, K + 1, matrix=matrix)
    recall = sum(len(set(f.tolist()) & set(w.tolist())) for f, w in zip(found, truth, strict=True)) / (K * QUERIES)
    loo_hits = 0
    for ids, item, want in zip(loo_found, own, loo_truth, strict=True):
        got = [i for i in ids.tolist() if i != item][:K]
        loo_hits += len(set(got) & ({int(i) for i in want} - {int(item)}))
    loo_recall = loo_hits / (K * QUERIES)

    from musrec.index.search import ExactBackend

    exact = ExactBackend(matrix)
    exact_s, exact_found = timed(exact.search, queries[:EXACT_TIMED])
    exact_recall = sum(
        len(set(f.tolist()) & set(w.tolist())) for f, w in zip(exact_found, truth[:EXACT_TIMED], strict=True)
    ) / (K * EXACT_TIMED)
    return {
        "backend": index.backend.name,
        "load_ms": round(load_ms, 1),
        "warm_s": round(warm_s, 2),
        "matrix_s": round(matrix_s, 1),
        "query_ms": round(ann_s * 1000, 3),
        "recall_held_out": round(recall, 4),
        "recall_leave_one_out": round(loo_recall, 4),
        "exact_ms": round(exact_s * 1000, 2),
        "exact_recall": round(exact_recall, 4),
        "speedup_vs_exact": round(exact_s / ann_s, 1),
    }


def _run_worker(args: list[str], env: dict[str, str]) -> dict[str, Any] | str:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["no output"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), metavar="SIZE:REPRESENTATION")
    parser.add_argument("--backend", default="ivf", choices=("auto", "annoy", "ivf"), help="what the build makes")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--keep", type=Path, help="build into DIR/<size>-<representation> and keep the indexes")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--build-worker", nargs=3, metavar=("SIZE", "REPRESENTATION", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--query-worker", type=Path, metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_worker:
        size, representation, out = args.build_worker
        print(json.dumps(build_worker(int(size), representation, args.backend, Path(out), args.target_recall)))
        return 0
    if args.query_worker:
        print(json.dumps(query_worker(args.query_worker)))
        return 0

    # The build uses every core; queries and the exact baseline run on one thread, one query at a time.
    one_thread = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    query_env = {**os.environ, **one_thread}
    header = (
        f"{'size':>9} {'repr':>8} {'backend':>7} {'build s':>8} {'peak MiB':>9} {'anon MiB':>9} {'disk MiB':>9} "
        f"{'param':>6} {'load ms':>8} {'warm s':>7} {'query ms':>9} {'held-out':>9} {'l-o-o':>6} "
        f"{'build h-o':>9} {'build loo':>9} {'exact ms':>9} {'speedup':>8}"
    )
    print(header, flush=True)
    rows = []
    for run in args.runs:
        size_text, _, representation = run.partition(":")
        size = int(size_text)
        with contextlib.ExitStack() as stack:
            base = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="musrec-scale-")))
            out = base / f"{size}-{representation}"
            build = _run_worker(
                ["--build-worker", str(size), representation, str(out), "--backend", args.backend,
                 "--target-recall", str(args.target_recall)],
                dict(os.environ),
            )  # fmt: skip
            if isinstance(build, str):
                print(f"{size:>9} {representation:>8} build failed: {build}", flush=True)
                continue
            query = _run_worker(["--query-worker", str(out)], query_env)
            if isinstance(query, str):
                print(f"{size:>9} {representation:>8} queries failed: {query}", flush=True)
                continue
        m = build["manifest"]
        param = m["nprobe"] if m["ann"] == "ivf" else m["search_k"]
        row = {"size": size, "representation": representation, **build, **query}
        rows.append(row)
        print(
            f"{size:>9} {representation:>8} {query['backend']:>7} {build['build_s']:>8} {build['peak_rss_mib']:>9} "
            f"{build['peak_anon_mib']:>9} {sum(build['files_mib'].values()):>9.0f} {param:>6} {query['load_ms']:>8} "
            f"{query['warm_s']:>7} {query['query_ms']:>9} {query['recall_held_out']:>9} "
            f"{query['recall_leave_one_out']:>6} {m['recall_at_10']:>9} {m['recall_leave_one_out']:>9} "
            f"{query['exact_ms']:>9} {query['speedup_vs_exact']:>7}x",
            flush=True,
        )
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
