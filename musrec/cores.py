"""How many CPU cores this process may use: what sizes the work it runs at once (model threads, decoders)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system has one (Linux), else all of them."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this system (macOS)
        return os.cpu_count() or 1
