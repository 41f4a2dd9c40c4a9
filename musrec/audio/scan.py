"""The loudest window of a long file without decoding all of it at full quality: a cheap envelope, then exact spans.

Decoding three minutes at full quality (the native rate, then the reference's resampling to 16 kHz) costs several
times the network's forward pass, only to keep ten seconds of it. Instead:

1. **Envelope.** A cheap decode of the first ``search_s`` seconds at a low rate. For MP3, when ``mpg123`` is
   installed, mpg123 synthesises only the lower subbands (``-4``: a quarter of the rate, content up to 5.5 kHz of a
   44.1-kHz file) and mixes to mono while it decodes, in two halves at once: on real music, 3 minutes take about a
   third of ffmpeg's time. Otherwise (other formats, or no mpg123) ffmpeg decodes and resamples to
   :data:`SCAN_RATE`, also in two halves at once.
2. **Candidates.** The windows :func:`~musrec.audio.window.choose_window` would consider (a 1-second grid), ranked
   by their envelope energy. Band-limited energy ranks windows almost as the full decode does: on 87 real
   recordings (bench/scan_bench.py) every window the full decode chose was within :data:`SCAN_MARGIN` of the best
   envelope energy; the envelope's own first choice missed it by over a second in 6 (mpg123) to 11 (ffmpeg) of
   them, all near-ties.
3. **Exact spans.** The spans around the candidates are decoded exactly as :func:`~musrec.audio.decode.decode`
   does, the candidates' exact energies compared, and the window cut from its span. So the choice is the full
   decode's, up to the seek's effect on the first milliseconds of a span.

The exact decoding is bounded by :data:`EXACT_BUDGET_S`: the best envelope candidate first, then the others, loudest
first, while their spans fit. Loudly mastered music is a plateau of windows within the margin of each other; the
windows left out are then as loud as the chosen one within the margin, which makes no difference to the answer.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from musrec.audio.decode import Audio, Source, check_file, decode, decode_pcm, source_file
from musrec.audio.head import Head, mp3_frame_samples
from musrec.audio.limits import AudioLimits, decode_deadline, refuse_short, refuse_silent
from musrec.audio.resample import TARGET_RATE
from musrec.audio.runner import Pcm, mpg123_executable, run_decoder
from musrec.audio.wav import INT16_SCALE
from musrec.audio.window import SEARCH_S, WINDOW_S, window_energies
from musrec.cores import usable_cores
from musrec.errors import TooShortError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# ffmpeg's envelope: 8 kHz keeps the fundamentals and most of the energy of speech and music (content up to 4 kHz)
# at half the samples of 16 kHz; ffmpeg's decoding, not the resampling, is most of its cost.
SCAN_RATE = 8000
# A window is a candidate when its envelope energy is within this fraction of the best one's. The envelope's
# error on real recordings was at most 1.1% (ffmpeg at 8 kHz) and 0.7% (mpg123 at a quarter rate).
SCAN_MARGIN = 0.02
# At most this many seconds of candidate spans are decoded exactly: the window itself and ten seconds around it.
# (Real recordings needed 12 s at the median, 23 s at the 90th percentile and 30 s at most to cover every candidate.)
EXACT_BUDGET_S = 20.0
# A file whose header says it lasts at most the window plus this is decoded from its start, without an envelope:
# the full decode's choice is then within this of the start (an MP3's estimate counts its tags and padding too).
SHORT_SLACK_S = 0.5
# A span that met the end of the file is decoded again from this long before the file's last window: a seek may land
# a codec frame (AAC's 1024 samples, an Ogg page) away from where it was asked to.
TAIL_LEAD_S = 0.5
# Envelopes are decoded in this many parts at once (at most one per usable core): on two idle cores, a 3-minute
# MP3's envelope takes about half the time of one run.
ENVELOPE_PARTS = 2


@dataclass(frozen=True)
class Envelope:
    """Mono samples of the first part of a file at a low rate, and which decoder made them."""

    samples: npt.NDArray[np.float64]
    rate: int
    decoder: str


def decode_loudest(
    source: Source,
    *,
    duration_s: float = WINDOW_S,
    search_s: float = SEARCH_S,
    limits: AudioLimits = AudioLimits(),  # noqa: B008 - frozen, so one shared default is safe
    deadline: float | None = None,
) -> Audio:
    """The loudest ``duration_s`` of the first ``search_s`` seconds, decoded exactly as :func:`decode` does.

    The window is the one :func:`~musrec.audio.window.choose_window` picks on the full decode (see the module's
    notes for the one exception, a plateau of near-equal windows). ``offset_s`` of the result is where the window
    starts in the source. Errors are those of :func:`decode`: a corrupt, silent, too short or too large input
    costs one cheap pass. All the decoding (envelope and exact spans) shares one budget: ``limits.decode_timeout_s``,
    or less if ``deadline`` (see :func:`~musrec.audio.decode.decode_deadline`) comes first.
    """
    started = time.monotonic()
    deadline = decode_deadline(limits, deadline)
    with source_file(source, limits) as head:
        if head.seconds is not None and head.seconds <= duration_s + SHORT_SLACK_S:  # nothing to choose (within slack)
            return decode(head, duration_s=duration_s, limits=limits, deadline=deadline)
        envelope = scan_envelope(head.path, search_s=search_s, limits=limits, head=head, deadline=deadline)
        rate = envelope.rate
        width = min(round(duration_s * rate), len(envelope.samples))
        if width == len(envelope.samples):  # a clip no longer than the window is used whole
            return decode(head, duration_s=duration_s, limits=limits, deadline=deadline)
        starts, energies = window_energies(envelope.samples, sample_rate=rate, width=width, search_s=search_s)
        scanned = time.monotonic()
        candidates = _candidates(starts / rate, energies, duration_s=duration_s)
        audio = _loudest_exactly(head, candidates, duration_s=duration_s, limits=limits, deadline=deadline)
    log.debug(
        "envelope (%s) of %.1f s in %.2f s; %d candidates; window at %.1f s decoded in %.2f s",
        envelope.decoder,
        len(envelope.samples) / rate,
        scanned - started,
        len(candidates),
        audio.offset_s,
        time.monotonic() - scanned,
    )
    return audio


def scan_envelope(
    path: Path,
    *,
    search_s: float = SEARCH_S,
    limits: AudioLimits = AudioLimits(),  # noqa: B008 - frozen, so one shared default is safe
    head: Head | None = None,
    deadline: float | None = None,
) -> Envelope:
    """The first ``search_s`` seconds of ``path`` at a low rate: by mpg123 for MP3 where it is installed, else ffmpeg.

    ``head`` is the file's :class:`~musrec.audio.head.Head` if the caller has checked it (:func:`check_file`, with
    the same limits); ``deadline`` as for :func:`decode`. DecodeError (silent, corrupt, ...), TooShortError and
    TooLongError as :func:`decode` raises them.
    """
    head = head or check_file(path, limits)
    deadline = decode_deadline(limits, deadline)
    parts = _parts(head.seconds, search_s)
    mpg123 = mpg123_executable()
    if mpg123 and head.mp3_rate:
        envelope = _mpg123_envelope(
            mpg123, head.path, head.mp3_rate, parts=parts, search_s=search_s, limits=limits, deadline=deadline
        )
        if envelope is not None:
            return envelope
    return _ffmpeg_envelope(head, parts=parts, search_s=search_s, limits=limits, deadline=deadline)


def _mpg123_envelope(
    mpg123: str, path: Path, native: int, *, parts: int, search_s: float, limits: AudioLimits, deadline: float
) -> Envelope | None:
    """mpg123's mono, subband-limited decode (a quarter or half of ``native``, at least 8 kHz); None if it failed.

    The search span is cut in :data:`ENVELOPE_PARTS` runs of whole frames (``--skip``, ``--frames``), decoded at once
    by as many processes: the parts join sample for sample, as one run's output would.
    """
    factor = next(f for f in (4, 2) if native // f >= SCAN_RATE) if native >= 2 * SCAN_RATE else 1
    frame_samples = mp3_frame_samples(native)
    frames = math.ceil(search_s * native / frame_samples) + 2  # + the encoder's delay, which mpg123 trims
    per_part = math.ceil(frames / parts)

    def part(index: int) -> tuple[Pcm | None, int | None]:
        cmd = [mpg123, "--quiet", "--mono", *([f"-{factor}"] if factor > 1 else [])]
        cmd += ["--skip", str(index * per_part), "--frames", str(per_part), "--wav", "-", "--", str(path)]
        span_s = per_part * frame_samples / native + 1.0
        pcm, rc, _ = run_decoder(cmd, name=path.name, span_s=span_s, deadline=deadline)
        return pcm, rc

    pieces = []
    for index, (pcm, rc) in enumerate(_at_once(part, range(parts))):
        if rc not in (0, None) or (pcm is None and index == 0) or (pcm is not None and pcm.channels != 1):
            log.debug("mpg123 could not scan %s (exit %s): ffmpeg will", path.name, rc)
            return None
        if pcm is None or len(pcm.summed) == 0:  # past the end of a short file
            break
        pieces.append(pcm)
    if not pieces or any(pcm.rate != pieces[0].rate for pcm in pieces):
        return None
    samples = np.concatenate([pcm.summed for pcm in pieces]) / INT16_SCALE
    return _checked(samples, pieces[0].rate, "mpg123", limits)


def _ffmpeg_envelope(head: Head, *, parts: int, search_s: float, limits: AudioLimits, deadline: float) -> Envelope:
    """ffmpeg's decode at SCAN_RATE, in ``parts`` spans at once (joined where ffmpeg's seek lands: within a codec
    frame of the boundary, which moves no window's energy by more than that frame's share)."""
    edges = [search_s * i / parts for i in range(parts + 1)]

    def part(index: int) -> npt.NDArray[np.float64]:
        start, end = edges[index], edges[index + 1]
        return decode_pcm(head, start_s=start or None, span_s=end - start, sample_rate=SCAN_RATE, deadline=deadline)

    pieces = _at_once(part, range(parts))
    # A part that ends short of its span met the end of the file, so the parts after it lie past the end. They are
    # not always empty: asked to seek past the end, some demuxers (Ogg) land on the last page and decode it again.
    for index, piece in enumerate(pieces[:-1]):
        if len(piece) < round((edges[index + 1] - edges[index]) * SCAN_RATE):
            pieces = pieces[: index + 1]
            break
    return _checked(np.concatenate(pieces), SCAN_RATE, "ffmpeg", limits)


def _parts(seconds: float | None, search_s: float) -> int:
    """How many processes decode an envelope at once: ENVELOPE_PARTS, at most one per usable core, and one for a
    file known (``seconds``) to be short: the others would decode nothing."""
    parts = min(ENVELOPE_PARTS, usable_cores())
    return 1 if seconds is not None and seconds < search_s / parts / 2 else parts


def _at_once(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(item) for item in items]``, each in a thread of its own when there are several (each runs a decoder
    process: the threads only wait for it)."""
    if len(items) == 1:
        return [fn(items[0])]
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="musrec-decode") as pool:
        return list(pool.map(fn, items))


