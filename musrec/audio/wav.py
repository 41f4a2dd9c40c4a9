"""16-bit PCM WAV, the one format musrec reads and writes itself: what ffmpeg pipes out and what a MAX server takes.

Samples are read as ``int16 / 32768`` (channels averaged), as the reference pipeline does, and written as samples
times 32768, so audio survives the trip to a MAX server and back exactly.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from musrec.audio.resample import TARGET_RATE
from musrec.errors import DecodeError

INT16_SCALE = 32768.0  # reading: int16 / 32768, as the reference
INT16_MIN, INT16_MAX = -32768, 32767
WAVE_FORMAT_PCM = 1
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# Sizes written by streaming writers (ffmpeg into a pipe) that cannot seek back to fill them in.
WAV_SIZE_PLACEHOLDERS = (0, 0xFFFFFFFF)


def to_wav_bytes(samples: npt.NDArray[np.floating], sample_rate: int = TARGET_RATE) -> bytes:
    """A 16-bit PCM mono WAV (what a MAX server takes): samples times 32768, rounded, clipped to int16.

    The inverse of reading (``int16 / 32768``), so decoded audio survives the trip to a MAX server exactly; only
    +1.0 itself lands one step lower, at 32767.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {x.shape}")
    pcm = np.clip(np.rint(x * INT16_SCALE), INT16_MIN, INT16_MAX).astype("<i2")
    segment = _pydub().AudioSegment(data=pcm.tobytes(), sample_width=2, frame_rate=sample_rate, channels=1)
    buf = io.BytesIO()
    segment.export(buf, format="wav")  # PCM to WAV: pydub writes it itself, no ffmpeg or ffprobe involved
    return buf.getvalue()


def _pydub() -> Any:
    """pydub, imported quietly: it warns at import when no ffmpeg is on PATH, which WAV export does not need."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        import pydub

    return pydub


def read_wav_bytes(data: bytes) -> tuple[npt.NDArray[np.float64], int]:
    """Mono samples (``int16 / 32768``, channels averaged) and rate of a 16-bit PCM WAV; else DecodeError.

    Placeholder sizes (0 or 0xFFFFFFFF, as written into a pipe) mean the data runs to the end.
    """
    stream = io.BytesIO(data)
    channels, rate, size = read_wav_header(stream.read)
    rest = memoryview(data)[stream.tell() :]
    if size is not None and size <= len(rest):
        rest = rest[:size]
    frames = len(rest) // (2 * channels)
    pcm = np.frombuffer(rest, dtype="<i2", count=frames * channels).reshape(frames, channels)
    mono = pcm.sum(axis=1, dtype=np.int32).astype(np.float64) / INT16_SCALE
    return (mono / channels if channels > 1 else mono), rate


def read_wav_header(read: Callable[[int], bytes]) -> tuple[int, int, int | None]:
    """Channels, rate and data size (None: unknown, to the end) of a 16-bit PCM WAV, read up to its data."""
    riff = _read_exact(read, 12)
    if riff[:4] != b"RIFF" or riff[8:] != b"WAVE":
        raise DecodeError("not a WAV file")
    fmt: tuple[int, int] | None = None
    while True:
        chunk_id, size = struct.unpack("<4sI", _read_exact(read, 8))
        if chunk_id == b"data":
            if fmt is None:
                raise DecodeError("not a valid WAV file (no format chunk)")
            return (*fmt, None if size in WAV_SIZE_PLACEHOLDERS else size)
        body = _read_exact(read, size + (size & 1))  # chunks are padded to even sizes
        if chunk_id == b"fmt ":
            if size < 16:
                raise DecodeError("not a valid WAV file (short format chunk)")
            tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == WAVE_FORMAT_EXTENSIBLE and size >= 26:
                tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID starts with the tag
            if tag != WAVE_FORMAT_PCM or bits != 16:
                raise DecodeError("only 16-bit PCM WAV is supported")
            if channels < 1 or rate < 1 or block_align != 2 * channels:
                raise DecodeError("not a valid WAV file (bad format chunk)")
            fmt = (channels, rate)


def _read_exact(read: Callable[[int], bytes], size: int) -> bytes:
    data = read(size)
    if len(data) != size:
        raise DecodeError("not a valid WAV file (it ends early)")
    return data
