"""Audio in: any file ffmpeg reads -> 16 kHz mono float32; the 10-second query window.

Decoding mirrors the reference pipeline: ffmpeg writes signed 16-bit PCM at the input's native rate and
channel count, samples become ``int16 / 32768.0``, channels are averaged, and
:func:`musrec.audio.resample.resample` converts to 16 kHz. ffmpeg is the binary shipped by imageio-ffmpeg (or
``MUSREC_FFMPEG``, or the one on PATH: :func:`ffmpeg_executable`); ffprobe is never needed.

Safety: ffmpeg runs under a timeout and a memory cap (:data:`DECODER_MEMORY_BYTES` of address space), with an
environment that holds none of musrec's secrets (:func:`~musrec.childenv.child_environment`), opens local files only
(``-protocol_whitelist file,pipe``: a crafted HLS, SDP or concat file cannot reach the network), reads only audio and
video containers (``-format_whitelist``: a DASH or HLS manifest named ``x.mp4`` cannot make it open other local
files) and decodes at most the allowed duration, so a 3-hour upload is refused after about ten minutes of audio have
been decoded, not three hours.

:func:`read_wav` is the path without ffmpeg, for 16-bit PCM WAVs (``musrec serve``'s uploads), under the same
limits: they are checked against the header, before a sample is read (issue 14).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from musrec.audio.resample import TARGET_RATE, resample
from musrec.audio.wav import INT16_SCALE, check_format, is_wav, read_wav_bytes, read_wav_header, wav_format
from musrec.childenv import child_environment
from musrec.errors import DecodeError, TooLongError, TooShortError
from musrec.timecode import format_timecode

log = logging.getLogger(__name__)

WINDOW_S = 10.0  # the query length: 10 VGGish examples, like an AudioSet segment
WINDOW_HOP_S = 1.0  # grid of the loudest-window search
SEARCH_S = 180.0  # the loudest window is looked for in the first three minutes
SILENCE_PEAK = 10 ** (-60 / 20)  # -60 dBFS: a decode whose peak stays below this is silent
# Decode this much past the duration limit and tolerate half of it, so codec padding never trips the limit.
DURATION_SLACK_S = 1.0
DURATION_TOLERANCE_S = DURATION_SLACK_S / 2
# ffmpeg's -t can stop a codec frame short (whole 1024-sample AAC frames): ask for more, trim exactly here.
TRIM_MARGIN_S = 0.5
# Higher native rates are converted to this by ffmpeg: ten minutes at 384 kHz would take gigabytes.
MAX_NATIVE_RATE = 48_000
READ_CHUNK_FRAMES = 1 << 16
STDERR_LOG_CHARS = 4000
# ffmpeg recognises these playlists by their first bytes; they only point at other files or URLs.
PLAYLIST_MAGIC = (b"#EXTM3U", b"ffconcat version")
MAGIC_BYTES = 32
# A decoder process may map at most this much memory (RLIMIT_AS): ffmpeg decoding ten minutes of audio, or a video
# file's audio track, needs under 256 MiB; a crafted file that makes it allocate more fails to decode instead.
DECODER_MEMORY_BYTES = 1 << 30
WAV_PROBE_BYTES = 32 * 1024  # ffmpeg's probe of a WAV: its header and a little of the samples
# The demuxers ffmpeg may use on a user's file: audio and video containers and raw audio streams. Left out are those
# that only point at other files or URLs (dash, hls, concat, webm_dash_manifest, sdp...), images and lavfi.
# ffmpeg matches any of a demuxer's names: "mov" admits mov,mp4,m4a,3gp; "matroska" admits matroska,webm.
ALLOWED_DEMUXERS = (
    "wav,w64,aiff,caf,au,voc,mp3,aac,ac3,eac3,dts,dtshd,truehd,mlp,loas,flac,ogg,mov,matroska,asf,xwma,avi,flv,"
    "mpeg,mpegts,mxf,rm,amr,amrnb,amrwb,ape,wv,tta,tak,mpc,mpc8,shn,dsf,oma,gsm,qcp,nut"
)

Source = str | os.PathLike[str] | bytes | bytearray | memoryview


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


@dataclass(frozen=True, eq=False)
class Audio:
    """Decoded audio: read-only float32 mono samples in [-1, 1] at ``sample_rate`` (16 kHz).

    ``offset_s`` is where ``samples[0]`` lies in the source (the ``start_s`` given to :func:`decode`);
    ``source_duration_s`` is the source's length if the decode reached its end, else None.
    """

    samples: npt.NDArray[np.float32]
    sample_rate: int = TARGET_RATE
    offset_s: float = 0.0
    source_duration_s: float | None = None

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Window:
    """A span in seconds, relative to the first sample of the clip given to :func:`choose_window`."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@lru_cache(maxsize=1)