def _checked(samples: npt.NDArray[np.float64], rate: int, decoder: str, limits: AudioLimits) -> Envelope:
    """The envelope, after decode's checks: TooShortError under ``min_duration_s``, DecodeError if silent."""
    refuse_short(len(samples) / rate, limits)
    refuse_silent(samples)
    return Envelope(samples, rate, decoder)


def _candidates(
    starts_s: npt.NDArray[np.float64], energies: npt.NDArray[np.float64], *, duration_s: float
) -> list[float]:
    """Window starts (seconds) worth an exact look: within SCAN_MARGIN of the best, loudest first, within budget."""
    best = float(energies.max())
    order = np.argsort(-energies, kind="stable")
    chosen: list[float] = []
    for i in order:
        if energies[i] < best * (1 - SCAN_MARGIN):
            break
        trial = [*chosen, float(starts_s[i])]
        if chosen and sum(b - a for a, b in _spans(trial, duration_s)) > EXACT_BUDGET_S:
            continue
        chosen = trial
    return sorted(chosen)


def _spans(starts_s: list[float], duration_s: float) -> list[tuple[float, float]]:
    """Merge windows [start, start + duration) into disjoint spans."""
    spans: list[tuple[float, float]] = []
    for start in sorted(starts_s):
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], start + duration_s))
        else:
            spans.append((start, start + duration_s))
    return spans


