"""Audio in: any file ffmpeg reads -> 16 kHz mono float32.

Decoding mirrors the reference pipeline: ffmpeg writes signed 16-bit PCM at the input's native rate and
channel count, samples become ``int16 / 32768.0``, channels are averaged, and
:func:`musrec.audio.resample.resample` converts to 16 kHz. ffmpeg is the binary shipped by imageio-ffmpeg (or
``MUSREC_FFMPEG``, or the one on PATH: :func:`ffmpeg_executable`); ffprobe is never needed.

Safety: ffmpeg runs under a timeout and a memory cap (:mod:`musrec.audio.runner`), with an
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
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from musrec.audio.head import MAGIC_BYTES, Head, mp3_frame_samples, read_head
from musrec.audio.limits import (
    AudioLimits,
    check_size,
    decode_deadline,
    refuse_long,
    refuse_short,
    refuse_silent,
    span_text,
)
from musrec.audio.resample import TARGET_RATE, resample
from musrec.audio.runner import MAX_NATIVE_RATE, Pcm, mpg123_executable, run_decoder
from musrec.audio.wav import INT16_SCALE, read_wav_bytes, wav_format
from musrec.childenv import child_environment
from musrec.errors import DecodeError, TooLongError, TooShortError
from musrec.timecode import format_timecode

log = logging.getLogger(__name__)

# Decode this much past the duration limit and tolerate half of it, so codec padding never trips the limit.
DURATION_SLACK_S = 1.0
DURATION_TOLERANCE_S = DURATION_SLACK_S / 2
# ffmpeg's -t can stop a codec frame short (whole 1024-sample AAC frames): ask for more, trim exactly here.
TRIM_MARGIN_S = 0.5
# ffmpeg recognises these playlists by their first bytes; they only point at other files or URLs.
PLAYLIST_MAGIC = (b"#EXTM3U", b"ffconcat version")
# Audio leaves ffmpeg's decoder in codec frames (1,152 samples of MP3, 1,024 of AAC), each handed between ffmpeg's
# threads (decoder, filters, encoder, muxer). Regrouped into frames of this many samples after decoding, a 3-minute
# track costs about a third less processor time (0.30 -> 0.18-0.22 s for AAC and MP3), the samples unchanged.
OUTPUT_FRAME_SAMPLES = 1 << 16
FILTER_PROBE_TIMEOUT_S = 10.0
WAV_PROBE_BYTES = 32 * 1024  # ffmpeg's probe of a WAV: its header and a little of the samples
# The demuxers ffmpeg may use on a user's file: audio and video containers and raw audio streams. Left out are those
# that only point at other files or URLs (dash, hls, concat, webm_dash_manifest, sdp...), images and lavfi.
# ffmpeg matches any of a demuxer's names: "mov" admits mov,mp4,m4a,3gp; "matroska" admits matroska,webm.
ALLOWED_DEMUXERS = (
    "wav,w64,aiff,caf,au,voc,mp3,aac,ac3,eac3,dts,dtshd,truehd,mlp,loas,flac,ogg,mov,matroska,asf,xwma,avi,flv,"
    "mpeg,mpegts,mxf,rm,amr,amrnb,amrwb,ape,wv,tta,tak,mpc,mpc8,shn,dsf,oma,gsm,qcp,nut"
)

Source = str | os.PathLike[str] | bytes | bytearray | memoryview


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
    source: Source | Head,
    *,
    start_s: float | None = None,
    duration_s: float | None = None,
    sample_rate: int = TARGET_RATE,
    limits: AudioLimits = AudioLimits(),  # noqa: B008 - frozen, so one shared default is safe
    deadline: float | None = None,
) -> Audio:
    """Decode a file path or encoded bytes (any format ffmpeg reads; its first audio track) to 16 kHz mono; or the
    file of a :class:`~musrec.audio.head.Head` that :func:`check_file` returned (with the same limits), not read again.

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
        raise TooLongError(f"the requested part is longer than {span_text(limits.max_duration_s)}")
    span_s = duration_s if duration_s is not None else limits.max_duration_s + DURATION_SLACK_S
    out_rate = None if sample_rate == TARGET_RATE else sample_rate
    started = time.monotonic()
    with source_file(source, limits) as head:
        mono, rate = _decode_file(
            head, start_s=start_s, span_s=span_s, deadline=decode_deadline(limits, deadline), out_rate=out_rate
        )

    decoded_s = len(mono) / rate
    offset = start_s or 0.0
    if duration_s is None:
        refuse_long(decoded_s, limits, tolerance_s=DURATION_TOLERANCE_S, after_start=bool(start_s))
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
def source_file(source: Source | Head, limits: AudioLimits) -> Iterator[Head]:
    """The :class:`~musrec.audio.head.Head` of a file the decoders can open, after :func:`check_file`'s checks: a
    path as it is, encoded bytes written to a private temporary file (a file, not stdin: MP4/M4A and some other
    containers need seekable input), a Head as it is. Bytes are checked before they are written."""
    if isinstance(source, Head):
        yield source
        return
    if not isinstance(source, bytes | bytearray | memoryview):
        yield check_file(Path(os.path.abspath(source)), limits)
        return
    view = memoryview(source).cast("B")
    _check_head(view.nbytes, bytes(view[:MAGIC_BYTES]), limits)
    with tempfile.TemporaryDirectory(prefix="musrec-") as tmp:
        path = Path(tmp) / "input"
        path.write_bytes(view)
        yield check_file(path, limits)


