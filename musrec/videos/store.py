"""What is known of videos, kept in SQLite under the data directory so a video is asked about once a month.

An alive video is kept ``alive_s`` (30 days by default), a gone one ``gone_s`` (a year: the dead rarely return);
unknown is never stored, so a YouTube that refused to answer is asked again next time. The file follows the
embedding cache's rules (musrec/cache.py): WAL mode, shared by threads and processes, never taking its caller
down: a damaged file is set aside and started afresh, any other database error reads as "not known".
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from musrec.cache import BUSY_TIMEOUT_S, is_corruption, remove_database
from musrec.videos.status import ALIVE, GONE, VideoStatus

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

DAY_S = 86_400.0
SCHEMA_VERSION = 1
_CHUNK = 500  # ids per query: under SQLite's bound on variables
_SCHEMA = """
CREATE TABLE IF NOT EXISTS videos (
    video_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('alive', 'gone')),
    title TEXT,
    channel TEXT,
    checked_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class StoreCounts:
    """How many videos have a state that has not expired, and how many of those are gone."""

    checked: int
    gone: int

    @property
    def gone_share(self) -> float:
        return self.gone / self.checked if self.checked else 0.0


class VideoStore:
    """Known video states with an expiry (see the module docstring). Thread-safe; :meth:`close` releases it."""

    def __init__(
        self,
        path: Path,
        *,
        alive_s: float = 30 * DAY_S,
        gone_s: float = 365 * DAY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.alive_s = alive_s
        self.gone_s = gone_s
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._open()

    def lifetime_s(self, state: str) -> float:
        """How long a state is believed: ``alive_s`` or ``gone_s``."""
        return self.alive_s if state == ALIVE else self.gone_s

    def get_many(self, video_ids: Iterable[str]) -> dict[str, VideoStatus]:
        """The states known and not expired of ``video_ids`` (those not known are missing)."""
        ids = list(dict.fromkeys(video_ids))
        found: dict[str, VideoStatus] = {}
        for lo in range(0, len(ids), _CHUNK):
            found.update(self._run(self._get, ids[lo : lo + _CHUNK]) or {})
        return found

    def put_many(self, statuses: Iterable[VideoStatus]) -> None:
        """Record the alive and the gone of ``statuses``; unknown ones are left out."""
        known = [s for s in statuses if s.state in (ALIVE, GONE)]
        if known:
            self._run(self._put, known)

    def counts(self) -> StoreCounts:
        return self._run(self._counts) or StoreCounts(0, 0)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _get(self, conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, VideoStatus]:
        marks = ",".join("?" * len(ids))
        rows = conn.execute(
            f"SELECT video_id, state, title, channel, checked_at FROM videos WHERE video_id IN ({marks})"
            " AND expires_at > ?",
            (*ids, self._clock()),
        ).fetchall()
        return {row[0]: VideoStatus(*row) for row in rows}

    def _put(self, conn: sqlite3.Connection, statuses: Sequence[VideoStatus]) -> None:
        now = self._clock()
        rows = [
            (s.video_id, s.state, s.title, s.channel, s.checked_at or now,
             (s.checked_at or now) + self.lifetime_s(s.state))
            for s in statuses
        ]  # fmt: skip
        with conn:
            conn.executemany("INSERT OR REPLACE INTO videos VALUES (?, ?, ?, ?, ?, ?)", rows)

    def _counts(self, conn: sqlite3.Connection) -> StoreCounts:
        return _counts(conn, self._clock())

    def _run(
        self, operation: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T | None:
        """``operation(conn, ...)`` under the lock; a damaged file is started afresh once, other errors give None."""
        with self._lock:
            for attempt in range(2):
                if self._conn is None:
                    return None
                try:
                    return operation(self._conn, *args, **kwargs)
                except sqlite3.DatabaseError as err:
                    if is_corruption(err) and attempt == 0:
                        self._recreate(err)
                        continue
                    log.warning("video store error, read as not known: %s", err)
                    return None
            return None

    def _open(self) -> None:
        try:
            self._conn = self._connect()
        except (sqlite3.DatabaseError, OSError) as err:
            if isinstance(err, sqlite3.DatabaseError) and is_corruption(err):
                self._recreate(err)
            else:
                log.warning("cannot open the video store %s (%s): videos are checked afresh each time", self.path, err)

    def _recreate(self, err: sqlite3.DatabaseError) -> None:
        log.warning("the video store %s is damaged (%s); starting a new one", self.path, err)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        try:
            remove_database(self.path)
            self._conn = self._connect()
        except (sqlite3.DatabaseError, OSError) as again:
            log.warning(
                "cannot recreate the video store %s (%s): videos are checked afresh each time", self.path, again
            )

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                conn.executescript("DROP TABLE IF EXISTS videos;")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        return conn


def read_counts(path: Path) -> StoreCounts | None:
    """What the store at ``path`` holds, read without changing it (``musrec doctor``); None if it cannot be read."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            return _counts(conn, time.time())
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None


def _counts(conn: sqlite3.Connection, now: float) -> StoreCounts:
    checked, gone = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(state = 'gone'), 0) FROM videos WHERE expires_at > ?", (now,)
    ).fetchone()
    return StoreCounts(int(checked), int(gone))
