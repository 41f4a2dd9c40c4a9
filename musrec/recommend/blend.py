"""Blends: the segments that sound like two or three sounds at once, each with its similarity to every one."""

from __future__ import annotations

from collections.abc import Collection, Container, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from musrec.audioset.labels import Labels, default_labels
from musrec.audioset.representation import fit_rows
from musrec.errors import QueryError
from musrec.index.search import Index
from musrec.recommend.nearest import OVERFETCH, nearest
from musrec.recommend.results import Filters, Match, Query, Recommendation, Resolved

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
    gone: Container[str] = frozenset(),
) -> Recommendation:
    """The segments that sound like all of ``sounds`` at once, each with its similarity to every one of them;
    the sounds' own segments, ``exclude`` (indexed items already shown) and the videos in ``gone`` left out.

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
                          filters=filters, exclude=left_out, labels=labels, gone=gone)  # fmt: skip
    else:
        matches = _rank_fusion(vectors, index=index, k=k * _BLEND_POOL, filters=filters, exclude=left_out,
                               labels=labels, gone=gone)  # fmt: skip
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
    gone: Container[str],
) -> list[Match]:
    depth = k * OVERFETCH * 4  # each sound's ranking, deep enough for the others' best to appear in it
    fused: dict[int, float] = {}
    found: dict[int, Match] = {}
    for vector in vectors:
        for rank, match in enumerate(nearest(vector, index=index, k=depth, filters=filters, exclude=exclude,
                                             labels=labels, gone=gone)):  # fmt: skip
            fused[match.item] = fused.get(match.item, 0.0) + 1.0 / (_RRF_K + rank + 1)
            found[match.item] = match
    best = sorted(fused, key=lambda item: -fused[item])[:k]
    return [replace(found[item], score=fused[item]) for item in best]