def ffmpeg_executable() -> str:
    """The ffmpeg to run: ``MUSREC_FFMPEG`` if set, else the binary shipped by imageio-ffmpeg, else ``ffmpeg`` on
    PATH; DecodeError if there is none.

    The shipped binary comes first: it is statically linked, so it starts in about 10 ms, where a distribution's
    ffmpeg loads a hundred shared libraries first (about 50 ms on Debian 12). Every decode starts one, so that is
    most of the cost of decoding a 10-s clip.
    """
    chosen = os.environ.get("MUSREC_FFMPEG")
    if chosen:
        return chosen
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as err:
        found = shutil.which("ffmpeg")
        if found:
            return found
        log.error("no ffmpeg from imageio-ffmpeg and none on PATH: %s", err)
        raise DecodeError("audio decoding is not available on this server (ffmpeg is missing)") from None


def decode(
    source: Source,
    *,
    start_s: float | None = None,
    duration_s: float | None = None,
    sample_rate: int = TARGET_RATE,
    limits: AudioLimits = AudioLimits(),  # noqa: B008 - frozen, so one shared default is safe
    deadline: float | None = None,
) -> Audio:
    """Decode a file path or encoded bytes (any format ffmpeg reads; its first audio track) to 16 kHz mono.

    Another ``sample_rate`` is ffmpeg's own resampling, not the reference's: cheap, for scanning loudness.

    ``start_s`` seeks before decoding, so only the needed part is read; ``duration_s`` decodes at most that
    much. The duration limit applies to the decoded span, not to the source: a 3-hour file with
    ``start_s=3600, duration_s=10`` is fine, while the same file without ``duration_s`` is refused, because
    what follows the start is longer than ``limits.max_duration_s``. ffmpeg is asked for the limit plus about
    a second, so a long input costs at most that much decoding.

    Raises DecodeError (missing, empty, corrupt, not audio, no audio track, silent), TooLongError (over
    ``max_bytes``, or over ``max_duration_s``) and TooShortError (under ``min_duration_s``, or a start past
    the end): their messages are safe to show users. ValueError for a negative start or duration.

    ``deadline`` (a :func:`time.monotonic` value, see :func:`decode_deadline`) ends the decode sooner than
    ``limits.decode_timeout_s`` would: one budget for every decode of a request. Past it, DecodeError.
    """
    if start_s is not None and not (math.isfinite(start_s) and start_s >= 0):
        raise ValueError(f"start_s must be a non-negative number, got {start_s}")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number, got {duration_s}")
    if duration_s is not None and duration_s > limits.max_duration_s:
        raise TooLongError(f"the requested part is longer than {_span(limits.max_duration_s)}")
    span_s = duration_s if duration_s is not None else limits.max_duration_s + DURATION_SLACK_S
    out_rate = None if sample_rate == TARGET_RATE else sample_rate
    started = time.monotonic()
    with source_file(source, limits) as path:
        mono, rate = _decode_file(
            path, start_s=start_s, span_s=span_s, deadline=decode_deadline(limits, deadline), out_rate=out_rate
        )

    decoded_s = len(mono) / rate
    offset = start_s or 0.0
    if duration_s is None:
        _refuse_long(decoded_s, limits, tolerance_s=DURATION_TOLERANCE_S, after_start=bool(start_s))
    if len(mono) == 0 and start_s:
        raise TooShortError(f"the start time {format_timecode(start_s)} is past the end of the audio")
    refuse_short(decoded_s, limits)
    reached_end = duration_s is None or decoded_s < duration_s - DURATION_TOLERANCE_S
    resampled = resample(mono, rate, sample_rate)
    del mono
    samples = np.clip(resampled, -1.0, 1.0, out=resampled).astype(np.float32)
    refuse_silent(samples)
    samples.setflags(write=False)
    log.debug("decoded %.1f s at %d Hz in %.2f s", decoded_s, rate, time.monotonic() - started)
    end_s = offset + decoded_s if reached_end else None
    return Audio(samples, sample_rate=sample_rate, offset_s=offset, source_duration_s=end_s)


