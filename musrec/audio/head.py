"""A file's facts, read once per decode: its size, its first bytes, whether it is a WAV or an MP3, and how long it
plays where its header says so cheaply.

:func:`~musrec.audio.decode.check_file` reads a :class:`Head` before anything runs, and every decoder of the same
request is handed it: the limits check its size and first bytes, ffmpeg's probe is sized for a WAV, the envelope
goes to mpg123 for an MP3, and a file known to be no longer than the window is decoded without an envelope.

MP3 headers are mutagen's reading (the first frames, and the Xing, Info or VBRI tag LAME and others write into the
first frame, so a variable-bitrate file's length is known from its frame count). mutagen is asked only about a file
that starts as MPEG audio (a frame sync, or an ID3v2 tag): it would otherwise search the first megabyte for a sync.
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mutagen import MutagenError
from mutagen.mp3 import MPEGInfo

from musrec.audio.wav import is_wav, read_wav_header
from musrec.errors import DecodeError

__all__ = ["MAGIC_BYTES", "Head", "read_head"]

log = logging.getLogger(__name__)

# The first bytes kept: enough for every magic number the checks and the decoders look at.
MAGIC_BYTES = 32


@dataclass(frozen=True)
class Head:
    """What a file's first bytes say. ``mp3_rate`` is an MP3's sample rate (None: not an MP3); ``seconds`` how long
    it plays, exact for a 16-bit WAV and an MP3 with a Xing or VBRI tag, its bitrate over its size for another
    constant-bitrate MP3 (its tags make that a little long), None where the header does not say."""

    path: Path
    size: int
    magic: bytes
    wav: bool = False
    mp3_rate: int | None = None
    seconds: float | None = None


def mp3_frame_samples(rate: int) -> int:
    """Samples per channel in one frame of an MP3 at ``rate``: MPEG-1 (32 kHz and up) frames hold two granules of
    576, MPEG-2 and 2.5 frames one."""
    return 1152 if rate >= 32000 else 576


def read_head(path: Path) -> Head:
    """The :class:`Head` of ``path``, in one open. DecodeError if it is not a regular file; OSError if it cannot be
    read (FileNotFoundError among them)."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise DecodeError("this is not a file")
    with path.open("rb") as f:
        magic = f.read(MAGIC_BYTES)
        if is_wav(magic):
            f.seek(0)
            return Head(path, info.st_size, magic, wav=True, seconds=_wav_seconds(f, info.st_size))
        if _starts_as_mpeg_audio(magic):
            rate, seconds = _mp3_facts(f)
            return Head(path, info.st_size, magic, mp3_rate=rate, seconds=seconds)
    return Head(path, info.st_size, magic)


def _wav_seconds(f: BinaryIO, size: int) -> float | None:
    """A 16-bit PCM WAV's duration from its header (data to the end of the file if the header does not say); None
    for another kind of WAV (ffmpeg decodes those)."""
    try:
        channels, rate, data_bytes = read_wav_header(f.read)
        return (data_bytes if data_bytes is not None else size - f.tell()) / (2 * channels * rate)
    except (DecodeError, ZeroDivisionError):
        return None


def _starts_as_mpeg_audio(magic: bytes) -> bool:
    return magic[:3] == b"ID3" or (len(magic) >= 2 and magic[0] == 0xFF and magic[1] & 0xE0 == 0xE0)


def _mp3_facts(f: BinaryIO) -> tuple[int | None, float | None]:
    """(sample rate, seconds) of an MPEG audio layer III stream, or (None, None).

    Only a stream mutagen found consecutive frames of (or a first frame with a VBR tag) counts: a lone sync in other
    data is left to ffmpeg. Layers I and II are not MP3s either (mpg123's subband envelope assumes layer III).
    """
    try:
        info = MPEGInfo(f)
    except (MutagenError, OSError, ValueError, EOFError) as err:
        log.debug("not an MP3: %s", err)
        return None, None
    if info.sketchy or info.layer != 3 or info.sample_rate <= 0:
        return None, None
    return info.sample_rate, info.length if info.length > 0 else None
