"""Each server's library of its own tracks, in the one library store the bot holds (musrec.library).

A server's library is named by its guild id, so one server never reaches another's tracks: every call here takes the
guild id and nothing else names a library. Milvus Lite lets one process hold its file: the bot opens the store at the
first library request and holds it until it stops (a bot that never uses a library never makes one). When it cannot
(``musrec library add`` holds the file), the user is told the library is not available now, the log says why, and
the next request tries again.

The store's own failures name where it is (a file's path, a server's address): users see a short message instead,
and the log the store's own.

These functions block (Milvus, decoding, the model): they run in the work queue's threads or ``asyncio.to_thread``,
never on the event loop.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from bot.errors import InputError
from musrec.config import YouTubeConfig
from musrec.library import AddResult, Library, LibraryError, TrackInfo, UnknownTrackError
from musrec.pipeline import LinkTarget

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

EMPTY = "This server's library has no tracks yet: a member who may manage it can add some with `/library add`"
UNAVAILABLE = "This server's library is not available right now; please try again later"


def told(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn``, whose failures of the library store reach the user as :data:`UNAVAILABLE` (and the log in full)."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except LibraryError as err:
            log.warning("the server libraries failed: %s", err)
            raise InputError(UNAVAILABLE) from None

    return call


def library_name(guild_id: int) -> str:
    """The library of a server: its guild id (a valid library name)."""
    return str(guild_id)


class ServerLibraries:
    """The library store, opened by ``opener`` on first need (again after a failure), and the servers' libraries
    in it; safe to call from several threads."""

    def __init__(self, opener: Callable[[], Library], *, max_tracks: int) -> None:
        self._opener = opener
        self.max_tracks = max_tracks  # per server
        self._library: Library | None = None
        self._lock = threading.Lock()
        self._adding: dict[int, threading.Lock] = {}  # by guild: a quota check and its add, one at a time

    def store(self) -> Library:
        """The open store. Raises the library's errors (LibraryBusyError: another process holds the file), whose
        messages are for the user."""
        with self._lock:
            if self._library is None:
                self._library = self._opener()
            return self._library

    def close(self) -> None:
        with self._lock:
            if self._library is not None:
                self._library.close()
                self._library = None

    # ---- what the commands do (in worker threads) -----------------------------------------------------------

    @told
    def count(self, guild_id: int) -> int:
        return self.store().count(library_name(guild_id))

    @told
    def check_room(self, guild_id: int) -> None:
        """Refuse (InputError) when the server's library holds its quota of tracks: before anything is downloaded."""
        if self.count(guild_id) >= self.max_tracks:
            raise _full(self.max_tracks)

    @told
    def add(self, guild_id: int, path: Path, *, name: str) -> AddResult:
        """Add the recording at ``path`` (shown as ``name``) to the server's library, within its quota."""
        return self._within_quota(guild_id, lambda library, name_: library.add_track(path, library=name_, name=name))

    @told
    def add_link(self, guild_id: int, target: LinkTarget, *, options: YouTubeConfig) -> AddResult:
        """Add a link's media (one the host policy passed) to the server's library, within its quota."""
        return self._within_quota(
            guild_id, lambda library, name: library.add_link(target, library=name, options=options)
        )

    def _within_quota(self, guild_id: int, add: Callable[[Library, str], AddResult]) -> AddResult:
        """``add(store, library name)`` once the server's library has room for it."""
        library = self.store()
        with self._lock:
            adding = self._adding.setdefault(guild_id, threading.Lock())
        with adding:  # two adds at once cannot both take the last place
            self.check_room(guild_id)
            return add(library, library_name(guild_id))

    @told
    def remove(self, guild_id: int, track: str) -> TrackInfo:
        """Remove one track (its id or a unique prefix, hex digits) with all its segments. InputError if it names
        no track of the server's library, or several."""
        try:
            removed = self.store().remove(library_name(guild_id), [track])
        except UnknownTrackError:
            raise InputError(
                f"`{track}` names no one track of this server's library: `/library list` shows their ids"
            ) from None
        return removed[0]

    @told
    def tracks(self, guild_id: int) -> list[TrackInfo]:
        return self.store().tracks(library_name(guild_id))


def _full(quota: int) -> InputError:
    return InputError(
        f"this server's library is full ({quota:,} track{'s' if quota != 1 else ''}): remove some with "
        "`/library remove` before adding more"
    )
