"""Time positions as people write them: ``90``, ``90s``, ``1m30s``, ``1h2m3s``, ``1:30``, ``01:02:03``, ``90.5``."""

from __future__ import annotations

import math
import re

_UNITS = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?$")
_CLOCK = re.compile(r"^(?:(?P<h>\d+):)?(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d+)?)$")


def parse_timecode(text: str) -> float:
    """Seconds from a time position; ValueError with a readable message for anything else."""
    t = text.strip().lower()
    clock = _CLOCK.match(t)
    if clock and float(clock["s"]) < 60 and (clock["h"] is None or int(clock["m"]) < 60):
        return int(clock["h"] or 0) * 3600 + int(clock["m"]) * 60 + float(clock["s"])
    units = _UNITS.match(t)
    if t and units and any(units.groupdict().values()):
        seconds = sum(float(units[k] or 0) * f for k, f in (("h", 3600), ("m", 60), ("s", 1)))
        if math.isfinite(seconds):
            return seconds
    raise ValueError(f"not a time: {text!r} (try 90, 1:30 or 1m30s)")


def format_timecode(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    total = int(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
