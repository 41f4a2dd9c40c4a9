"""Running a decoder (ffmpeg or mpg123) that writes a 16-bit WAV to its standard output, under a deadline and a memory
cap, with an environment that holds none of musrec's secrets; its output read as it comes, up to the span asked for.
"""

from __future__ import annotations

import logging
import mmap
import os
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from musrec.audio.wav import check_format, read_wav_header
from musrec.childenv import child_environment
from musrec.errors import DecodeError

log = logging.getLogger(__name__)

# Higher native rates are converted to this by ffmpeg: ten minutes at 384 kHz would take gigabytes.
MAX_NATIVE_RATE = 48_000
READ_CHUNK_FRAMES = 1 << 16
STDERR_LOG_CHARS = 4000
# A decoder process may map at most this much memory (RLIMIT_AS): ffmpeg decoding ten minutes of audio, or a video
# file's audio track, needs under 256 MiB; a crafted file that makes it allocate more fails to decode instead.
DECODER_MEMORY_BYTES = 1 << 30


RawFormat = tuple[int, int]  # headerless 16-bit PCM: (channels, rate)


@dataclass(frozen=True)
class Pcm:
    summed: npt.NDArray[np.float64]  # per frame, the sum of the channels' int16 values (exact in a float64)
    channels: int
    rate: int


@lru_cache(maxsize=1)
def mpg123_executable() -> str | None:
    """``mpg123`` on PATH, or None (MP3s are then decoded by ffmpeg alone). ``MUSREC_NO_MPG123`` set: None."""
    if os.environ.get("MUSREC_NO_MPG123"):
        return None
    return shutil.which("mpg123")


def run_decoder(
    cmd: list[str],
    *,
    name: str,
    span_s: float,
    deadline: float,
    limit_rate: bool = False,
    raw: RawFormat | None = None,
) -> tuple[Pcm | None, int | None, str]:
    """Run a decoder writing a 16-bit WAV to stdout; read up to ``span_s`` seconds of it before ``deadline``.

    Returns the PCM read (None if there was no WAV header, or ``limit_rate`` and the rate is over
    MAX_NATIVE_RATE), the exit status (None when reading stopped early, the decoder killed if it was still
    writing) and the end of its stderr. DecodeError if it cannot run or runs past the deadline.

    ``raw``: the decoder writes headerless 16-bit PCM in this format instead, in the machine's byte order, as much
    as its own arguments allow (mpg123's ``--frames``). It then writes into memory (a Linux memfd, read once it has
    finished) rather than into a pipe, which copies every byte twice and wakes the reader for every 64 KB: a
    3-minute stereo track takes 0.18 processor-seconds rather than 0.22, the samples the same. The memfd is opened
    for appending: a decoder that meets a change of format mid-stream rewinds a file it can seek in (mpg123 does),
    and would write over what it had decoded. Where there are no memfds, a pipe.
    """
    memory = _memory_file() if raw is not None else None
    try:
        return _run(cmd, name=name, span_s=span_s, deadline=deadline, limit_rate=limit_rate, raw=raw, memory=memory)
    finally:
        if memory is not None:
            for fd in memory:
                os.close(fd)


def _run(
    cmd: list[str],
    *,
    name: str,
    span_s: float,
    deadline: float,
    limit_rate: bool,
    raw: RawFormat | None,
    memory: tuple[int, int] | None,
) -> tuple[Pcm | None, int | None, str]:
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as errfile:  # a file, not a pipe: a flood of errors cannot stall the decoder
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if memory is None else memory[1],
                stderr=errfile,
                env=child_environment(),
            )
        except OSError as err:
            log.error("cannot run %s: %s", cmd[0], err)
            raise DecodeError("audio decoding is not available on this server") from None
        _limit_memory(proc.pid)

        def on_timeout() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(max(0.0, deadline - time.monotonic()), on_timeout)
        timer.start()
        pcm: Pcm | None = None
        stopped_early = False
        try:
            if memory is None:
                assert proc.stdout is not None
                pcm, stopped_early = _read_output(proc.stdout, span_s=span_s, limit_rate=limit_rate, raw=raw)
                if stopped_early:
                    proc.kill()
                rc = proc.wait()
            else:
                assert raw is not None
                rc = proc.wait()
                if not timed_out.is_set():
                    pcm, stopped_early = _read_memory(memory[0], raw, span_s=span_s)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
        errfile.seek(0)
        stderr = errfile.read().decode("utf-8", "replace")[-STDERR_LOG_CHARS:].strip()
    if stderr:
        log.debug("%s (exit %s) on %s: %s", Path(cmd[0]).name, rc, name, stderr)
    if timed_out.is_set():
        raise DecodeError("the audio took too long to decode")
    return pcm, None if stopped_early else rc, stderr


