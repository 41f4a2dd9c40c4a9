"""Segment representations: how 10 x 128 uint8 embedding rows become one search vector.

``flatten``: the first 10 rows in order (1280 values; the original design, sensitive to timing).
``mean``: the mean row (128; order-free, robust to a shifted window). ``meanstd``: mean and standard deviation
(256). All are computed on dequantised values, so cosine similarity is meaningful.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from musrec.errors import TooShortError
from musrec.vggish.postprocess import EMBEDDING_SIZE, QUANTIZE_MIN, QUANTIZE_SCALE, dequantize

SEGMENT_ROWS = 10  # one row per 0.96 s of audio; AudioSet segments are 10 s
REPRESENTATION_DIMS = {
    "flatten": SEGMENT_ROWS * EMBEDDING_SIZE,
    "mean": EMBEDDING_SIZE,
    "meanstd": 2 * EMBEDDING_SIZE,
}


def dimension(representation: str) -> int:
    return REPRESENTATION_DIMS[representation]


def fit_rows(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Exactly ``SEGMENT_ROWS`` rows: the first ten, or a shorter run repeated until there are ten.

    Repeating (rather than zero-padding) is what MAX's audio classifier does with clips shorter than 10 s, and keeps
    ``flatten`` vectors in the same range as full segments.
    """
    rows = np.asarray(rows, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != EMBEDDING_SIZE:
        raise ValueError(f"expected [n, {EMBEDDING_SIZE}] rows, got {rows.shape}")
    if len(rows) == 0:
        raise TooShortError("no embedding rows: the audio is shorter than one second")
    if len(rows) >= SEGMENT_ROWS:
        return rows[:SEGMENT_ROWS]
    reps = -(-SEGMENT_ROWS // len(rows))
    return np.tile(rows, (reps, 1))[:SEGMENT_ROWS]


def represent(segments: npt.NDArray[np.uint8], representation: str) -> npt.NDArray[np.float32]:
    """[n, 10, 128] uint8 segments -> [n, d] float32 vectors, L2-normalised (zero vectors stay zero)."""
    seg = np.asarray(segments)
    if seg.ndim != 3 or seg.shape[1:] != (SEGMENT_ROWS, EMBEDDING_SIZE):
        raise ValueError(f"expected [n, {SEGMENT_ROWS}, {EMBEDDING_SIZE}] segments, got {seg.shape}")
    if representation == "flatten":
        # dequantize's values, computed in place on one float32 copy: building an index represents every segment,
        # and a pass less over 2 million x 1280 values is seconds less (within a float32 rounding of dequantize).
        vec = seg.reshape(len(seg), -1).astype(np.float32)
        vec *= np.float32(1 / QUANTIZE_SCALE)
        vec += np.float32(QUANTIZE_MIN)
    elif representation == "mean":
        vec = dequantize(seg).mean(axis=1)
    elif representation == "meanstd":
        x = dequantize(seg)
        vec = np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)
    else:
        raise ValueError(f"unknown representation {representation!r}")
    vec = np.asarray(vec, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", vec, vec))
    vec *= (1 / np.maximum(norms, 1e-12)).astype(np.float32)[:, None]
    return vec


# Rows scored against one vector in one BLAS call at most: OpenBLAS runs a larger matrix-vector product on several
# threads, and on a machine whose cores are busy (the bot's workers, a build) waiting for them cost 2-16 ms where one
# thread takes 0.02-0.3 ms (360 and 1,280 rows of 1,280 values, 2 cores, bench/videos_bench.py's IVF answers).
SCORE_BLOCK_VALUES = 1 << 18


def scores_of(vectors: npt.NDArray[np.float32], vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``vectors @ vector`` (one score per row) in blocks small enough for one BLAS thread each."""
    step = max(1, SCORE_BLOCK_VALUES // max(1, vectors.shape[1]))
    if len(vectors) <= step:
        return vectors @ vector
    return np.concatenate([vectors[lo : lo + step] @ vector for lo in range(0, len(vectors), step)])
