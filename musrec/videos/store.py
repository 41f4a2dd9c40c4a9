"""What is known of videos, kept in SQLite under the data directory so a video is asked about once a month.

An alive video is kept ``alive_s`` (30 days by default), a gone one ``gone_s`` (a year: the dead rarely return);
unknown is never stored, so a YouTube that refused to answer is asked again next time. The file is a
:class:`~musrec.sqlitefile.SQLiteFile`, as the embedding cache is: WAL mode, shared by threads and processes, never
taking its caller down: a damaged file is started afresh, any other database error reads as "not known".
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from musrec.sqlitefile import BUSY_TIMEOUT_S, SQLiteFile
from musrec.videos.status import ALIVE, GONE, VideoStatus

log = logging.getLogger(__name__)

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


class VideoStore(SQLiteFile):
    """Known video states with an expiry (see the module docstring and :class:`~musrec.sqlitefile.SQLiteFile`)."""

    SCHEMA = _SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    TABLES = ("videos",)
    WHAT = "video store"

    def __init__(
        self,
        path: Path,
        *,
        alive_s: float = 30 * DAY_S,
        gone_s: float = 365 * DAY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.alive_s = alive_s
        self.gone_s = gone_s
        self._clock = clock
        super().__init__(path)

    def lifetime_s(self, state: str) -> float:
        """How long a state is believed: ``alive_s`` or ``gone_s``."""
        return self.alive_s if state == ALIVE else self.gone_s

    def unexpired(self, status: VideoStatus, now: float) -> bool:
        """Whether ``status`` is still believed at ``now`` (seconds since the epoch): checked less than its state's
        lifetime ago."""
        return status.checked_at is not None and now < status.checked_at + self.lifetime_s(status.state)

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