def check_file(path: Path, limits: AudioLimits) -> Head:
    """What :func:`decode` checks of a file before running ffmpeg: a regular, readable file within ``max_bytes``,
    not a playlist. Returns its :class:`~musrec.audio.head.Head` for the decoders. DecodeError or TooLongError, with
    decode's messages."""
    try:
        head = read_head(path)
        _check_head(head.size, head.magic, limits)
        return head
    except FileNotFoundError:
        raise DecodeError("the file does not exist") from None
    except OSError as err:
        log.debug("cannot read %s: %s", path, err)
        raise DecodeError("the file cannot be read") from None


def decode_pcm(
    head: Head, *, start_s: float | None, span_s: float, sample_rate: int, deadline: float
) -> npt.NDArray[np.float64]:
    """Up to ``span_s`` seconds of a file from ``start_s`` as mono float64 at ``sample_rate`` (ffmpeg's resampling),
    for scanning: no duration or silence checks, and a start past the end gives no samples. ``head`` is what
    :func:`check_file` returned. DecodeError if ffmpeg cannot read it, or runs past ``deadline`` (see
    :func:`decode_deadline`)."""
    mono, _ = _decode_file(head, start_s=start_s, span_s=span_s, deadline=deadline, out_rate=sample_rate)
    return mono


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
    check_size(view.nbytes, limits)
    fmt = wav_format(view)
    refuse_long(fmt.duration_s, limits)
    refuse_short(fmt.duration_s, limits)
    return read_wav_bytes(view)


def _check_head(size: int, head: bytes, limits: AudioLimits) -> None:
    check_size(size, limits)
    if head.startswith(PLAYLIST_MAGIC):
        raise DecodeError("could not read this as audio (playlists are not accepted)")


def _decode_file(
    head: Head, *, start_s: float | None, span_s: float, deadline: float, out_rate: int | None
) -> tuple[npt.NDArray[np.float64], int]:
    """Mono float64 at ``out_rate`` or the native rate (at most MAX_NATIVE_RATE), channels averaged as the reference."""
    pcm = None
    if not start_s and out_rate is None and head.mp3_rate and (mpg123 := mpg123_executable()):
        pcm = _run_mpg123(mpg123, head.path, head.mp3_rate, span_s=span_s, deadline=deadline)
    if pcm is None:
        pcm = _run_ffmpeg(head, start_s=start_s, span_s=span_s, deadline=deadline, out_rate=out_rate)
    if pcm is None and out_rate is None:
        pcm = _run_ffmpeg(head, start_s=start_s, span_s=span_s, deadline=deadline, out_rate=MAX_NATIVE_RATE)
    if pcm is None:
        raise DecodeError("could not read this as audio")
    # (sum / 32768) / channels equals the reference's mean(int16 / 32768) bit for bit: every step is exact
    # up to the division by the channel count, which both do last. By 1, 2, 4... channels the two divisions are one,
    # by a power of two, exact too.
    mono = pcm.summed  # this decode's own: divided where it is
    if pcm.channels & (pcm.channels - 1) == 0:
        mono /= INT16_SCALE * pcm.channels
    else:
        mono /= INT16_SCALE
        mono /= pcm.channels
    return mono, pcm.rate


