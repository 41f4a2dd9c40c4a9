"""The VGGish forward pass against this machine's float32 matrix-multiply rate (issue 16).

Counts the network's multiply-adds from its layer shapes (a multiply-add is 2 FLOP), measures numpy's float32
matmul rate on large matrices in the same run, then the forward pass for 10 examples (one 10-s query) as the
library runs it and as variants: XLA (``jit_compile=True``). Prints ms per 10 examples, GFLOP/s and the fraction
of the matmul rate. Medians of ``--repeats``; the machine's 2 cores are shared, so figures move 10-20% between
runs: repeat the run.

``--threads N`` starts TensorFlow with N intra-op threads (``embedder.threads``; 0: one per core): with two
workers on two cores the bot runs each pass on one.

    python bench/model_bench.py
    python bench/model_bench.py --repeats 30 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import median_s

EXAMPLES = 10
MATMUL_N = 2048


def multiply_adds_per_example() -> dict[str, int]:
    """Multiply-adds of each conv and fc layer for one [96, 64] example (SAME 3x3 convs, 2x2 pools)."""
    from musrec.vggish.frontend import EXAMPLE_FRAMES, NUM_MEL_BANDS
    from musrec.vggish.model import CONV_KERNEL, CONV_LAYERS, FC_LAYERS, POOL_AFTER, POOL_SIZE

    height, width = EXAMPLE_FRAMES, NUM_MEL_BANDS
    counts = {}
    for name, cin, cout in CONV_LAYERS:
        counts[name] = height * width * cout * CONV_KERNEL * CONV_KERNEL * cin
        if name in POOL_AFTER:
            height, width = height // POOL_SIZE, width // POOL_SIZE
    for name, fin, fout in FC_LAYERS:
        counts[name] = fin * fout
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow's intra-op threads (0: one per core)")
    args = parser.parse_args()

    from musrec.vggish.checkpoint import write_random_checkpoint
    from musrec.vggish.frontend import EXAMPLE_FRAMES, NUM_MEL_BANDS
    from musrec.vggish.model import VGGish
    from musrec.vggish.tfutil import import_tensorflow, set_intra_op_threads

    set_intra_op_threads(args.threads)
    tf = import_tensorflow()
    counts = multiply_adds_per_example()
    macs = sum(counts.values()) * EXAMPLES
    flop = 2 * macs
    print(f"VGGish, {EXAMPLES} examples: {macs / 1e9:.2f} G multiply-adds = {flop / 1e9:.2f} GFLOP")
    for name, n in counts.items():
        print(f"  {name:<14} {n * EXAMPLES / 1e9:6.3f} G multiply-adds")

    rng = np.random.default_rng(0)
    a = rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32)
    b = rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32)
    matmul_s = median_s(lambda: a @ b, args.repeats)
    peak = 2 * MATMUL_N**3 / matmul_s / 1e9
    print(f"numpy float32 {MATMUL_N}x{MATMUL_N} matmul: {matmul_s * 1000:.1f} ms = {peak:.1f} GFLOP/s")

    with tempfile.TemporaryDirectory(prefix="musrec-model-") as tmp:
        model = VGGish.from_checkpoint(write_random_checkpoint(Path(tmp) / "vggish_model.ckpt"))
    x = rng.standard_normal((EXAMPLES, EXAMPLE_FRAMES, NUM_MEL_BANDS)).astype(np.float32)
    spec = [tf.TensorSpec([None, EXAMPLE_FRAMES, NUM_MEL_BANDS], tf.float32)]
    xla = tf.function(model._graph, input_signature=spec, autograph=False, jit_compile=True)
    fixed_spec = [tf.TensorSpec([EXAMPLES, EXAMPLE_FRAMES, NUM_MEL_BANDS], tf.float32)]
    fixed = tf.function(model._graph, input_signature=fixed_spec, autograph=False)
    variants: dict[str, Callable[[], Any]] = {
        "library (tf.function, [None, 96, 64])": lambda: model(x),
        f"fixed shape [{EXAMPLES}, 96, 64]": lambda: fixed(x).numpy(),
        "XLA (jit_compile=True)": lambda: xla(x).numpy(),
    }
    reference = model(x)
    for other in (xla, fixed):
        assert np.allclose(other(x).numpy(), reference, rtol=1e-4, atol=1e-4 * float(np.abs(reference).max()))
    print(f"{'forward pass, ' + str(EXAMPLES) + ' examples':<40} {'ms':>8} {'GFLOP/s':>8} {'of matmul':>10}")
    for name, fn in variants.items():
        s = median_s(fn, args.repeats)
        print(f"{name:<40} {s * 1000:>8.1f} {flop / s / 1e9:>8.1f} {flop / s / 1e9 / peak:>10.2f}")
    print(f"threads: intra-op {tf.config.threading.get_intra_op_parallelism_threads()} (0 = all cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
