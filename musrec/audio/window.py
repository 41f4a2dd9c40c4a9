"""The 10-second query window: which span of a clip is embedded (the loudest, or from a start), and cutting it out.

Pure computation on decoded samples; :mod:`musrec.audio.scan` finds the same window in a long file without
decoding all of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from musrec.audio.resample import TARGET_RATE
from musrec.errors import TooShortError
from musrec.timecode import format_timecode

WINDOW_S = 10.0  # the query length: 10 VGGish examples, like an AudioSet segment
WINDOW_HOP_S = 1.0  # grid of the loudest-window search
SEARCH_S = 180.0  # the loudest window is looked for in the first three minutes


@dataclass(frozen=True)
class Window:
    """A span in seconds, relative to the first sample of the clip given to :func:`choose_window`."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def choose_window(
    samples: npt.NDArray[np.floating],
    *,
    sample_rate: int = TARGET_RATE,
    start_s: float | None = None,
    duration_s: float = WINDOW_S,
    search_s: float = SEARCH_S,
) -> Window:
    """Pick the ``duration_s`` span of a clip to embed.

    With ``start_s``: the window starts there, moved earlier if needed to fit inside the clip; a start at or
    past the end is a TooShortError. Without: the loudest window (highest RMS) lying wholly inside the first
    ``search_s`` seconds, among starts on a 1-second grid plus the start that ends at that limit; ties go to
    the earliest. This skips a silent or quiet intro without scanning a whole DJ set. A clip no longer than
    ``duration_s`` is used whole (the embedding stage repeats rows to fill 10 seconds).
    """
    if sample_rate <= 0 or duration_s <= 0:
        raise ValueError("sample_rate and duration_s must be positive")
    x = np.asarray(samples)
    n = len(x)
    if n == 0:
        raise TooShortError("the audio is empty")
    width = min(round(duration_s * sample_rate), n)
    if start_s is not None:
        if not (math.isfinite(start_s) and start_s >= 0):
            raise ValueError(f"start_s must be a non-negative number, got {start_s}")
        if start_s >= n / sample_rate:
            end = format_timecode(n / sample_rate)
            raise TooShortError(f"the start time {format_timecode(start_s)} is past the end of the audio ({end})")
        first = min(round(start_s * sample_rate), n - width)
        return Window(first / sample_rate, (first + width) / sample_rate)
    starts, energies = window_energies(x, sample_rate=sample_rate, width=width, search_s=search_s)
    # Running sums carry rounding error: count near-equal energies as ties, and ties go to the earliest start.
    best = int(starts[int(np.argmax(energies >= energies.max() * (1 - 1e-9)))])
    return Window(best / sample_rate, (best + width) / sample_rate)


def window_energies(
    samples: npt.NDArray[np.floating], *, sample_rate: int, width: int, search_s: float = SEARCH_S
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The starts (in samples) :func:`choose_window` considers for windows of ``width`` samples, and their energies.

    Starts lie on a 1-second grid, plus the start that ends at the search limit; every window lies wholly inside
    the first ``search_s`` seconds (or the clip, if shorter). ``width`` must be at most the clip's length.
    """
    n = len(samples)
    limit = min(n, max(width, round(search_s * sample_rate)))
    starts = list(range(0, limit - width + 1, max(1, round(WINDOW_HOP_S * sample_rate))))
    if starts[-1] != limit - width:
        starts.append(limit - width)
    # One running sum of squares: O(n), where slicing each window would copy 10 s per start.
    power = np.zeros(limit + 1, dtype=np.float64)
    np.cumsum(np.square(samples[:limit], dtype=np.float64), out=power[1:])
    grid = np.asarray(starts, dtype=np.int64)
    return grid, power[grid + width] - power[grid]


def cut(samples: npt.NDArray[np.floating], window: Window, sample_rate: int = TARGET_RATE) -> npt.NDArray[np.floating]:
    """The samples inside ``window`` (a view, not a copy); ValueError if it does not lie inside the clip."""
    first, last = round(window.start_s * sample_rate), round(window.end_s * sample_rate)
    if not 0 <= first < last <= len(samples):
        raise ValueError(f"window {window} is outside a clip of {len(samples) / sample_rate:.3f} s")
    return samples[first:last]
