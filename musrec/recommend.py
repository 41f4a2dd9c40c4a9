"""Recommendations: the nearest AudioSet segments to a query, as typed results.

A query is an indexed segment (``audioset:VIDEO_ID`` or ``audioset:VIDEO_ID@START``) or embedding rows computed
from new audio. Results exclude the query segment itself; ``one_per_video`` keeps only the best segment of each
video, and ``music_only`` keeps segments with a label in the ontology's Music subtree. Both filters over-fetch from
the index and widen until ``k`` results survive or the index is exhausted.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from musrec.audioset.labels import Labels, default_labels
from musrec.audioset.representation import fit_rows, represent
from musrec.errors import QueryError, UnknownSegmentError
from musrec.index.backends import top_n
from musrec.index.loaded import Index
from musrec.index.store import SegmentInfo
from musrec.links.parse import youtube_url
from musrec.timecode import format_timecode, parse_timecode
from musrec.videos.status import VideoStatus

AUDIOSET_PREFIX = "audioset:"
# YouTube ids are 11 characters of [A-Za-z0-9_-]; accept any such token so older ids still resolve.
_AUDIOSET_REF = re.compile(r"^audioset:(?P<id>[A-Za-z0-9_-]{1,64})(?:@(?P<start>[^@\s]+))?$")
_STARTS_SHOWN = 10  # a video's indexed starts named when the one asked for is not among them
_OVERFETCH = 4
# A filter is answered by scoring the items it lets through exactly when that costs less than asking the index for
# enough candidates: n candidates cost about _RESCORED * n rows scored (IVF re-scores 5x what it returns), the exact
# way one row per passing item, so exact wins below sqrt(_RESCORED * wanted * total) passing items. Never more than
# _MAX_CANDIDATES candidates are asked for.
_RESCORED = 5
# Measured on a 1M-segment IVF index (bench/filter_bench.py): scanning the lists for passing items only, 1, 2, 4
# and 8 times the share filtered out gave recall@10 of 0.48-0.73, 0.64-0.88, 0.87-0.99 and 0.97-1.0, at 2-6 ms.
_FILTER_WIDEN = 8
_MAX_CANDIDATES = 50_000
_SUBSET_CHUNK = 8_192


@dataclass(frozen=True)
class Match:
    video_id: str
    start_s: float
    end_s: float
    labels: tuple[str, ...]
    score: float
    item: int
    similarities: tuple[float, ...] = ()  # a blend's: how close the match is to each of its sounds
    video: VideoStatus | None = None  # what is known of the video (musrec.videos.live); None: not asked

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
    filters: Filters = Filters(),  # noqa: B008 - frozen, so one shared default is safe
    exclude: Collection[int] = (),
    labels: Labels | None = None,
) -> Recommendation:
    """Neighbours of a query (its rows fitted to 10, as the index's), its own segment and ``exclude`` left out."""
    own = (resolved.item,) if resolved.item is not None else ()
    matches = nearest(
        index.vectorize(fit_rows(resolved.rows)),
        index=index,
        k=k,
        filters=filters,
        exclude=(*own, *exclude),
        labels=labels,
    )
    return Recommendation(query=resolved.query, matches=tuple(matches), applied=filters.describe())


BLEND_METHODS = ("mean", "rrf")
_RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al. 2009): 1 / (60 + rank)
_BLEND_POOL = 4  # candidates per result, re-ranked by their similarity to the sound they are farthest from
BLEND_RANKING = "closeness to the farthest sound: score is the lowest of a match's similarities to the sounds"


