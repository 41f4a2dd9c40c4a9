"""Exact top-k (the truth a build measures recall against, and the exact search of indexes that hold no float copy):
musrec's numpy accumulator against faiss's, in the same run on the same vectors.

Three ways to keep each query's best ``k`` over consecutive chunks of unit vectors, exclusions included:

- ``numpy``: the chunk's scores by matrix product (BLAS), each row's best by ``argpartition``, merged with the best
  so far (musrec's ``TopN`` before faiss took its heap);
- ``faiss.knn``: faiss computes the chunk's best ``k`` (plus the excluded) itself, merged in a ``faiss.ResultHeap``;
- ``numpy + ResultHeap``: the scores by matrix product, every one pushed into a ``faiss.ResultHeap`` (C++).

Two cases: a build's truth (400 queries, ``recall_queries`` held out and as many indexed, k 11, chunks of
``READ_CHUNK``), and one query streamed over the rows (``ScanBackend``: k 10, chunks of 65,536). Printed: median
seconds and each way's ratio to ``numpy`` (below 1: faster), with the share of identical ids.

    python bench/topn_bench.py
    python bench/topn_bench.py --count 400000 --repeats 9
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
from common import median_s

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

Arr = npt.NDArray[np.float32]


class NumpyTopN:
    """The accumulator musrec's TopN was before it kept faiss's heap (the baseline)."""

    def __init__(self, queries: Arr, n: int, exclude: npt.NDArray[np.int64]) -> None:
        self.queries, self.n, self.exclude = queries, n, exclude
        self.ids = np.zeros((len(queries), 0), dtype=np.int64)
        self.scores = np.zeros((len(queries), 0), dtype=np.float32)

    def update(self, lo: int, vectors: Arr) -> None:
        scores = self.queries @ vectors.T
        skip = self.exclude[(self.exclude >= lo) & (self.exclude < lo + len(vectors))]
        scores[:, skip - lo] = -np.inf
        full = self.scores.shape[1] == self.n
        if full:
            rows = np.flatnonzero((scores > self.scores.min(axis=1)[:, None]).any(axis=1))
            if len(rows) == 0:
                return
        else:
            rows = np.arange(len(scores))
        chunk_ids, chunk_scores = _row_top(scores[rows], self.n)
        cand_ids = np.concatenate([self.ids[rows], chunk_ids + lo], axis=1)
        cand_scores = np.concatenate([self.scores[rows], chunk_scores], axis=1)
        part, best = _row_top(cand_scores, self.n)
        if full:
            self.ids[rows] = np.take_along_axis(cand_ids, part, axis=1)
            self.scores[rows] = best
        else:
            self.ids, self.scores = np.take_along_axis(cand_ids, part, axis=1), best

    def result(self) -> npt.NDArray[np.int64]:
        order = np.argsort(-self.scores, axis=1, kind="stable")
        return np.take_along_axis(self.ids, order, axis=1)


def _row_top(scores: Arr, n: int) -> tuple[npt.NDArray[np.int64], Arr]:
    cols = scores.shape[1]
    if n >= cols:
        return np.broadcast_to(np.arange(cols, dtype=np.int64), scores.shape), scores
    part = np.argpartition(scores, cols - n, axis=1)[:, cols - n :]
    return part.astype(np.int64), np.take_along_axis(scores, part, axis=1)


class KnnTopN:
    def __init__(self, queries: Arr, n: int, exclude: npt.NDArray[np.int64]) -> None:
        self.queries, self.n, self.exclude = queries, n, exclude
        self.heap = faiss.ResultHeap(len(queries), n, keep_max=True)

    def update(self, lo: int, vectors: Arr) -> None:
        skip = self.exclude[(self.exclude >= lo) & (self.exclude < lo + len(vectors))]
        m = min(self.n + len(skip), len(vectors))
        scores, ids = faiss.knn(self.queries, vectors, m, metric=faiss.METRIC_INNER_PRODUCT)
        scores[np.isin(ids, skip - lo)] = -np.inf
        self.heap.add_result(scores, ids + lo)

    def result(self) -> npt.NDArray[np.int64]:
        self.heap.finalize()
        return self.heap.I


class HeapTopN:
    def __init__(self, queries: Arr, n: int, exclude: npt.NDArray[np.int64]) -> None:
        self.queries, self.n, self.exclude = queries, n, exclude
        self.heap = faiss.ResultHeap(len(queries), n, keep_max=True)
        self.every = np.arange(len(queries), dtype=np.int64)

    def update(self, lo: int, vectors: Arr) -> None:
        scores = self.queries @ vectors.T
        skip = self.exclude[(self.exclude >= lo) & (self.exclude < lo + len(vectors))]
        scores[:, skip - lo] = -np.inf
        self.heap.add_result_subset(self.every, scores, np.arange(lo, lo + len(vectors), dtype=np.int64))

    def result(self) -> npt.NDArray[np.int64]:
        self.heap.finalize()
        return self.heap.I


WAYS: dict[str, Callable[[Arr, int, npt.NDArray[np.int64]], NumpyTopN | KnnTopN | HeapTopN]] = {
    "numpy": NumpyTopN,
    "faiss.knn": KnnTopN,
    "numpy + ResultHeap": HeapTopN,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = [  # (what, dimension, queries, k, chunk, excluded)
        ("build truth, mean (128)", 128, 400, 11, 16_384, 200),
        ("build truth, flatten (1280)", 1280, 400, 11, 16_384, 200),
        ("one query, mean (128)", 128, 1, 10, 65_536, 0),
        ("one query, flatten (1280)", 1280, 1, 10, 65_536, 0),
    ]
    print(f"{args.count:,} unit vectors, median of {args.repeats}; faiss threads {faiss.omp_get_max_threads()}")
    for what, dim, nq, k, chunk, excluded in cases:
        base = rng.normal(size=(args.count, dim)).astype(np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        queries = base[rng.choice(args.count, nq, replace=False)] + 0.1 * rng.normal(size=(nq, dim)).astype(np.float32)
        exclude = np.sort(rng.choice(args.count, excluded, replace=False)).astype(np.int64)

        def run(way: str) -> npt.NDArray[np.int64]:
            acc = WAYS[way](queries, k, exclude)
            for lo in range(0, args.count, chunk):
                acc.update(lo, base[lo : lo + chunk])
            return acc.result()

        truth = run("numpy")
        times = {way: median_s(lambda: run(way), args.repeats) for way in WAYS}
        line = []
        for way, seconds in times.items():
            same = np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, run(way), strict=True)])
            line.append(f"{way} {seconds:.3f} s (x{seconds / times['numpy']:.2f}, ids {same:.3f})")
        print(f"{what:28s}: " + "; ".join(line))


if __name__ == "__main__":
    main()
