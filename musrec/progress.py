"""Byte counts for people: sizes in MB and GB, and progress while a long file operation runs.

Progress is a tqdm bar on stderr when stderr is a terminal, else a log line now and then (in a container, say).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 15.0  # progress log lines when there is no terminal


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class Meter:
    """Progress in bytes (or in ``unit``s, counted): a tqdm bar on stderr when it is a terminal, with the time
    left, else a log line every ``LOG_INTERVAL_S``."""

    def __init__(self, desc: str, *, total: int | None, initial: int = 0, enabled: bool, unit: str = "B") -> None:
        self.desc = desc
        self.unit = unit
        self.total = total
        self.done = initial
        self.enabled = enabled
        self._bar: Any = None
        self._last_log = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                desc=desc,
                total=total,
                initial=initial,
                unit=unit if unit == "B" else f" {unit}",
                unit_scale=unit == "B",
                unit_divisor=1000,  # as the summary lines: MB, GB
                file=sys.stderr,
                mininterval=0.5,
                leave=False,
            )

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last_log >= LOG_INTERVAL_S:
            self._last_log = time.monotonic()
            size = human_bytes if self.unit == "B" else lambda n: f"{n:,} {self.unit}"
            of = f" of {size(self.total)} ({100 * self.done / self.total:.0f}%)" if self.total else ""
            log.info("%s: %s%s", self.desc, size(self.done), of)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
