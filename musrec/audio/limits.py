"""What decoding accepts: the size, duration and time limits of a user's audio, and the checks that refuse the rest.

Every refusal is a :class:`~musrec.errors.MusrecError` whose message is safe to show a user.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from musrec.errors import DecodeError, TooLongError, TooShortError

SILENCE_PEAK = 10 ** (-60 / 20)  # -60 dBFS: a decode whose peak stays below this is silent


@dataclass(frozen=True, kw_only=True)
class AudioLimits:
    """What :func:`decode` accepts: input size in bytes, decoded duration in seconds, and a wall-clock timeout."""

    max_bytes: int = 64 * 1024 * 1024
    max_duration_s: float = 600.0
    min_duration_s: float = 1.0
    decode_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.decode_timeout_s <= 0:
            raise ValueError("max_bytes and decode_timeout_s must be positive")
        if not 0 <= self.min_duration_s < self.max_duration_s:
            raise ValueError("need 0 <= min_duration_s < max_duration_s")


def decode_deadline(limits: AudioLimits, deadline: float | None = None) -> float:
    """When decoding that starts now must end (a :func:`time.monotonic` value): ``limits.decode_timeout_s`` from now,
    or ``deadline`` if that comes first. A request computes one and hands it to each of its decodes, so a sound that
    needs several (an envelope, then exact spans; each sound of a blend) has one budget in all, not one per step."""
    own = time.monotonic() + limits.decode_timeout_s
    return own if deadline is None else min(own, deadline)


def refuse_long(seconds: float, limits: AudioLimits, *, tolerance_s: float = 0.0, after_start: bool = False) -> None:
    """TooLongError if ``seconds`` of audio (after the start time, if ``after_start``) are over ``max_duration_s``."""
    if seconds > limits.max_duration_s + tolerance_s:
        what = "the audio after the start time is" if after_start else "the audio is"
        raise TooLongError(f"{what} longer than {span_text(limits.max_duration_s)}; choose a shorter part")


def refuse_short(seconds: float, limits: AudioLimits) -> None:
    """TooShortError if ``seconds`` of audio are under ``limits.min_duration_s``."""
    if seconds < limits.min_duration_s:
        raise TooShortError(f"the audio is only {seconds:.2g} s long; at least {limits.min_duration_s:g} s is needed")


def refuse_silent(samples: npt.NDArray[np.floating]) -> None:
    """DecodeError if the peak of ``samples`` stays below SILENCE_PEAK (-60 dBFS)."""
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise DecodeError("the audio is silent")


def check_size(size: int, limits: AudioLimits) -> None:
    """DecodeError for an empty input, TooLongError for one over ``limits.max_bytes``."""
    if size == 0:
        raise DecodeError("the file is empty")
    if size > limits.max_bytes:
        raise TooLongError(f"the file is larger than {limits.max_bytes / 2**20:g} MiB")


def span_text(seconds: float) -> str:
    """``10 minutes``, ``1 minute``, ``90.5 seconds``."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} seconds"