def _memory_file() -> tuple[int, int] | None:
    """A file in memory for a decoder's output: its descriptor to read, one to write at its end (both to be closed);
    None where there is none."""
    try:
        fd = os.memfd_create("musrec-pcm", os.MFD_CLOEXEC)
    except (AttributeError, OSError) as err:  # not Linux, or a sandbox that refuses it: a pipe then
        log.debug("no memfd for decoded audio: %s", err)
        return None
    try:
        return fd, os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError as err:  # no /proc
        log.debug("cannot open the memfd for appending: %s", err)
        os.close(fd)
        return None


def _limit_memory(pid: int) -> None:
    """Cap a decoder's address space at DECODER_MEMORY_BYTES, right after it started (Linux's prlimit).

    Not in a ``preexec_fn``: that runs between fork and exec, which is unsafe in a program with threads. The few
    milliseconds before the cap are the decoder's start-up, before it has read any input.
    """
    try:
        resource.prlimit(pid, resource.RLIMIT_AS, (DECODER_MEMORY_BYTES, DECODER_MEMORY_BYTES))
    except (AttributeError, OSError, ValueError) as err:  # not Linux, or the decoder has already exited
        log.debug("cannot cap the decoder's memory: %s", err)


def _read_output(
    stream: IO[bytes], *, span_s: float, limit_rate: bool, raw: RawFormat | None = None
) -> tuple[Pcm | None, bool]:
    """A decoder's WAV output (or ``raw`` PCM), and whether reading stopped before its end (span reached, or rate
    too high)."""
    if raw is None:
        try:
            channels, rate, _ = read_wav_header(stream.read)
        except DecodeError:
            return None, False  # ffmpeg failed before writing a header; its exit status and stderr say why
    else:
        channels, rate = raw
    if limit_rate and rate > MAX_NATIVE_RATE:
        return None, True
    # ffmpeg passes on what a WAV's header claims: a 1-Hz rate would cost 16,000 resampled samples per byte.
    check_format(channels, rate)
    order = "<i2" if raw is None else "=i2"
    max_frames = round(span_s * rate)
    out = np.empty(max_frames, dtype=np.float64)  # reserves address space; pages are touched as frames arrive
    n = 0
    while n < max_frames:
        data = stream.read(min(READ_CHUNK_FRAMES, max_frames - n) * 2 * channels)
        k = len(data) // (2 * channels)
        if k == 0:
            break
        frames = np.frombuffer(data, dtype=order, count=k * channels).reshape(k, channels)
        _sum_channels(frames, out[n : n + k])
        n += k
    return Pcm(out[:n], channels, rate), n >= max_frames


def _read_memory(fd: int, raw: RawFormat, *, span_s: float) -> tuple[Pcm | None, bool]:
    """The raw PCM a decoder wrote into the memory file ``fd``, up to ``span_s``, as :func:`_read_output` reads a
    pipe; None if it wrote nothing."""
    channels, rate = raw
    check_format(channels, rate)
    size = os.fstat(fd).st_size
    if size == 0:
        return None, False
    max_frames = round(span_s * rate)
    n = min(size // (2 * channels), max_frames)
    out = np.empty(n, dtype=np.float64)
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapped:
        frames = np.frombuffer(mapped, dtype="=i2", count=n * channels).reshape(n, channels)
        _sum_channels(frames, out)
        del frames  # the map closes only once no array looks into it
    return Pcm(out, channels, rate), n >= max_frames


def _sum_channels(frames: npt.NDArray[np.int16], out: npt.NDArray[np.float64]) -> None:
    """``out`` = each frame's channels summed, exactly. Channel by channel: a sum over the short axis of [k, 2]
    (``frames.sum(axis=1)``) took 15 times as long, a tenth of a 3-minute stereo track's decode."""
    if frames.shape[1] == 1:
        out[:] = frames[:, 0]
        return
    np.add(frames[:, 0], frames[:, 1], out=out, dtype=np.float64)
    for channel in range(2, frames.shape[1]):
        out += frames[:, channel]