def blend(
    sounds: Sequence[Resolved],
    *,
    index: Index,
    k: int = 10,
    filters: Filters = Filters(),  # noqa: B008 - frozen, so one shared default is safe
    labels: Labels | None = None,
    method: str = "mean",
    exclude: Collection[int] = (),
) -> Recommendation:
    """The segments that sound like all of ``sounds`` at once, each with its similarity to every one of them;
    the sounds' own segments and ``exclude`` (indexed items already shown) left out.

    ``mean`` searches once with the normalised mean of the sounds' unit vectors (the direction closest to all of
    them); ``rrf`` searches for each sound and fuses the rankings (reciprocal rank fusion). Either way the
    candidates are re-ranked by their similarity to the sound they are farthest from, which is their score
    (:data:`BLEND_RANKING`). ``bench/blend_bench.py`` compares them on that measure: ``mean`` came out ahead for
    pairs and triples (0.085 against 0.049 for pairs, at a tenth of the time) and is the default.
    """
    if not 2 <= len(sounds) <= 3:
        raise QueryError("a blend takes two or three sounds")
    if method not in BLEND_METHODS:
        raise ValueError(f"unknown blend method {method!r}")
    labels = labels or default_labels()
    vectors = [index.vectorize(fit_rows(sound.rows)) for sound in sounds]
    left_out = (*(sound.item for sound in sounds if sound.item is not None), *exclude)
    if method == "mean":
        mean = np.mean(vectors, axis=0)
        matches = nearest((mean / np.linalg.norm(mean)).astype(np.float32), index=index, k=k * _BLEND_POOL,
                          filters=filters, exclude=left_out, labels=labels)  # fmt: skip
    else:
        matches = _rank_fusion(vectors, index=index, k=k * _BLEND_POOL, filters=filters, exclude=left_out,
                               labels=labels)  # fmt: skip
    # Of the candidates nearest the blend, those closest to the sound they are farthest from: like all of them. That
    # closeness is each match's score, so the score is what they are ranked by.
    with_each = []
    for m in matches:
        each = tuple(float(index.item_vector(m.item) @ v) for v in vectors)
        with_each.append(replace(m, score=min(each), similarities=each))
    with_each.sort(key=lambda m: (-m.score, m.item))
    query = Query(kind="blend", source=" + ".join(sound.query.source for sound in sounds))
    applied = (f"blend of {len(sounds)} sounds", *filters.describe())
    inputs = tuple(s.query for s in sounds)
    return Recommendation(query, tuple(with_each[:k]), applied, inputs, ranked_by=BLEND_RANKING)


def _rank_fusion(
    vectors: Sequence[npt.NDArray[np.float32]],
    *,
    index: Index,
    k: int,
    filters: Filters,
    exclude: Collection[int],
    labels: Labels,
) -> list[Match]:
    depth = k * _OVERFETCH * 4  # each sound's ranking, deep enough for the others' best to appear in it
    fused: dict[int, float] = {}
    found: dict[int, Match] = {}
    for vector in vectors:
        for rank, match in enumerate(nearest(vector, index=index, k=depth, filters=filters, exclude=exclude,
                                             labels=labels)):  # fmt: skip
            fused[match.item] = fused.get(match.item, 0.0) + 1.0 / (_RRF_K + rank + 1)
            found[match.item] = match
    best = sorted(fused, key=lambda item: -fused[item])[:k]
    return [replace(found[item], score=fused[item]) for item in best]


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


