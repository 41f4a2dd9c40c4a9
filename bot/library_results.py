"""Searches of a server's library whose results carry buttons, remembered (bot/queries.py) as AudioSet searches are.

An entry of a library search is kept under the identity ``library:<guild id>``: a button finds it only from the
server it was asked in. Its ``shown`` holds the tracks already shown (their 16-hex-digit ids as integers), which
"More" leaves out. A sound's search keeps its rows; a track's ("More like N") keeps only which segment of which
track it was, and "More" reads that segment's vector from the library again.

These functions block (Milvus, SQLite, the model): they run in the work queue's threads, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bot.errors import InputError
from bot.libraries import EMPTY, ServerLibraries, library_name, told
from bot.queries import QueryStore, Remembered
from bot.results import GONE_SEARCH
from musrec.library import LIBRARY_PREFIX, LibraryRecommendation, UnknownTrackError
from musrec.pipeline import Musrec, Source
from musrec.recommend.results import Filters, Query

GONE_TRACK = "That track is no longer in this server's library. Try another one, or /recommend again"


@dataclass(frozen=True)
class LibraryPage:
    """A result of a server's library, the number of tracks it holds, and the key its buttons carry (None: it
    could not be remembered, so it has no buttons); ``first_rank`` is the rank of its first match."""

    result: LibraryRecommendation
    tracks: int
    key: str | None
    first_rank: int = 1


def identity(guild_id: int) -> str:
    """What a library search's entry is kept under: its server's library."""
    return f"{LIBRARY_PREFIX}{library_name(guild_id)}"


@told
def search_sound(
    musrec: Musrec,
    libraries: ServerLibraries,
    store: QueryStore,
    guild_id: int,
    source: Source,
    *,
    name: str | None,
    start_s: float | None,
    k: int,
) -> LibraryPage:
    """/recommend source:library: embed ``source`` as any query is embedded, and search the server's library."""
    _tracks(libraries, guild_id)  # an empty library (or none to be had) is told before any decoding
    resolved = musrec.resolve(source, name=name, start_s=start_s)
    return _rows_page(libraries, store, guild_id, resolved.rows, resolved.query, k=k)


@told
def more_like(
    libraries: ServerLibraries,
    store: QueryStore,
    guild_id: int,
    key: str,
    track_id: str,
    start: str,
    *,
    default_k: int,
) -> LibraryPage:
    """Other tracks like the segment of ``track_id`` at ``start``, leaving out the track itself and what the search
    it was found by showed (when it is still remembered; else ``default_k`` matches)."""
    entry = store.get(key, index=identity(guild_id))
    k = entry.k if entry is not None else default_k
    shown = _shown(entry) if entry is not None else []
    return _track_page(libraries, store, guild_id, f"{LIBRARY_PREFIX}{track_id}@{start}", k=k, shown=shown)


@told
def more(libraries: ServerLibraries, store: QueryStore, guild_id: int, key: str) -> LibraryPage:
    """The next results of the library search remembered under ``key`` (nothing embedded again)."""
    entry = store.get(key, index=identity(guild_id))
    if entry is None:
        raise InputError(GONE_SEARCH)
    query = entry.query
    if entry.rows is not None:
        return _rows_page(libraries, store, guild_id, entry.rows, query, k=entry.k, shown=_shown(entry),
                          ranked=entry.ranked)  # fmt: skip
    if query.kind != "library":
        raise InputError(GONE_SEARCH)
    return _track_page(libraries, store, guild_id, query.source, k=entry.k, shown=_shown(entry), ranked=entry.ranked)


def _rows_page(
    libraries: ServerLibraries,
    store: QueryStore,
    guild_id: int,
    rows: npt.NDArray[np.uint8],
    query: Query,
    *,
    k: int,
    shown: Sequence[str] = (),
    ranked: int = 0,
) -> LibraryPage:
    tracks, name = _tracks(libraries, guild_id), library_name(guild_id)
    matches = libraries.store().search(rows, library=name, k=k, exclude_tracks=shown)
    result = LibraryRecommendation(query, name, tuple(matches))
    return _page(store, guild_id, result, tracks, rows=rows, k=k, shown=shown, ranked=ranked)


def _track_page(
    libraries: ServerLibraries,
    store: QueryStore,
    guild_id: int,
    reference: str,
    *,
    k: int,
    shown: Sequence[str] = (),
    ranked: int = 0,
) -> LibraryPage:
    """Tracks like the segment ``reference`` (``library:TRACK@START``), the track itself left out."""
    tracks = _tracks(libraries, guild_id)
    library, name = libraries.store(), library_name(guild_id)
    try:
        query = library.resolve_track(reference, library=name)
    except UnknownTrackError:
        raise InputError(GONE_TRACK) from None
    result = library.recommend_track(query, library=name, k=k, exclude_tracks=shown)
    shown = (*shown, query.track.track_id)
    return _page(store, guild_id, result, tracks, rows=None, k=k, shown=shown, ranked=ranked)


def _page(
    store: QueryStore,
    guild_id: int,
    result: LibraryRecommendation,
    tracks: int,
    *,
    rows: npt.NDArray[np.uint8] | None,
    k: int,
    shown: Sequence[str],
    ranked: int,
) -> LibraryPage:
    """``result`` as a page, remembered for its buttons with its matches now shown too."""
    now_shown = (*shown, *(m.track.track_id for m in result.matches))
    entry = Remembered(query=result.query, rows=rows, item=None, filters=Filters(), k=k,
                       shown=tuple(int(t, 16) for t in now_shown), ranked=ranked + len(result.matches))  # fmt: skip
    return LibraryPage(result, tracks, store.save(entry, index=identity(guild_id)), first_rank=ranked + 1)


def _tracks(libraries: ServerLibraries, guild_id: int) -> int:
    """The tracks of the server's library; InputError when it has none."""
    tracks = libraries.count(guild_id)
    if tracks == 0:
        raise InputError(EMPTY)
    return tracks


def _shown(entry: Remembered) -> list[str]:
    return [f"{t:016x}" for t in entry.shown]
