"""The filtered search: the ``k`` nearest indexed segments to a query vector that pass the filters, best first.

Results exclude the query segment itself and the videos known to be gone (``gone``); ``one_per_video`` keeps only
the best segment of each video, and ``music_only`` keeps segments with a label in the ontology's Music subtree. The
filters apply inside the search: the index is asked for more candidates, widening until ``k`` results survive, or the
passing items are scored exactly where that is cheaper.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Container

import numpy as np
import numpy.typing as npt

from musrec.audioset.labels import Labels, default_labels
from musrec.audioset.representation import fit_rows, represent, scores_of
from musrec.errors import QueryError
from musrec.index.backends import top_n
from musrec.index.search import Index
from musrec.index.store import SegmentInfo
from musrec.recommend.results import Filters, Match, Recommendation, Resolved

OVERFETCH = 4
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


def recommend_resolved(
    resolved: Resolved,
    *,
    index: Index,
    k: int = 10,
    filters: Filters = Filters(),  # noqa: B008 - frozen, so one shared default is safe
    exclude: Collection[int] = (),
    labels: Labels | None = None,
    gone: Container[str] = frozenset(),
) -> Recommendation:
    """Neighbours of a query (its rows fitted to 10, as the index's), its own segment, ``exclude`` and the videos in
    ``gone`` left out."""
    own = (resolved.item,) if resolved.item is not None else ()
    matches = nearest(
        index.vectorize(fit_rows(resolved.rows)),
        index=index,
        k=k,
        filters=filters,
        exclude=(*own, *exclude),
        labels=labels,
        gone=gone,
    )
    return Recommendation(query=resolved.query, matches=tuple(matches), applied=filters.describe())


def nearest(
    vector: npt.NDArray[np.float32],
    *,
    index: Index,
    k: int,
    filters: Filters = Filters(),  # noqa: B008 - frozen, so one shared default is safe
    exclude: Collection[int] = (),
    labels: Labels | None = None,
    gone: Container[str] = frozenset(),
) -> list[Match]:
    """The ``k`` best matches that pass the filters, best first, none of a video in ``gone``.

    The filters apply inside the search: the index is asked for more candidates, in proportion to how few items
    pass, and again for twice as many until ``k`` survive. When few items pass (a rare label: scoring them is
    cheaper than the candidates needed), or the candidates asked for would pass :data:`_MAX_CANDIDATES`, the items
    that pass are scored exactly instead: exact results at a bounded cost, never fewer results than there are.
    The videos in ``gone`` (known before the search) are passed over as the candidates are read: they cost no more
    candidates unless the ones asked for run out.
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
    wanted = (k + len(exclude)) * (OVERFETCH if filters.one_per_video else 1)
    n = min(total, int(wanted * total / passing))
    select = functools.partial(_select, index=index, k=k, filters=filters, exclude=frozenset(exclude), gone=gone)
    exact_is_cheaper = passing * passing <= _RESCORED * wanted * total
    if allowed is not None and not exact_is_cheaper:
        # IVF filters while it scans its lists; items a filter lets through lie farther out than the nearest do
        # (labels go with how things sound), so it scans more lists: _FILTER_WIDEN times the share filtered out,
        # and twice as many again until k pass or every list was scanned.
        widen = _FILTER_WIDEN * total / passing
        while (found := index.search_among(vector, wanted, allowed, widen=widen)) is not None:
            ids, scores, everywhere = found
            picked = select(ids, scores, allowed=allowed)
            if len(picked) >= k or everywhere:
                return _matches(picked, labels)
            widen *= 2
    while allowed is None or (not exact_is_cheaper and n <= _MAX_CANDIDATES):
        # Annoy cannot filter while it searches: it is asked for proportionally more candidates, and looks n / k
        # times further than its tuned search (its search_k scales with n).
        ids, scores = index.search(vector, n, widen=1.0 if allowed is None else n / k)
        picked = select(ids, scores, allowed=allowed)
        if len(picked) >= k or n >= total:
            return _matches(picked, labels)
        n = min(total, n * 2)
    items, m = np.flatnonzero(allowed), min(passing, wanted)
    while True:
        ids, scores = _exact_among(items, vector, index=index, n=m)
        picked = select(ids, scores, allowed=None)
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
        scores = scores_of(represent(np.asarray(index.embeddings[chunk]), index.representation), vector)
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
    gone: Container[str],
) -> list[tuple[SegmentInfo, float]]:
    picked: list[tuple[SegmentInfo, float]] = []
    videos: set[str] = set()
    for item, score in zip(ids.tolist(), scores.tolist(), strict=True):
        if item in exclude or (allowed is not None and not allowed[item]):
            continue
        info = index.store.get(item)
        if info.video_id in gone:
            continue
        if filters.one_per_video:
            if info.video_id in videos:
                continue
            videos.add(info.video_id)
        picked.append((info, score))
        if len(picked) == k:
            break
    return picked
