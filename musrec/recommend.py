"""Recommendations: the nearest AudioSet segments to a query, as typed results.

A query is an indexed segment (``audioset:VIDEO_ID`` or ``audioset:VIDEO_ID@START``) or embedding rows computed
from new audio. Results exclude the query segment itself; ``one_per_video`` keeps only the best segment of each
video, and ``music_only`` keeps segments with a label in the ontology's Music subtree. Both filters over-fetch from
the index and widen until ``k`` results survive or the index is exhausted.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from musrec.audioset.labels import Labels, default_labels
from musrec.audioset.representation import fit_rows
from musrec.errors import QueryError, UnknownSegmentError
from musrec.index.loaded import Index
from musrec.index.store import SegmentInfo
from musrec.links.parse import youtube_url

AUDIOSET_PREFIX = "audioset:"
# YouTube ids are 11 characters of [A-Za-z0-9_-]; accept any such token so older ids still resolve.
_AUDIOSET_REF = re.compile(r"^audioset:(?P<id>[A-Za-z0-9_-]{1,64})(?:@(?P<start>\d+(?:\.\d+)?)s?)?$")
_OVERFETCH = 4


@dataclass(frozen=True)
class Match:
    video_id: str
    start_s: float
    end_s: float
    labels: tuple[str, ...]
    score: float
    item: int

    @property
    def url(self) -> str:
        return youtube_url(self.video_id, self.start_s)

    def to_json(self) -> dict[str, object]:
        return {
            "video_id": self.video_id,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "labels": list(self.labels),
            "score": round(self.score, 6),
            "url": self.url,
        }


@dataclass(frozen=True)
class Query:
    """What was searched for: ``kind`` is "audioset", "file" or "url"."""

    kind: str
    source: str
    video_id: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    labels: tuple[str, ...] = ()
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str | None:
        """The YouTube link of an AudioSet segment or a YouTube video at the window's start."""
        if self.video_id is None or self.start_s is None:
            return None
        return youtube_url(self.video_id, self.start_s)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind, "source": self.source}
        for key in ("video_id", "start_s", "end_s"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.url is not None:
            out["url"] = self.url
        if self.labels:
            out["labels"] = list(self.labels)
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class Recommendation:
    query: Query
    matches: tuple[Match, ...]

    def to_json(self) -> dict[str, object]:
        return {"query": self.query.to_json(), "matches": [m.to_json() for m in self.matches]}


def parse_audioset_ref(text: str) -> tuple[str, float | None]:
    """``audioset:VIDEO_ID`` or ``audioset:VIDEO_ID@START`` -> (video id, start seconds or None)."""
    m = _AUDIOSET_REF.match(text.strip())
    if not m:
        raise QueryError(f"not an AudioSet segment reference: {text!r} (expected audioset:VIDEO_ID[@START])")
    start = m.group("start")
    return m.group("id"), float(start) if start is not None else None


def find_segment(index: Index, video_id: str, start_s: float | None) -> SegmentInfo:
    found = index.store.find(video_id, start_s)
    if not found:
        where = f" at {start_s:g} s" if start_s is not None else ""
        raise UnknownSegmentError(f"no indexed segment of video {video_id}{where}")
    return found[0]


@dataclass(frozen=True, eq=False)
class Resolved:
    """A query ready to search: its embedding rows ([n, 128] uint8) and what it is. ``item`` is set when the query
    is an indexed segment, which its own results leave out."""

    rows: npt.NDArray[np.uint8]
    query: Query
    item: int | None = None


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


def recommend_resolved(
    resolved: Resolved,
    *,
    index: Index,
    k: int = 10,
    music_only: bool = False,
    one_per_video: bool = True,
    labels: Labels | None = None,
) -> Recommendation:
    """Neighbours of a query (its rows fitted to 10, as the index's), the query's own segment left out."""
    matches = nearest(
        index.vectorize(fit_rows(resolved.rows)),
        index=index,
        k=k,
        music_only=music_only,
        one_per_video=one_per_video,
        exclude=(resolved.item,) if resolved.item is not None else (),
        labels=labels,
    )
    return Recommendation(query=resolved.query, matches=tuple(matches))


def recommend_segment(
    ref: str,
    *,
    index: Index,
    k: int = 10,
    music_only: bool = False,
    one_per_video: bool = True,
    labels: Labels | None = None,
) -> Recommendation:
    """Neighbours of an indexed segment, the segment itself excluded."""
    resolved = resolve_segment(ref, index=index, labels=labels)
    return recommend_resolved(
        resolved, index=index, k=k, music_only=music_only, one_per_video=one_per_video, labels=labels
    )


def nearest(
    vector: npt.NDArray[np.float32],
    *,
    index: Index,
    k: int,
    music_only: bool = False,
    one_per_video: bool = True,
    exclude: Collection[int] = (),
    labels: Labels | None = None,
) -> list[Match]:
    """The ``k`` best matches that pass the filters, best first."""
    if k < 1:
        raise QueryError("the number of results must be at least 1")
    labels = labels or default_labels()
    total = len(index)
    allowed = int(index.music_mask.sum()) if music_only else total
    if allowed == 0:
        raise QueryError("the index holds no music segments")
    # Expect to discard: excluded items, non-music items (in proportion), repeats of one video.
    n = (k + len(exclude)) * (_OVERFETCH if one_per_video else 1)
    n = int(n * total / allowed) if music_only else n
    while True:
        n = min(n, total)
        ids, scores = index.search(vector, n)
        picked = _select(
            ids, scores, index=index, k=k, music_only=music_only, one_per_video=one_per_video, exclude=exclude
        )
        if len(picked) >= k or n >= total:
            break
        n *= 2
    return [
        Match(
            video_id=info.video_id,
            start_s=info.start_s,
            end_s=info.end_s,
            labels=tuple(labels.name(i) for i in info.labels),
            score=float(score),
            item=info.item,
        )
        for info, score in picked
    ]


def _select(
    ids: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float32],
    *,
    index: Index,
    k: int,
    music_only: bool,
    one_per_video: bool,
    exclude: Collection[int],
) -> list[tuple[SegmentInfo, float]]:
    picked: list[tuple[SegmentInfo, float]] = []
    videos: set[str] = set()
    for item, score in zip(ids.tolist(), scores.tolist(), strict=True):
        if item in exclude or (music_only and not index.music_mask[item]):
            continue
        info = index.store.get(item)
        if one_per_video:
            if info.video_id in videos:
                continue
            videos.add(info.video_id)
        picked.append((info, score))
        if len(picked) == k:
            break
    return picked
