"""Searches whose results carry buttons: each is remembered (bot/queries.py) so its buttons can search again.

These functions block (the index, SQLite): they run in the work queue's threads, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from bot.errors import InputError
from bot.queries import QueryStore, Remembered
from musrec.errors import UnknownSegmentError
from musrec.pipeline import Filters, Musrec, Recommendation, Resolved
from musrec.recommend.segments import AUDIOSET_PREFIX

GONE_SEARCH = "I no longer have that search: it is too old, or my index was rebuilt since. Ask again with /recommend"
GONE_SEGMENT = "That segment is no longer in my index (it was rebuilt since). Try another one, or /recommend again"


@dataclass(frozen=True)
class Page:
    """A result and the key its buttons carry (None: it could not be remembered, so it has no buttons);
    ``first_rank`` is the rank of its first match."""

    result: Recommendation
    key: str | None
    first_rank: int = 1


def index_identity(musrec: Musrec) -> str:
    """Which index item ids refer to: another build (even of the same data) numbers its items anew."""
    manifest = musrec.index.manifest
    return f"{manifest.built_at}|{manifest.count}"


def search(
    musrec: Musrec,
    store: QueryStore,
    resolved: Resolved,
    *,
    k: int,
    filters: Filters,
    exclude: Sequence[int] = (),
    ranked: int = 0,
) -> Page:
    """Search ``resolved`` leaving out ``exclude``, and remember it for its buttons."""
    result = musrec.search(resolved, k=k, filters=filters, exclude=exclude)
    remembered = Remembered(query=resolved.query, rows=resolved.rows, item=resolved.item, filters=filters, k=k,
                            shown=tuple(exclude), ranked=ranked)  # fmt: skip
    return _page(musrec, store, result, remembered)


def blended(
    musrec: Musrec,
    store: QueryStore,
    sounds: Sequence[Resolved],
    *,
    k: int,
    filters: Filters,
    exclude: Sequence[int] = (),
    ranked: int = 0,
) -> Page:
    """Blend ``sounds`` leaving out ``exclude``, and remember it for its buttons ("More" blends them again)."""
    result = musrec.search_blend(sounds, k=k, filters=filters, exclude=exclude)
    remembered = Remembered(query=result.query, rows=None, item=None, filters=filters, k=k, shown=tuple(exclude),
                            ranked=ranked, sounds=tuple(sounds))  # fmt: skip
    return _page(musrec, store, result, remembered)


def _page(musrec: Musrec, store: QueryStore, result: Recommendation, before: Remembered) -> Page:
    """``result`` as a page, remembered as ``before`` (the search as it stood) with its matches now shown too."""
    entry = replace(before, shown=(*before.shown, *(m.item for m in result.matches)),
                    ranked=before.ranked + len(result.matches))  # fmt: skip
    return Page(result, store.save(entry, index=index_identity(musrec)), first_rank=before.ranked + 1)


def more(musrec: Musrec, store: QueryStore, key: str) -> Page:
    """The next results of the search remembered under ``key``, without embedding anything again."""
    entry = store.get(key, index=index_identity(musrec))
    if entry is None or not entry.searchable:
        raise InputError(GONE_SEARCH)
    if entry.sounds:
        return blended(musrec, store, entry.sounds, k=entry.k, filters=entry.filters, exclude=entry.shown,
                       ranked=entry.ranked)  # fmt: skip
    assert entry.rows is not None
    resolved = Resolved(rows=entry.rows, query=entry.query, item=entry.item)
    return search(musrec, store, resolved, k=entry.k, filters=entry.filters, exclude=entry.shown, ranked=entry.ranked)


def more_like(musrec: Musrec, store: QueryStore, key: str, video_id: str, start: str) -> Page:
    """Results like an AudioSet segment, with the filters of the search it was found by and leaving out what that
    search showed (when it is still remembered)."""
    try:
        resolved = musrec.resolve(f"{AUDIOSET_PREFIX}{video_id}@{start}")
    except UnknownSegmentError:
        raise InputError(GONE_SEGMENT) from None
    entry = store.get(key, index=index_identity(musrec))
    if entry is None:
        return search(musrec, store, resolved, k=musrec.config.recommend.top_k, filters=musrec.filters())
    return search(musrec, store, resolved, k=entry.k, filters=entry.filters, exclude=entry.shown)
