"""Float tolerances for results whose arithmetic may differ between machines, each derived from what can differ.

The same float32 value computed twice differs in its last bits when the sum behind it runs in another order, and
the order is not ours to fix: BLAS and oneDNN choose kernels by CPU (AVX2, AVX-512, AMX), by thread count and by
batch shape. A tolerance below is the rounding error such reordering can cause, with a margin; a real bug
(a wrong window, a transposed flatten, a ReLU too many) is orders of magnitude larger, and each test that uses one
shows that its check can tell.
"""

from __future__ import annotations

import numpy as np

F32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7: the spacing of float32 numbers at 1.0; rounding is half that

# VGGish outputs compared across batch compositions, thread counts or implementations, relative to the largest
# output magnitude. Each layer sums up to n = 12,288 products (fc1_1); reordered float32 sums of that length
# differ by about sqrt(n) * eps/2 = 7e-6 relative, and eight layers compound it to about 5e-5 (measured here:
# 2.3e-6 between batches of 7 and of 1; 1.6e-5 absolute, at a scale of about 6, on another CPU). 1e-4 leaves a
# factor of two over the estimate.
NETWORK_RTOL = 1e-4


def network_atol(outputs: np.ndarray) -> float:
    """The absolute tolerance for comparing VGGish outputs of this magnitude (see NETWORK_RTOL)."""
    return NETWORK_RTOL * float(np.abs(outputs).max())


def dot_tolerance(dimension: int) -> float:
    """How far two float32 cosine similarities of the same unit vectors may lie apart when summed in other orders.

    A float32 dot product of n terms is within n * eps/2 * sum|x_i y_i| of the true value (the standard bound), and
    for unit vectors sum|x_i y_i| <= 1; two such results are within n * eps of each other.
    """
    return dimension * F32_EPS
