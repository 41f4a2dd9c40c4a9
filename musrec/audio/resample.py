"""Sample-rate conversion to VGGish's 16 kHz.

The reference pipeline resamples with resampy's ``kaiser_best``. We use SciPy's polyphase ``resample_poly`` (a
Kaiser-windowed FIR at the exact rational ratio): measured through the whole VGGish pipeline it leaves 62-73% of
the uint8 embedding values identical to resampy 0.4.3 and the rest off by one (rarely two), closer than soxr's VHQ
(54-66%) and far closer than linear interpolation (9-18%). At 16 kHz input nothing is resampled and the pipeline is
exact.
"""

from __future__ import annotations

from math import gcd

import numpy as np
import numpy.typing as npt

TARGET_RATE = 16000


def resample(
    samples: npt.NDArray[np.floating], orig_rate: int, target_rate: int = TARGET_RATE
) -> npt.NDArray[np.float64]:
    """Resample a mono signal; the output has ``int(len * target / orig)`` samples, as the reference."""
    x = np.asarray(samples, dtype=np.float64)
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    if orig_rate == target_rate:
        return x
    from scipy.signal import resample_poly

    g = gcd(orig_rate, target_rate)
    out_len = int(len(x) * target_rate / orig_rate)
    y = resample_poly(x, target_rate // g, orig_rate // g)
    if len(y) < out_len:
        y = np.pad(y, (0, out_len - len(y)))
    return np.asarray(y[:out_len], dtype=np.float64)
