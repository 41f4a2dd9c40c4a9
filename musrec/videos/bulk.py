"""Checking every video of an index ahead of time (``musrec videos check``), politely and resumably.

Videos whose state the store holds (not expired) are skipped, so a check stopped half way goes on where it
stopped. Requests are paced at ``rate_per_s`` (one video per oEmbed request, 50 per Data API call); when YouTube
stops answering (429, 5xx, timeouts: unknown) the pace halves, down to one request a minute, and after
:data:`GIVE_UP_AFTER` requests in a row without an answer the check stops, to be run again later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from musrec.index.store import SegmentStore
from musrec.videos.checker import VideoChecker
from musrec.videos.status import UNKNOWN

log = logging.getLogger(__name__)

PAGE = 1_000  # video ids read from the index at a time
SLOWEST_S = 60.0  # the longest pause between two requests when YouTube does not answer
GIVE_UP_AFTER = 20  # requests in a row that learnt nothing


@dataclass(frozen=True)
class BulkReport:
    """What a run did: ``videos`` in the index, ``known`` before it, ``checked`` by it (``gone`` and ``unknown``
    of those), and whether it ``stopped`` because YouTube did not answer."""

    videos: int
    known: int
    checked: int
    gone: int
    unknown: int
    stopped: bool = False


def to_check(segments: SegmentStore, checker: VideoChecker) -> tuple[int, int]:
    """How many videos the index has, and how many of them have a state in the store."""
    known, after = 0, ""
    while page := segments.video_ids(after=after, limit=PAGE):
        known += len(checker.store.get_many(page))
        after = page[-1]
    return segments.video_count(), known


def check_index(
    segments: SegmentStore,
    checker: VideoChecker,
    *,
    rate_per_s: float,
    limit: int | None = None,
    counted: tuple[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> BulkReport:
    """Check the index's videos not yet known, at most ``limit`` of them, ``progress(n)`` after each request;
    ``counted`` is what :func:`to_check` said, when the caller asked it already."""
    videos, known = counted or to_check(segments, checker)
    pace = 1.0 / rate_per_s
    wait_s, next_at = pace, clock()
    checked = gone = unknown = silent = 0
    after = ""
    while (limit is None or checked < limit) and (page := segments.video_ids(after=after, limit=PAGE)):
        after = page[-1]
        have = checker.store.get_many(page)
        todo = [video_id for video_id in page if video_id not in have]
        if limit is not None:
            todo = todo[: limit - checked]
        for lo in range(0, len(todo), checker.source.batch):
            sleep(max(0.0, next_at - clock()))
            statuses = checker.check_now(todo[lo : lo + checker.source.batch])
            learnt = sum(s.state != UNKNOWN for s in statuses)
            checked += len(statuses)
            gone += sum(s.gone for s in statuses)
            unknown += len(statuses) - learnt
            silent = 0 if learnt else silent + 1
            wait_s = pace if learnt else min(SLOWEST_S, wait_s * 2)
            next_at = clock() + wait_s
            if progress is not None:
                progress(len(statuses))
            if silent >= GIVE_UP_AFTER:
                log.warning("YouTube answered none of the last %d requests: stopping; run again later", silent)
                return BulkReport(videos, known, checked, gone, unknown, stopped=True)
    return BulkReport(videos, known, checked, gone, unknown)
