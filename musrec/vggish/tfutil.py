"""Importing TensorFlow quietly.

TensorFlow's C++ runtime writes start-up notes straight to file descriptor 2 (CUDA probes on a machine without a
GPU, CPU feature hints) before any Python logging setting applies. They are not errors for musrec, so the first
import and device initialisation run with descriptor 2 pointed at /dev/null, unless ``MUSREC_TF_VERBOSE`` is set.
"""

from __future__ import annotations

import os
import sys
import threading
from types import ModuleType

_lock = threading.Lock()


def import_tensorflow() -> ModuleType:
    """``import tensorflow``, with its native start-up output silenced on first import."""
    if "tensorflow" in sys.modules and hasattr(sys.modules["tensorflow"], "constant"):
        return sys.modules["tensorflow"]
    with _lock:
        if os.environ.get("MUSREC_TF_VERBOSE"):
            import tensorflow as tf

            return tf
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            import tensorflow as tf

            tf.constant(0.0).numpy()  # device initialisation happens on the first op: keep its notes quiet too
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
        return tf
