"""Indexed segments as queries: ``audioset:VIDEO_ID`` and ``audioset:VIDEO_ID@START`` references.

YouTube ids are 11 characters of [A-Za-z0-9_-]; any such token is accepted so older ids still resolve. START takes the
forms ``--start`` takes.
"""

from __future__ import annotations

import re

import numpy as np

from musrec.audioset.labels import Labels, default_labels
from musrec.errors import QueryError, UnknownSegmentError
from musrec.index.search import Index
from musrec.index.store import SegmentInfo
from musrec.recommend.nearest import recommend_resolved
from musrec.recommend.results import Filters, Query, Recommendation, Resolved
from musrec.timecode import format_timecode, parse_timecode

AUDIOSET_PREFIX = "audioset:"
# YouTube ids are 11 characters of [A-Za-z0-9_-]; accept any such token so older ids still resolve.
_AUDIOSET_REF = re.compile(r"^audioset:(?P<id>[A-Za-z0-9_-]{1,64})(?:@(?P<start>[^@\s]+))?$")
_STARTS_SHOWN = 10  # a video's indexed starts named when the one asked for is not among them


def parse_audioset_ref(text: str) -> tuple[str, float | None]:
    """``audioset:VIDEO_ID`` or ``audioset:VIDEO_ID@START`` -> (video id, start seconds or None). START takes the
    forms ``--start`` takes (:func:`~musrec.timecode.parse_timecode`: ``590``, ``9:50``, ``9m50s``).
    QueryError for anything else."""
    m = _AUDIOSET_REF.match(text.strip())
    start = m.group("start") if m else None
    try:
        start_s = parse_timecode(start) if start is not None else None
    except ValueError:
        m = None
    if not m:
        raise QueryError(
            f"not an AudioSet segment reference: {text!r} (expected audioset:VIDEO_ID[@START], START as 590, "
            "9:50 or 9m50s)"
        )
    return m.group("id"), start_s


def find_segment(index: Index, video_id: str, start_s: float | None) -> SegmentInfo:
    """The segment of a video at ``start_s`` (within half a second), or its first; UnknownSegmentError if none,
    naming the starts the video has in the index when it has some."""
    found = index.store.find(video_id, start_s)
    if found:
        return found[0]
    starts = [seg.start_s for seg in index.store.find(video_id)]
    if not starts:
        raise UnknownSegmentError(f"no indexed segment of video {video_id}")
    shown = ", ".join(f"{s:g} ({format_timecode(s)})" for s in starts[:_STARTS_SHOWN])
    more = f" and {len(starts) - _STARTS_SHOWN} more" if len(starts) > _STARTS_SHOWN else ""
    raise UnknownSegmentError(
        f"no indexed segment of video {video_id} at {start_s:g} s; its indexed starts: {shown}{more} "
        f"(try audioset:{video_id}@{starts[0]:g})"
    )


def resolve_segment(ref: str, *, index: Index, labels: Labels | None = None) -> Resolved:
    """An indexed segment as a query: ``audioset:VIDEO_ID`` (its first segment) or ``audioset:VIDEO_ID@START``."""
    labels = labels or default_labels()
    video_id, start = parse_audioset_ref(ref)
    seg = find_segment(index, video_id, start)
    query = Query(
        kind="audioset",
        source=ref,
        video_id=seg.video_id,
        start_s=seg.start_s,
        end_s=seg.end_s,
        labels=tuple(labels.name(i) for i in seg.labels),
    )
    return Resolved(rows=np.asarray(index.embeddings[seg.item]), query=query, item=seg.item)


def recommend_segment(
    ref: str,
    *,
    index: Index,
    k: int = 10,
    filters: Filters = Filters(),  # noqa: B008 - frozen, so one shared default is safe
    labels: Labels | None = None,
) -> Recommendation:
    """Neighbours of an indexed segment, the segment itself excluded."""
    resolved = resolve_segment(ref, index=index, labels=labels)
    return recommend_resolved(resolved, index=index, k=k, filters=filters, labels=labels)
