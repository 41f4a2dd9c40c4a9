"""The resampler to 16 kHz: SciPy's polyphase filter (``resample_poly``), applied as matrix products where a
ratio's periods allow it, with SciPy's own loop elsewhere; the output has the reference's length,
``int(len * 16000 / rate)``."""

from __future__ import annotations

from math import gcd

import numpy as np
import pytest
from scipy.signal import resample_poly

from musrec.audio.resample import _plan, resample

# The same products of taps and samples, added in another order (and by whichever BLAS kernel this processor gets):
# float64 rounding moves a sample of a signal within [-1, 1] by a few 1e-16; 1e-12 is far above that and far below
# the 16-bit step (3e-5) every embedder rounds to.
TOLERANCE = 1e-12


def scipy_16k(x: np.ndarray, rate: int) -> np.ndarray:
    g = gcd(rate, 16000)
    out_len = int(len(x) * 16000 / rate)
    y = resample_poly(x, 16000 // g, rate // g) if len(x) else np.zeros(0)
    return np.pad(y, (0, max(0, out_len - len(y))))[:out_len]


@pytest.mark.parametrize("rate", [44100, 22050, 11025, 88200, 48000, 32000, 24000, 8000, 96000, 192000, 37800])
def test_every_common_rate_is_scipys_filter(rate: int) -> None:
    rng = np.random.default_rng(rate)
    assert _plan(16000 // gcd(rate, 16000), rate // gcd(rate, 16000)) is not None  # products, not SciPy's loop
    for n in (0, 1, 7, 441, 1000, rate + 7, 3 * rate + 123):  # shorter than the filter, a period, several seconds
        x = rng.uniform(-1, 1, n)
        y = resample(x, rate)
        assert y.dtype == np.float64 and len(y) == int(n * 16000 / rate)
        if len(y):
            assert np.max(np.abs(y - scipy_16k(x, rate))) < TOLERANCE


@pytest.mark.parametrize("rate", [44100, 48000, 8000])
def test_every_length_from_none_to_a_few_periods(rate: int) -> None:
    # The periods at either end read a copy with zeros around it, those between read the signal where it is: every
    # length where the one becomes the other.
    rng = np.random.default_rng(7)
    for n in range(0, 3000, 13):
        x = rng.uniform(-1, 1, n)
        y = resample(x, rate)
        assert len(y) == int(n * 16000 / rate)
        if len(y):
            assert np.max(np.abs(y - scipy_16k(x, rate))) < TOLERANCE


def test_a_ratio_without_short_periods_is_scipys_own() -> None:
    # 44,101 Hz has no factor in common with 16 kHz: a period is 16,000 outputs, more than planned.
    assert _plan(16000, 44101) is None
    x = np.random.default_rng(0).uniform(-1, 1, 50_000)
    np.testing.assert_array_equal(resample(x, 44101), scipy_16k(x, 44101))


def test_16k_is_not_resampled() -> None:
    x = np.random.default_rng(1).uniform(-1, 1, 1000)
    np.testing.assert_array_equal(resample(x, 16000), x)