def _loudest_exactly(
    head: Head, candidates: list[float], *, duration_s: float, limits: AudioLimits, deadline: float
) -> Audio:
    """Decode the spans around ``candidates`` exactly (at once); the loudest candidate window, cut from its span.

    The envelope's idea of where the file ends is an estimate: a seek lands on a codec frame, and codecs pad their
    last frame, so a span that reaches the end may come back a few samples (or, after a seek in some containers, a
    frame or two) short of the window. A candidate that then overruns its span moves earlier to end where the audio
    does, as :func:`~musrec.audio.window.choose_window` moves the last window of a clip; a span too short for a whole
    window is decoded again from where the last window of the file must start (:func:`_decode_span`).
    """
    width = round(duration_s * TARGET_RATE)
    spans = _spans(candidates, duration_s)
    decoded = _at_once(
        lambda span: _decode_span(head, span, duration_s=duration_s, limits=limits, deadline=deadline), spans
    )
    if any(span is None for span in decoded):  # the whole file is shorter than the window: it is used whole
        return decode(head, duration_s=duration_s, limits=limits, deadline=deadline)
    best: tuple[float, Audio, int] | None = None  # energy, span, first sample
    for (span_start, span_end), span in zip(spans, decoded, strict=True):
        assert span is not None
        x = span.samples
        for start in candidates:
            if not span_start <= start < span_end:
                continue
            first = max(0, min(round((start - span.offset_s) * TARGET_RATE), len(x) - width))
            window = x[first : first + width]
            energy = float(np.dot(window, window.astype(np.float64)))
            # Ties go to the earliest start, as in choose_window (candidates are in order).
            if best is None or energy > best[0] * (1 + 1e-9):
                best = (energy, span, first)
    assert best is not None  # every span holds at least one candidate and a whole window
    _, span, first = best
    samples = span.samples[first : first + width]
    offset = span.offset_s + first / TARGET_RATE
    reached_end = span.source_duration_s is not None and first + width == len(span.samples)
    return Audio(samples, offset_s=offset, source_duration_s=span.source_duration_s if reached_end else None)