@contextlib.contextmanager
def source_file(source: Source, limits: AudioLimits) -> Iterator[Path]:
    """``source`` as a file the decoders can open, after :func:`check_file`'s checks: a path as it is, encoded bytes
    written to a private temporary file (a file, not stdin: MP4/M4A and some other containers need seekable input).
    Bytes are checked before they are written."""
    if not isinstance(source, bytes | bytearray | memoryview):
        path = Path(os.path.abspath(source))
        check_file(path, limits)
        yield path
        return
    view = memoryview(source).cast("B")
    _check_head(view.nbytes, bytes(view[:MAGIC_BYTES]), limits)
    with tempfile.TemporaryDirectory(prefix="musrec-") as tmp:
        path = Path(tmp) / "input"
        path.write_bytes(view)
        yield path


def check_file(path: Path, limits: AudioLimits) -> None:
    """What :func:`decode` checks of a file before running ffmpeg: a regular, readable file within ``max_bytes``,
    not a playlist. DecodeError or TooLongError, with decode's messages."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise DecodeError("this is not a file")
        with path.open("rb") as f:
            _check_head(info.st_size, f.read(MAGIC_BYTES), limits)
    except FileNotFoundError:
        raise DecodeError("the file does not exist") from None
    except OSError as err:
        log.debug("cannot read %s: %s", path, err)
        raise DecodeError("the file cannot be read") from None


def decode_pcm(
    path: Path, *, start_s: float | None, span_s: float, sample_rate: int, deadline: float
) -> npt.NDArray[np.float64]:
    """Up to ``span_s`` seconds of ``path`` from ``start_s`` as mono float64 at ``sample_rate`` (ffmpeg's resampling),
    for scanning: no duration or silence checks, and a start past the end gives no samples. Call :func:`check_file`
    first. DecodeError if ffmpeg cannot read it, or runs past ``deadline`` (see :func:`decode_deadline`)."""
    mono, _ = _decode_file(path, start_s=start_s, span_s=span_s, deadline=deadline, out_rate=sample_rate)
    return mono


def decode_deadline(limits: AudioLimits, deadline: float | None = None) -> float:
    """When decoding that starts now must end (a :func:`time.monotonic` value): ``limits.decode_timeout_s`` from now,
    or ``deadline`` if that comes first. A request computes one and hands it to each of its decodes, so a sound that
    needs several (an envelope, then exact spans; each sound of a blend) has one budget in all, not one per step."""
    own = time.monotonic() + limits.decode_timeout_s
    return own if deadline is None else min(own, deadline)


def read_wav(
    data: bytes | bytearray | memoryview,
    *,
    limits: AudioLimits = AudioLimits(),  # noqa: B008 - frozen, so one shared default is safe
) -> tuple[npt.NDArray[np.float64], int]:
    """Mono float64 samples (channels averaged) at their own rate from a 16-bit PCM WAV in memory; no ffmpeg.

    The limits are checked before a sample is read: the size against ``max_bytes``, the header's rate and channels
    against what recordings have, and the duration the bytes really hold (not what the header claims) against
    ``min_duration_s`` and ``max_duration_s``. So a header that lies costs nothing. Raises DecodeError (empty, not
    a 16-bit PCM WAV, an impossible rate or channel count), TooLongError and TooShortError, with the messages of
    :func:`decode`.
    """
    view = memoryview(data).cast("B")
    _check_size(view.nbytes, limits)
    fmt = wav_format(view)
    _refuse_long(fmt.duration_s, limits)
    refuse_short(fmt.duration_s, limits)
    return read_wav_bytes(view)


def _refuse_long(seconds: float, limits: AudioLimits, *, tolerance_s: float = 0.0, after_start: bool = False) -> None:
    if seconds > limits.max_duration_s + tolerance_s:
        what = "the audio after the start time is" if after_start else "the audio is"
        raise TooLongError(f"{what} longer than {_span(limits.max_duration_s)}; choose a shorter part")


def refuse_short(seconds: float, limits: AudioLimits) -> None:
    """TooShortError if ``seconds`` of audio are under ``limits.min_duration_s``."""
    if seconds < limits.min_duration_s:
        raise TooShortError(f"the audio is only {seconds:.2g} s long; at least {limits.min_duration_s:g} s is needed")


def refuse_silent(samples: npt.NDArray[np.floating]) -> None:
    """DecodeError if the peak of ``samples`` stays below SILENCE_PEAK (-60 dBFS)."""
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise DecodeError("the audio is silent")


def _check_size(size: int, limits: AudioLimits) -> None:
    if size == 0:
        raise DecodeError("the file is empty")
    if size > limits.max_bytes:
        raise TooLongError(f"the file is larger than {limits.max_bytes / 2**20:g} MiB")


def _check_head(size: int, head: bytes, limits: AudioLimits) -> None:
    _check_size(size, limits)
    if head.startswith(PLAYLIST_MAGIC):
        raise DecodeError("could not read this as audio (playlists are not accepted)")


@dataclass(frozen=True)
class Pcm:
    summed: npt.NDArray[np.int32]  # per frame, the sum of the channels' int16 values
    channels: int
    rate: int


def _decode_file(
    path: Path, *, start_s: float | None, span_s: float, deadline: float, out_rate: int | None
) -> tuple[npt.NDArray[np.float64], int]:
    """Mono float64 at ``out_rate`` or the native rate (at most MAX_NATIVE_RATE), channels averaged as the reference."""
    pcm = _run_ffmpeg(path, start_s=start_s, span_s=span_s, deadline=deadline, out_rate=out_rate)
    if pcm is None and out_rate is None:
        pcm = _run_ffmpeg(path, start_s=start_s, span_s=span_s, deadline=deadline, out_rate=MAX_NATIVE_RATE)
    if pcm is None:
        raise DecodeError("could not read this as audio")
    mono = pcm.summed.astype(np.float64)
    # (sum / 32768) / channels equals the reference's mean(int16 / 32768) bit for bit: every step is exact
    # up to the division by the channel count, which both do last.
    mono /= INT16_SCALE
    if pcm.channels > 1:
        mono /= pcm.channels
    return mono, pcm.rate


def _run_ffmpeg(
    path: Path, *, start_s: float | None, span_s: float, deadline: float, out_rate: int | None
) -> Pcm | None:
    """Up to ``span_s`` seconds from ``start_s``; None if ``out_rate`` is None and the native rate is too high."""
    cmd = [ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error"]
    cmd += ["-protocol_whitelist", "file,pipe", "-format_whitelist", ALLOWED_DEMUXERS]
    if _is_wav(path):
        # A WAV's header says all there is to know: probing its default 5 MB of samples would double ffmpeg's time.
        cmd += ["-probesize", str(WAV_PROBE_BYTES)]
    if start_s:
        cmd += ["-ss", f"{start_s:.6f}"]  # an input option: seek, then decode only what follows
    cmd += ["-i", f"file:{path}", "-map", "0:a:0", "-map_metadata", "-1", "-t", f"{span_s + TRIM_MARGIN_S:.6f}"]
    if out_rate is not None:
        cmd += ["-ar", str(out_rate)]
    cmd += ["-c:a", "pcm_s16le", "-f", "wav", "pipe:1"]
    pcm, rc, stderr = run_decoder(cmd, name=path.name, span_s=span_s, deadline=deadline, limit_rate=out_rate is None)
    if rc is None:  # stopped early: the span is read, or (pcm None) the native rate is too high
        return pcm
    if rc != 0 or pcm is None:
        if "matches no streams" in stderr or "does not contain any stream" in stderr:
            raise DecodeError("the file has no audio track")
        raise DecodeError("could not read this as audio")
    return pcm


def _is_wav(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return is_wav(f.read(12))
    except OSError:
        return False


def run_decoder(
    cmd: list[str], *, name: str, span_s: float, deadline: float, limit_rate: bool = False
) -> tuple[Pcm | None, int | None, str]:
    """Run a decoder writing a 16-bit WAV to stdout; read up to ``span_s`` seconds of it before ``deadline``.

    Returns the PCM read (None if there was no WAV header, or ``limit_rate`` and the rate is over
    MAX_NATIVE_RATE), the exit status (None when reading stopped early and the decoder was killed) and the end
    of its stderr. DecodeError if it cannot run or runs past the deadline.
    """
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as errfile:  # a file, not a pipe: a flood of errors cannot stall the decoder
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errfile, env=child_environment()
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
        assert proc.stdout is not None
        try:
            pcm, stopped_early = _read_output(proc.stdout, span_s=span_s, limit_rate=limit_rate)
            if stopped_early:
                proc.kill()
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
            proc.stdout.close()
        errfile.seek(0)
        stderr = errfile.read().decode("utf-8", "replace")[-STDERR_LOG_CHARS:].strip()
    if stderr:
        log.debug("%s (exit %s) on %s: %s", Path(cmd[0]).name, rc, name, stderr)
    if timed_out.is_set():
        raise DecodeError("the audio took too long to decode")
    return pcm, None if stopped_early else rc, stderr


def _limit_memory(pid: int) -> None:
    """Cap a decoder's address space at DECODER_MEMORY_BYTES, right after it started (Linux's prlimit).

    Not in a ``preexec_fn``: that runs between fork and exec, which is unsafe in a program with threads. The few
    milliseconds before the cap are the decoder's start-up, before it has read any input.
    """
    try:
        resource.prlimit(pid, resource.RLIMIT_AS, (DECODER_MEMORY_BYTES, DECODER_MEMORY_BYTES))
    except (AttributeError, OSError, ValueError) as err:  # not Linux, or the decoder has already exited
        log.debug("cannot cap the decoder's memory: %s", err)


def _read_output(stream: IO[bytes], *, span_s: float, limit_rate: bool) -> tuple[Pcm | None, bool]:
    """ffmpeg's WAV output, and whether reading stopped before its end (span reached, or rate too high)."""
    try:
        fmt = read_wav_header(stream.read)
    except DecodeError:
        return None, False  # ffmpeg failed before writing a header; its exit status and stderr say why
    channels, rate, _ = fmt
    if limit_rate and rate > MAX_NATIVE_RATE:
        return None, True
    # ffmpeg passes on what a WAV's header claims: a 1-Hz rate would cost 16,000 resampled samples per byte.
    check_format(channels, rate)
    max_frames = round(span_s * rate)
    out = np.empty(max_frames, dtype=np.int32)  # reserves address space; pages are touched as frames arrive
    n = 0
    while n < max_frames:
        data = stream.read(min(READ_CHUNK_FRAMES, max_frames - n) * 2 * channels)
        k = len(data) // (2 * channels)
        if k == 0:
            break
        frames = np.frombuffer(data, dtype="<i2", count=k * channels).reshape(k, channels)
        out[n : n + k] = frames.sum(axis=1, dtype=np.int32)
        n += k
    return Pcm(out[:n], channels, rate), n >= max_frames


