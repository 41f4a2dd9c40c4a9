"""What a search returns: the query as shown (:class:`Query`), its matches (:class:`Match`), the whole answer
(:class:`Recommendation`), the filters it applied (:class:`Filters`), and a query ready to search (:class:`Resolved`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from musrec.links.parse import youtube_url
from musrec.videos.status import VideoStatus

if TYPE_CHECKING:
    from musrec.audioset.labels import Labels
    from musrec.index.search import Index


@dataclass(frozen=True)
class Match:
    video_id: str
    start_s: float
    end_s: float
    labels: tuple[str, ...]
    score: float
    item: int
    similarities: tuple[float, ...] = ()  # a blend's: how close the match is to each of its sounds
    video: VideoStatus | None = None  # what is known of the video (musrec.recommend.live); None: not asked

    @property
    def url(self) -> str:
        return youtube_url(self.video_id, self.start_s)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "video_id": self.video_id,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "labels": list(self.labels),
            "score": round(self.score, 6),
            "url": self.url,
        }
        if self.similarities:
            out["similarities"] = [round(s, 6) for s in self.similarities]
        if self.video is not None:
            out.update(title=self.video.title, channel=self.video.channel, available=self.video.available)
        return out


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
    applied: tuple[str, ...] = ()  # what shaped the results beyond the sound: "only Rock music", "blend of 2 sounds"
    inputs: tuple[Query, ...] = ()  # a blend's sounds, in order
    ranked_by: str = ""  # what the score is, when it is not the cosine similarity to the query (a blend's)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"query": self.query.to_json(), "matches": [m.to_json() for m in self.matches]}
        if self.applied:
            out["applied"] = list(self.applied)
        if self.ranked_by:
            out["ranked_by"] = self.ranked_by
        if self.inputs:
            out["inputs"] = [q.to_json() for q in self.inputs]
        return out


@dataclass(frozen=True)
class Filters:
    """What results must be, beyond sounding alike: music only, one of ``labels`` or a kind of one ("Rock music"
    takes "Heavy metal" too), none of ``not_labels`` (nor their kinds), and the best segment of each video only."""

    music_only: bool = False
    labels: tuple[str, ...] = ()
    not_labels: tuple[str, ...] = ()
    one_per_video: bool = True

    def describe(self) -> tuple[str, ...]:
        """Lines for people on what was applied (the best-per-video rule is the default and goes unsaid)."""
        said = []
        if self.labels:
            kinds = "a kind of it" if len(self.labels) == 1 else "a kind of one"
            said.append(f"only {' or '.join(self.labels)} (or {kinds})")
        if self.not_labels:
            kinds = "a kind of it" if len(self.not_labels) == 1 else "a kind of one"
            said.append(f"no {' or '.join(self.not_labels)} (nor {kinds})")
        if self.music_only:
            said.append("music only")
        return tuple(said)

    def allowed(self, index: Index, labels: Labels) -> npt.NDArray[np.bool_] | None:
        """Which items may be returned (None: all of them)."""
        mask = index.label_mask(labels.expand(self.labels), labels.expand(self.not_labels))
        if self.music_only:
            mask = index.music_mask if mask is None else mask & index.music_mask
        return mask


@dataclass(frozen=True, eq=False)
class Resolved:
    """A query ready to search: its embedding rows ([n, 128] uint8) and what it is. ``item`` is set when the query
    is an indexed segment, which its own results leave out."""

    rows: npt.NDArray[np.uint8]
    query: Query
    item: int | None = None
