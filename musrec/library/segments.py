"""A recording as a library stores it: decoded once, cut into 10-s segments on AudioSet's grid (0-10 s, 10-20 s,
...), each embedded as one query window is, and represented as the AudioSet index represents a segment (the 10 rows
dequantised, flattened to 1280 values, L2-normalised), so the same query rows search both.

The last, shorter part of a recording is a segment too when it holds at least one embedding row; its rows are
repeated to ten, as a short AudioSet segment's are (:func:`~musrec.audioset.representation.fit_rows`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from musrec.audio.decode import Audio, decode
from musrec.audio.limits import AudioLimits
from musrec.audio.window import WINDOW_S, Window, cut
from musrec.audioset.representation import SEGMENT_ROWS, fit_rows, represent
from musrec.cores import usable_cores
from musrec.embedding.base import Embedder
from musrec.errors import TooShortError
from musrec.vggish.frontend import SAMPLE_RATE
from musrec.vggish.postprocess import EMBEDDING_SIZE

log = logging.getLogger(__name__)

SEGMENT_S = WINDOW_S  # AudioSet's segments are 10 s, as the query window
REPRESENTATION = "flatten"  # the AudioSet index's default: the same query rows search both
MIN_TAIL_S = 1.0  # a last part shorter than this gives no embedding row
# Recordings ``library add`` embeds at once, and forward passes of one recording run at once: each pass on its share
# of the cores (musrec.library.add says why two).
ADD_WORKERS = 2

Clips = Sequence[npt.NDArray[np.floating]]


class BatchEmbed(Protocol):
    """An embedder's ``embed_batch``: several clips at once, its forward passes on ``pool``'s threads."""

    def __call__(
        self, clips: Clips, sample_rate: int, *, pool: Executor | None = None
    ) -> list[npt.NDArray[np.uint8]]: ...


@dataclass(frozen=True, eq=False)
class Segments:
    """A recording's segments: ``windows[i]`` (seconds of the recording) and ``vectors[i]`` (float32, unit length,
    :data:`REPRESENTATION`)."""

    windows: tuple[Window, ...]
    vectors: npt.NDArray[np.float32]

    @property
    def duration_s(self) -> float:
        return self.windows[-1].end_s if self.windows else 0.0


def add_workers() -> int:
    """Forward passes run at once by ``library add`` (and by a recording's :func:`embed_segments` in process):
    :data:`ADD_WORKERS`, at most one per usable core."""
    return max(1, min(ADD_WORKERS, usable_cores()))


def decode_track(data: bytes | str, *, max_track_s: float, limits: AudioLimits) -> Audio:
    """The first ``max_track_s`` seconds of a recording (a path or encoded bytes) at 16 kHz mono; a longer one is
    cut there, not refused. :func:`~musrec.audio.decode.decode`'s errors otherwise."""
    return decode(data, duration_s=max_track_s, limits=limits)


def windows_of(duration_s: float) -> tuple[Window, ...]:
    """AudioSet's grid over ``duration_s`` seconds: whole 10-s windows, then the rest if it is at least 1 s."""
    windows = []
    start = 0.0
    while duration_s - start >= MIN_TAIL_S:
        windows.append(Window(start, min(start + SEGMENT_S, duration_s)))
        start += SEGMENT_S
    return tuple(windows)


def embed_segments(audio: Audio, embedder: Embedder, *, pool: ThreadPoolExecutor | None = None) -> Segments:
    """Every segment of decoded audio embedded and represented. An embedder with ``embed_batch`` (VGGish in this
    process) gets all the windows in one call, its forward passes batched and run on ``pool``'s threads at once (a
    recording embedded alone, as the first and last of an add are, still has every core the model was given);
    another (MAX servers) gets one call per window, from ``pool``'s threads at once, so several servers work on one
    recording. TooShortError if no segment gives a row."""
    windows = windows_of(audio.duration_s)
    clips = [cut(audio.samples, w) for w in windows]
    batch: BatchEmbed | None = getattr(embedder, "embed_batch", None)
    if batch is not None:
        rows = batch(clips, SAMPLE_RATE, pool=pool)
    elif pool is not None:
        rows = list(pool.map(lambda clip: embedder.embed(clip, SAMPLE_RATE), clips))
    else:
        rows = [embedder.embed(clip, SAMPLE_RATE) for clip in clips]
    kept = [(w, r) for w, r in zip(windows, rows, strict=True) if len(r)]
    if not kept:
        raise TooShortError("the audio is too short to embed: at least one second is needed")
    stacked = np.stack([fit_rows(r) for _, r in kept])
    return Segments(tuple(w for w, _ in kept), represent(stacked, REPRESENTATION))


def query_vector(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """A query's [n, 128] rows as one vector in the library's representation (fewer than 10 rows repeated)."""
    fitted = fit_rows(np.asarray(rows, dtype=np.uint8)).reshape(1, SEGMENT_ROWS, EMBEDDING_SIZE)
    return represent(fitted, REPRESENTATION)[0]