def choose_window(
    samples: npt.NDArray[np.floating],
    *,
    sample_rate: int = TARGET_RATE,
    start_s: float | None = None,
    duration_s: float = WINDOW_S,
    search_s: float = SEARCH_S,
) -> Window:
    """Pick the ``duration_s`` span of a clip to embed.

    With ``start_s``: the window starts there, moved earlier if needed to fit inside the clip; a start at or
    past the end is a TooShortError. Without: the loudest window (highest RMS) lying wholly inside the first
    ``search_s`` seconds, among starts on a 1-second grid plus the start that ends at that limit; ties go to
    the earliest. This skips a silent or quiet intro without scanning a whole DJ set. A clip no longer than
    ``duration_s`` is used whole (the embedding stage repeats rows to fill 10 seconds).
    """
    if sample_rate <= 0 or duration_s <= 0:
        raise ValueError("sample_rate and duration_s must be positive")
    x = np.asarray(samples)
    n = len(x)
    if n == 0:
        raise TooShortError("the audio is empty")
    width = min(round(duration_s * sample_rate), n)
    if start_s is not None:
        if not (math.isfinite(start_s) and start_s >= 0):
            raise ValueError(f"start_s must be a non-negative number, got {start_s}")
        if start_s >= n / sample_rate:
            end = format_timecode(n / sample_rate)
            raise TooShortError(f"the start time {format_timecode(start_s)} is past the end of the audio ({end})")
        first = min(round(start_s * sample_rate), n - width)
        return Window(first / sample_rate, (first + width) / sample_rate)
    starts, energies = window_energies(x, sample_rate=sample_rate, width=width, search_s=search_s)
    # Running sums carry rounding error: count near-equal energies as ties, and ties go to the earliest start.
    best = int(starts[int(np.argmax(energies >= energies.max() * (1 - 1e-9)))])
    return Window(best / sample_rate, (best + width) / sample_rate)


