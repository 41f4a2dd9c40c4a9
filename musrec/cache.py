"""A persistent cache of query embeddings, so the same link asked for again answers without a download.

Entries are keyed by what was asked for: the video (a YouTube id, or ``url:`` plus the URL of another media
file), the requested window start (None: the default window, whose actual start is stored in the entry), the
window duration and the embedder's identity string (a different model or PCA file gives different codes).
Storage is one SQLite file in WAL mode, shared safely by threads and processes; it holds at most
``max_entries`` entries and evicts the least recently used. The cache never takes the caller down: a
damaged file is recreated with a warning, and any other database error turns into a miss.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from musrec.sqlitefile import SQLiteFile
from musrec.vggish.postprocess import EMBEDDING_SIZE

log = logging.getLogger(__name__)


DEFAULT_MAX_ENTRIES = 10_000  # about 13 MB of 10-row embeddings
SCHEMA_VERSION = 1
DEFAULT_START_MS = -1  # the key's start when the default window was asked for

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    video_id TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    embedder TEXT NOT NULL,
    rows INTEGER NOT NULL,
    data BLOB NOT NULL,
    window_start_s REAL NOT NULL,
    window_end_s REAL NOT NULL,
    title TEXT,
    video_duration_s REAL,
    used_ns INTEGER NOT NULL,
    PRIMARY KEY (video_id, start_ms, duration_ms, embedder)
);
CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings (used_ns);
"""


@dataclass(frozen=True, kw_only=True)
class CacheKey:
    """What was asked for. ``start_s=None`` is the default window; starts and durations count to the millisecond."""

    video_id: str
    start_s: float | None
    duration_s: float
    embedder: str

    def _columns(self) -> tuple[str, int, int, str]:
        start_ms = DEFAULT_START_MS if self.start_s is None else round(self.start_s * 1000)
        return self.video_id, start_ms, round(self.duration_s * 1000), self.embedder


@dataclass(frozen=True, eq=False)
class CacheEntry:
    """A cached embedding (read-only uint8 ``[n, 128]``) and the window of the video it was computed from."""

    embedding: npt.NDArray[np.uint8]
    window_start_s: float
    window_end_s: float
    title: str | None = None
    video_duration_s: float | None = None


class EmbeddingCache(SQLiteFile):
    """SQLite-backed, thread-safe, bounded cache of embeddings (see the module docstring and :class:`SQLiteFile`)."""

    SCHEMA = _SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    TABLES = ("embeddings",)
    WHAT = "embedding cache"

    def __init__(self, path: Path, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        super().__init__(path)

    def get(self, key: CacheKey) -> CacheEntry | None:
        """The entry for ``key`` (marking it recently used), or None."""
        row = self._run(self._get, key)
        if row is None:
            log.debug("cache miss for %s", key)
        return row

    def put(
        self,
        key: CacheKey,
        embedding: npt.NDArray[np.uint8],
        *,
        window_start_s: float,
        window_end_s: float,
        title: str | None = None,
        video_duration_s: float | None = None,
    ) -> None:
        """Store (or replace) the entry for ``key``, evicting the least recently used beyond ``max_entries``."""
        codes = np.asarray(embedding)
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != EMBEDDING_SIZE:
            raise ValueError(f"expected a uint8 [n, {EMBEDDING_SIZE}] embedding, got {codes.dtype} {codes.shape}")
        entry = CacheEntry(codes, window_start_s, window_end_s, title, video_duration_s)
        self._run(self._put, key, entry)

    def __len__(self) -> int:
        """The number of entries (0 when caching is off)."""
        count = self._run(self._count)
        return count or 0

    def _get(self, conn: sqlite3.Connection, key: CacheKey) -> CacheEntry | None:
        columns = key._columns()
        found = conn.execute(
            "SELECT rows, data, window_start_s, window_end_s, title, video_duration_s FROM embeddings"
            " WHERE video_id = ? AND start_ms = ? AND duration_ms = ? AND embedder = ?",
            columns,
        ).fetchone()
        if found is None:
            return None
        rows, data, start_s, end_s, title, video_duration_s = found
        if len(data) != rows * EMBEDDING_SIZE:
            log.warning("dropping a damaged cache entry for %s", key)
            with conn:
                conn.execute(
                    "DELETE FROM embeddings WHERE video_id = ? AND start_ms = ? AND duration_ms = ? AND embedder = ?",
                    columns,
                )
            return None
        with conn:
            conn.execute(
                "UPDATE embeddings SET used_ns = ?"
                " WHERE video_id = ? AND start_ms = ? AND duration_ms = ? AND embedder = ?",
                (time.time_ns(), *columns),
            )
        codes = np.frombuffer(data, dtype=np.uint8).reshape(rows, EMBEDDING_SIZE)  # read-only: bytes-backed
        return CacheEntry(codes, start_s, end_s, title, video_duration_s)

    def _put(self, conn: sqlite3.Connection, key: CacheKey, entry: CacheEntry) -> None:
        codes = np.ascontiguousarray(entry.embedding)
        with conn:
            conn.execute(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *key._columns(),
                    len(codes),
                    codes.tobytes(),
                    entry.window_start_s,
                    entry.window_end_s,
                    entry.title,
                    entry.video_duration_s,
                    time.time_ns(),
                ),
            )
            conn.execute(
                "DELETE FROM embeddings WHERE rowid IN"
                " (SELECT rowid FROM embeddings ORDER BY used_ns DESC LIMIT -1 OFFSET ?)",
                (self.max_entries,),
            )

    def _count(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
