"""Importing TensorFlow quietly, with the number of threads a forward pass may use.

TensorFlow's C++ runtime writes start-up notes straight to file descriptor 2 (CUDA probes on a machine without a
GPU, CPU feature hints) before any Python logging setting applies. They are not errors for musrec, so the first
import and device initialisation run with descriptor 2 pointed at /dev/null, unless ``MUSREC_TF_VERBOSE`` is set.

TensorFlow fixes its intra-op thread pool (the threads one convolution or matrix product is split over) when it
starts, for the whole process: :func:`set_intra_op_threads` must come before the first :func:`import_tensorflow`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from types import ModuleType

log = logging.getLogger(__name__)

_lock = threading.Lock()
_intra_op_threads = 0  # 0: TensorFlow's default, one per core
_started_with: int | None = None  # the value TensorFlow started with, once it has


def set_intra_op_threads(threads: int) -> None:
    """Threads per forward pass (0: one per core), for TensorFlow when it starts in this process.

    Once it has started, the pool cannot change: a different request is logged and has no effect.
    """
    global _intra_op_threads
    if threads < 0:
        raise ValueError(f"threads must be 0 or more, got {threads}")
    with _lock:
        _intra_op_threads = threads
        if _started_with is not None and _started_with != threads:
            log.info(
                "TensorFlow already runs with %s intra-op threads in this process; %d cannot apply any more",
                _started_with or "default",
                threads,
            )


def import_tensorflow() -> ModuleType:
    """``import tensorflow``, with its native start-up output silenced on first import."""
    if "tensorflow" in sys.modules and hasattr(sys.modules["tensorflow"], "constant"):
        return sys.modules["tensorflow"]
    with _lock:
        if os.environ.get("MUSREC_TF_VERBOSE"):
            import tensorflow as tf

            _start(tf)
            return tf
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            import tensorflow as tf

            _start(tf)  # device initialisation happens on the first op: keep its notes quiet too
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
        return tf


def _start(tf: ModuleType) -> None:
    """Set the thread pool, then initialise the device (holding _lock)."""
    global _started_with
    if _started_with is None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(_intra_op_threads)
            _started_with = _intra_op_threads
        except RuntimeError:  # started before musrec's first import (by the caller): its pool stays
            _started_with = tf.config.threading.get_intra_op_parallelism_threads()
    tf.constant(0.0).numpy()