def _decode_span(
    head: Head, span: tuple[float, float], *, duration_s: float, limits: AudioLimits, deadline: float
) -> Audio | None:
    """The span decoded exactly, holding at least one whole window; None if the file is shorter than a window.

    A span that comes back too short has met the end of the file: it is decoded again from :data:`TAIL_LEAD_S`
    before where the file's last window starts, so that window lies inside it whatever the seek's rounding.
    """
    width = round(duration_s * TARGET_RATE)
    start, end = span
    audio = _decode_or_none(head, start_s=start, duration_s=end - start, limits=limits, deadline=deadline)
    if audio is not None and len(audio.samples) >= width:
        return audio
    ends_at = start + (audio.duration_s if audio is not None else 0.0)
    earlier = max(0.0, ends_at - duration_s - TAIL_LEAD_S)
    if earlier >= start:  # nothing earlier to read: a start past the end of what the envelope saw
        earlier = max(0.0, start - duration_s - TAIL_LEAD_S)
    audio = _decode_or_none(head, start_s=earlier, duration_s=end - earlier, limits=limits, deadline=deadline)
    if audio is None or len(audio.samples) < width:
        if earlier > 0:
            raise TooShortError("the audio is shorter than its first decode said")
        return None
    return audio


def _decode_or_none(
    head: Head, *, start_s: float, duration_s: float, limits: AudioLimits, deadline: float
) -> Audio | None:
    """:func:`decode` of a span, or None where the span holds no audio (it starts at or past the end)."""
    try:
        return decode(head, start_s=start_s or None, duration_s=duration_s, limits=limits, deadline=deadline)
    except TooShortError:
        return None
