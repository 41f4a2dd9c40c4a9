"""Synthetic AudioSet-shaped data, for tests, benchmarks and trying the pipeline without the real features.

Segments are drawn around cluster centres in the 128-d PCA space (so nearest neighbours are meaningful and
approximate search has a realistic job to do), with ten correlated rows each (AR(1) drift within a segment, as
consecutive seconds of one recording are alike), quantised to uint8 exactly as the released embeddings are.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from musrec.audioset.records import Segment
from musrec.audioset.representation import SEGMENT_ROWS
from musrec.vggish.postprocess import EMBEDDING_SIZE, QUANTIZE_MAX, QUANTIZE_MIN, QUANTIZE_SCALE

_ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
_N_LABELS = 527


@dataclass(frozen=True)
class SyntheticSpec:
    clusters: int = 256
    centre_scale: float = 0.6
    segment_scale: float = 0.35
    row_scale: float = 0.25
    row_correlation: float = 0.8
    seed: int = 0


def quantize(values: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    clipped = np.clip(values, QUANTIZE_MIN, QUANTIZE_MAX)
    return ((clipped - QUANTIZE_MIN) * QUANTIZE_SCALE).astype(np.uint8)


class SyntheticAudioSet:
    """A reproducible generator: ``rows(start, count)`` gives the same segments for the same range every time."""

    def __init__(self, spec: SyntheticSpec = SyntheticSpec()) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        self.centres = rng.normal(0.0, spec.centre_scale, size=(spec.clusters, EMBEDDING_SIZE))
        # Each cluster carries 1-3 labels; the low indices include music classes (137..282) and others.
        self.cluster_labels = [
            tuple(sorted(set(rng.choice(_N_LABELS, size=rng.integers(1, 4), replace=False).tolist())))
            for _ in range(spec.clusters)
        ]

    def rows(
        self, start: int, count: int, *, chunk_seed: int | None = None
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        """Segments ``start .. start+count``: uint8 [count, 10, 128] and their cluster ids."""
        rng = np.random.default_rng((self.spec.seed, start, count) if chunk_seed is None else chunk_seed)
        s = self.spec
        cluster = rng.integers(0, s.clusters, size=count)
        base = self.centres[cluster] + rng.normal(0.0, s.segment_scale, size=(count, EMBEDDING_SIZE))
        out = np.empty((count, SEGMENT_ROWS, EMBEDDING_SIZE), dtype=np.float32)
        drift = rng.normal(0.0, s.row_scale, size=(count, EMBEDDING_SIZE))
        innovation = np.sqrt(1.0 - s.row_correlation**2)
        for r in range(SEGMENT_ROWS):
            out[:, r] = base + drift
            drift = s.row_correlation * drift + innovation * rng.normal(0.0, s.row_scale, size=drift.shape)
        return quantize(out), cluster

    def segments(self, count: int, *, start: int = 0, chunk: int = 10_000, split: str = "eval") -> Iterator[Segment]:
        """``count`` Segment objects with unique video ids, generated chunk by chunk."""
        for lo in range(start, start + count, chunk):
            n = min(chunk, start + count - lo)
            rows, cluster = self.rows(lo, n)
            rng = np.random.default_rng((self.spec.seed, lo, n, 1))
            ids = rng.choice(_ID_ALPHABET, size=(n, 11))
            for i in range(n):
                offset = 10.0 * int(rng.integers(0, 30))
                yield Segment(
                    video_id=f"{''.join(ids[i][:4])}{lo + i:07d}",
                    start_s=offset,
                    end_s=offset + 10.0,
                    labels=self.cluster_labels[int(cluster[i])],
                    split=split,
                    rows=rows[i],
                )