def nearest(
    vector: npt.NDArray[np.float32],
    *,
    index: Index,
    k: int,
    filters: Filters = Filters(),  # noqa: B008 - frozen, so one shared default is safe
    exclude: Collection[int] = (),
    labels: Labels | None = None,
) -> list[Match]:
    """The ``k`` best matches that pass the filters, best first.

    The filters apply inside the search: the index is asked for more candidates, in proportion to how few items
    pass, and again for twice as many until ``k`` survive. When few items pass (a rare label: scoring them is
    cheaper than the candidates needed), or the candidates asked for would pass :data:`_MAX_CANDIDATES`, the items
    that pass are scored exactly instead: exact results at a bounded cost, never fewer results than there are.
    """
    if k < 1:
        raise QueryError("the number of results must be at least 1")
    labels = labels or default_labels()
    allowed = filters.allowed(index, labels)
    total = len(index)
    passing = total if allowed is None else int(allowed.sum())
    if passing == 0:
        raise QueryError(_nothing_passes(filters))
    # Expect to discard: excluded items, items the filters drop (in proportion), repeats of one video.
    wanted = (k + len(exclude)) * (_OVERFETCH if filters.one_per_video else 1)
    n = min(total, int(wanted * total / passing))
    exclude = frozenset(exclude)
    exact_is_cheaper = passing * passing <= _RESCORED * wanted * total
    if allowed is not None and not exact_is_cheaper:
        # IVF filters while it scans its lists; items a filter lets through lie farther out than the nearest do
        # (labels go with how things sound), so it scans more lists: _FILTER_WIDEN times the share filtered out,
        # and twice as many again until k pass or every list was scanned.
        widen = _FILTER_WIDEN * total / passing
        while (found := index.search_among(vector, wanted, allowed, widen=widen)) is not None:
            ids, scores, everywhere = found
            picked = _select(ids, scores, index=index, k=k, allowed=allowed, filters=filters, exclude=exclude)
            if len(picked) >= k or everywhere:
                return _matches(picked, labels)
            widen *= 2
    while allowed is None or (not exact_is_cheaper and n <= _MAX_CANDIDATES):
        # Annoy cannot filter while it searches: it is asked for proportionally more candidates, and looks n / k
        # times further than its tuned search (its search_k scales with n).
        ids, scores = index.search(vector, n, widen=1.0 if allowed is None else n / k)
        picked = _select(ids, scores, index=index, k=k, allowed=allowed, filters=filters, exclude=exclude)
        if len(picked) >= k or n >= total:
            return _matches(picked, labels)
        n = min(total, n * 2)
    items, m = np.flatnonzero(allowed), min(passing, wanted)
    while True:
        ids, scores = _exact_among(items, vector, index=index, n=m)
        picked = _select(ids, scores, index=index, k=k, allowed=None, filters=filters, exclude=exclude)
        if len(picked) >= k or m >= passing:
            return _matches(picked, labels)
        m = min(passing, m * 2)


def _exact_among(
    items: npt.NDArray[np.int64], vector: npt.NDArray[np.float32], *, index: Index, n: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The ``n`` best of ``items`` by exact cosine, best first, scored a chunk at a time (memory stays bounded)."""
    best_ids, best_scores = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    for lo in range(0, len(items), _SUBSET_CHUNK):
        chunk = items[lo : lo + _SUBSET_CHUNK]
        scores = represent(np.asarray(index.embeddings[chunk]), index.representation) @ vector
        ids = np.concatenate([best_ids, chunk])
        all_scores = np.concatenate([best_scores, scores.astype(np.float32)])
        top, _ = top_n(all_scores, n)
        best_ids, best_scores = ids[top], all_scores[top]
    return best_ids, best_scores


def _nothing_passes(filters: Filters) -> str:
    if filters.labels or filters.not_labels:
        return "no indexed segment has those labels: try another label, or fewer filters"
    return "the index holds no music segments"


def _matches(picked: list[tuple[SegmentInfo, float]], labels: Labels) -> list[Match]:
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
    allowed: npt.NDArray[np.bool_] | None,
    filters: Filters,
    exclude: frozenset[int],
) -> list[tuple[SegmentInfo, float]]:
    picked: list[tuple[SegmentInfo, float]] = []
    videos: set[str] = set()
    for item, score in zip(ids.tolist(), scores.tolist(), strict=True):
        if item in exclude or (allowed is not None and not allowed[item]):
            continue
        info = index.store.get(item)
        if filters.one_per_video:
            if info.video_id in videos:
                continue
            videos.add(info.video_id)
        picked.append((info, score))
        if len(picked) == k:
            break
    return picked
