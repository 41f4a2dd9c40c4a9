"""16-bit PCM WAV, the one format musrec reads and writes itself: what ffmpeg pipes out and what a MAX server takes.

Samples are read as ``int16 / 32768`` (channels averaged), as the reference pipeline does, and written as samples
times 32768, so audio survives the trip to a MAX server and back exactly.

A header is read before any sample, and what it claims is checked first (issue 14): :func:`wav_format` gives the
channels, rate and the number of whole frames the bytes really hold, so a caller can refuse a clip by its duration
before anything scales with it, and rates or channel counts no recording has (a 1-Hz header makes the resampler
produce 16,000 samples per byte) are a DecodeError.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
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
SAMPLE_BYTES = 2  # 16-bit PCM
FORMAT_CHUNK_BYTES = 16  # the fields every format chunk has
EXTENSIBLE_TAG_END = 26  # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts at byte 24 with the format tag
MAX_FORMAT_CHUNK_BYTES = 1024  # PCM's is 16, 18 or 40 bytes
SKIP_PIECE_BYTES = 1 << 16
# Sample rates read, in Hz. Below: half the lowest rate in use (8 kHz telephony), room for old oddities such as
# 5512 Hz. Above: the highest common studio rate. A rate outside is a lying header, and costs: resampling from a
# rate r with no common factor with 16 kHz designs a filter of about 20 * r taps (~180 MiB at 192 kHz).
MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 192_000
# Above every multichannel format in use (broadcast ADM WAVs carry up to 128 channels).
MAX_CHANNELS = 256


@dataclass(frozen=True)
class WavFormat:
    """What a 16-bit PCM WAV holds, from its header.

    ``frames`` counts the whole frames present (the data chunk, cut at the end of the bytes if it claims more), so
    ``duration_s`` is what reading the samples would give, known before reading them.
    """

    channels: int
    rate: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate


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


def wav_format(data: bytes | bytearray | memoryview) -> WavFormat:
    """The format and length of a 16-bit PCM WAV, from its header, without reading a sample; else DecodeError.

    Placeholder sizes (0 or 0xFFFFFFFF, as written into a pipe) mean the data runs to the end; so does a size
    larger than the bytes. A rate or channel count outside what :func:`check_format` accepts is a DecodeError.
    """
    fmt, _ = _parse(data)
    return fmt


def read_wav_bytes(data: bytes | bytearray | memoryview) -> tuple[npt.NDArray[np.float64], int]:
    """Mono samples (``int16 / 32768``, channels averaged) and rate of a 16-bit PCM WAV; else DecodeError.

    The same reading as :func:`wav_format`; the arrays it allocates scale with the bytes given, never with what the
    header claims.
    """
    fmt, start = _parse(data)
    count = fmt.frames * fmt.channels
    pcm = np.frombuffer(data, dtype="<i2", count=count, offset=start).reshape(fmt.frames, fmt.channels)
    mono = pcm.sum(axis=1, dtype=np.int32).astype(np.float64) / INT16_SCALE
    return (mono / fmt.channels if fmt.channels > 1 else mono), fmt.rate


def check_format(channels: int, rate: int) -> None:
    """DecodeError unless ``channels`` and ``rate`` (Hz) are ones a recording has."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise DecodeError(f"the audio's sample rate ({rate} Hz) is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    if channels > MAX_CHANNELS:
        raise DecodeError(f"the audio has {channels} channels; at most {MAX_CHANNELS} are supported")


def _parse(data: bytes | bytearray | memoryview) -> tuple[WavFormat, int]:
    """The format of ``data`` and the offset of its first sample."""
    view = memoryview(data).cast("B")
    position = 0

    def read(size: int) -> bytes:  # a BytesIO would copy all of ``data`` first
        nonlocal position
        piece = bytes(view[position : position + size])
        position += len(piece)
        return piece

    channels, rate, size = read_wav_header(read)
    check_format(channels, rate)
    start = position
    available = view.nbytes - start
    usable = available if size is None else min(size, available)
    return WavFormat(channels, rate, usable // (SAMPLE_BYTES * channels)), start


def is_wav(head: bytes) -> bool:
    """Whether a file's first 12 bytes (or more) are a RIFF WAVE header's."""
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def read_wav_header(read: Callable[[int], bytes]) -> tuple[int, int, int | None]:
    """Channels, rate and data size (None: unknown, to the end) of a 16-bit PCM WAV, read up to its data.

    Chunks before the data are skipped in bounded pieces, so a chunk claiming gigabytes costs no memory.
    """
    if not is_wav(_read_exact(read, 12)):
        raise DecodeError("not a WAV file")
    fmt: tuple[int, int] | None = None
    while True:
        chunk_id, size = struct.unpack("<4sI", _read_exact(read, 8))
        if chunk_id == b"data":
            if fmt is None:
                raise DecodeError("not a valid WAV file (no format chunk)")
            return (*fmt, None if size in WAV_SIZE_PLACEHOLDERS else size)
        padded = size + (size & 1)  # chunks are padded to even sizes
        if chunk_id != b"fmt ":
            _skip(read, padded)
        elif not FORMAT_CHUNK_BYTES <= size <= MAX_FORMAT_CHUNK_BYTES:
            raise DecodeError("not a valid WAV file (bad format chunk)")
        else:
            fmt = _format(_read_exact(read, padded), size)


def _format(body: bytes, size: int) -> tuple[int, int]:
    """Channels and rate from a format chunk's ``body``; DecodeError unless it describes 16-bit PCM."""
    tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", body[:FORMAT_CHUNK_BYTES])
    if tag == WAVE_FORMAT_EXTENSIBLE and size >= EXTENSIBLE_TAG_END:
        tag = struct.unpack("<H", body[EXTENSIBLE_TAG_END - 2 : EXTENSIBLE_TAG_END])[0]  # the sub-format GUID
    if tag != WAVE_FORMAT_PCM or bits != 8 * SAMPLE_BYTES:
        raise DecodeError("only 16-bit PCM WAV is supported")
    if channels < 1 or rate < 1 or block_align != SAMPLE_BYTES * channels:
        raise DecodeError("not a valid WAV file (bad format chunk)")
    return channels, rate


def _read_exact(read: Callable[[int], bytes], size: int) -> bytes:
    data = read(size)
    if len(data) != size:
        raise DecodeError("not a valid WAV file (it ends early)")
    return data


def _skip(read: Callable[[int], bytes], size: int) -> None:
    while size > 0:
        size -= len(_read_exact(read, min(size, SKIP_PIECE_BYTES)))