def window_energies(
    samples: npt.NDArray[np.floating], *, sample_rate: int, width: int, search_s: float = SEARCH_S
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The starts (in samples) :func:`choose_window` considers for windows of ``width`` samples, and their energies.

    Starts lie on a 1-second grid, plus the start that ends at the search limit; every window lies wholly inside
    the first ``search_s`` seconds (or the clip, if shorter). ``width`` must be at most the clip's length.
    """
    n = len(samples)
    limit = min(n, max(width, round(search_s * sample_rate)))
    starts = list(range(0, limit - width + 1, max(1, round(WINDOW_HOP_S * sample_rate))))
    if starts[-1] != limit - width:
        starts.append(limit - width)
    # One running sum of squares: O(n), where slicing each window would copy 10 s per start.
    power = np.zeros(limit + 1, dtype=np.float64)
    np.cumsum(np.square(samples[:limit], dtype=np.float64), out=power[1:])
    grid = np.asarray(starts, dtype=np.int64)
    return grid, power[grid + width] - power[grid]


def cut(samples: npt.NDArray[np.floating], window: Window, sample_rate: int = TARGET_RATE) -> npt.NDArray[np.floating]:
    """The samples inside ``window`` (a view, not a copy); ValueError if it does not lie inside the clip."""
    first, last = round(window.start_s * sample_rate), round(window.end_s * sample_rate)
    if not 0 <= first < last <= len(samples):
        raise ValueError(f"window {window} is outside a clip of {len(samples) / sample_rate:.3f} s")
    return samples[first:last]


def _span(seconds: float) -> str:
    """``10 minutes``, ``1 minute``, ``90.5 seconds``."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} seconds"