@lru_cache(maxsize=4)
def regroups(ffmpeg: str) -> bool:
    """Whether ``ffmpeg`` has the ``asetnsamples`` filter (every build but one made without filters): asked once."""
    try:
        listed = subprocess.run(
            [ffmpeg, "-hide_banner", "-filters"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=FILTER_PROBE_TIMEOUT_S,
            env=child_environment(),
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("cannot list %s's filters: %s", ffmpeg, err)
        return False
    return b" asetnsamples " in listed


def _run_mpg123(mpg123: str, path: Path, rate: int, *, span_s: float, deadline: float) -> Pcm | None:
    """An MP3 at ``rate`` from its start, at that rate, by mpg123; None if mpg123 could not (ffmpeg decodes it).

    Its samples are ffmpeg's to one step of 16 bits (about one in a thousand differ by that), the encoder's delay
    trimmed alike, at a third of ffmpeg's processor time (ffmpeg hands every frame between threads): a library of MP3s
    is added that much faster. A start other than 0 is ffmpeg's: its seek is exact to the sample.
    """
    frames = math.ceil((span_s + TRIM_MARGIN_S) * rate / mp3_frame_samples(rate)) + 2  # + the encoder's delay
    # --resync-limit -1: past a damaged stretch, go on to the next good frame as ffmpeg does (by default mpg123 ends
    # there, with success: a file with a hole would be cut short without a word).
    # -s --stereo --encoding s16: headerless 16-bit stereo (a mono MP3's channel twice: the same mean) at the rate
    # the header scan found in the stream's first frames, so the samples can go into memory rather than through a
    # pipe (run_decoder's ``raw``). Not --rate: with it, mpg123 also keeps stray frames of other rates that it finds
    # in a damaged stretch, converted (an MP3 that is noise after its first frames then passed as audio).
    cmd = [mpg123, "--quiet", "--resync-limit", "-1", "--frames", str(frames), "-s", "--stereo", "--encoding", "s16"]
    cmd += ["--", str(path)]
    pcm, rc, _ = run_decoder(cmd, name=path.name, span_s=span_s, deadline=deadline, raw=(2, rate))
    if rc not in (0, None) or pcm is None or len(pcm.summed) == 0:
        log.debug("mpg123 could not decode %s (exit %s): ffmpeg will", path.name, rc)
        return None
    return pcm


def _run_ffmpeg(
    head: Head, *, start_s: float | None, span_s: float, deadline: float, out_rate: int | None
) -> Pcm | None:
    """Up to ``span_s`` seconds from ``start_s``; None if ``out_rate`` is None and the native rate is too high."""
    cmd = [ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error"]
    cmd += ["-protocol_whitelist", "file,pipe", "-format_whitelist", ALLOWED_DEMUXERS]
    path = head.path
    if head.wav:
        # A WAV's header says all there is to know: probing its default 5 MB of samples would double ffmpeg's time.
        cmd += ["-probesize", str(WAV_PROBE_BYTES)]
    if start_s:
        cmd += ["-ss", f"{start_s:.6f}"]  # an input option: seek, then decode only what follows
    cmd += ["-i", f"file:{path}", "-map", "0:a:0", "-map_metadata", "-1", "-t", f"{span_s + TRIM_MARGIN_S:.6f}"]
    if regroups(cmd[0]):
        cmd += ["-af", f"asetnsamples=n={OUTPUT_FRAME_SAMPLES}:p=0"]
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
