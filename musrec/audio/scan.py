"""The loudest window of a long file in two passes: a cheap low-rate scan, then an exact decode of that window.

Decoding three minutes at full quality (the native rate, then the reference's resampling to 16 kHz) costs several
times the network's forward pass, only to keep ten seconds of it. The scan lets ffmpeg resample to
:data:`SCAN_RATE` while it decodes (no SciPy pass, a fraction of the samples) and picks the window with
:func:`~musrec.audio.decode.choose_window` on that; then only the window is decoded exactly, with a seek.

The window's energy below SCAN_RATE / 2 ranks the windows as the full decode's energy (below 8 kHz) does for
sound whose spectrum does not change much between its loud and quiet parts, which is nearly all music; the tests
compare both choices on real recordings of several codecs.
"""

from __future__ import annotations

import logging
import time

from musrec.audio.decode import SEARCH_S, WINDOW_S, Audio, AudioLimits, Source, choose_window, decode

log = logging.getLogger(__name__)

# 8 kHz keeps the fundamentals and most of the energy of speech and music (content up to 4 kHz) at half the
# samples of 16 kHz; ffmpeg's decoding, not the resampling, is most of the scan's cost.
SCAN_RATE = 8000


def decode_loudest(
    source: Source,
    *,
    duration_s: float = WINDOW_S,
    search_s: float = SEARCH_S,
    limits: AudioLimits = AudioLimits(),  # noqa: B008 - frozen, so one shared default is safe
) -> Audio:
    """The loudest ``duration_s`` of the first ``search_s`` seconds, decoded exactly as :func:`decode` does.

    The window is the one :func:`choose_window` picks on the full decode, or within a second of it where two
    windows are nearly as loud. ``offset_s`` of the result is where the window starts in the source. Errors are
    those of :func:`decode`, raised by the scan: a corrupt, silent, too short or too large input costs one pass.
    """
    started = time.monotonic()
    scan = decode(source, duration_s=search_s, sample_rate=SCAN_RATE, limits=limits)
    window = choose_window(scan.samples, sample_rate=SCAN_RATE, duration_s=duration_s, search_s=search_s)
    scanned = time.monotonic()
    # A clip no longer than the window is used whole: its end is where the scan found it.
    audio = decode(source, start_s=window.start_s or None, duration_s=duration_s, limits=limits)
    log.debug(
        "scanned %.1f s in %.2f s, decoded %.1f s from %.1f s in %.2f s",
        scan.duration_s,
        scanned - started,
        audio.duration_s,
        window.start_s,
        time.monotonic() - scanned,
    )
    return audio
