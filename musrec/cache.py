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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Concatenate, ParamSpec, Self, TypeVar

import numpy as np
import numpy.typing as npt

from musrec.vggish.postprocess import EMBEDDING_SIZE

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_MAX_ENTRIES = 10_000  # about 13 MB of 10-row embeddings
BUSY_TIMEOUT_S = 5.0  # another process holding the write lock: wait this long, then give up (a miss)
SCHEMA_VERSION = 1
DEFAULT_START_MS = -1  # the key's start when the default window was asked for
# SQLite result codes that mean the file itself is damaged, so starting afresh is the only cure.
CORRUPTION_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")

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


class SQLiteFile:
    """One SQLite file in WAL mode, shared by threads (one connection, serialised by a lock) and processes, that
    never takes its caller down: a damaged file is removed and started afresh with a warning, any other database
    error makes the operation return None. A subclass names its tables (``SCHEMA``, created when missing), their
    ``SCHEMA_VERSION`` (a file of another version starts afresh), the ``TABLES`` to drop then, and ``WHAT`` it is
    (for the log), and runs each operation through :meth:`_run`.

    Usable as a context manager; :meth:`close` releases the file. If the file cannot be opened at all (a
    directory without write permission, say), it logs a warning and behaves as an always-empty one.
    """

    SCHEMA: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]
    TABLES: ClassVar[tuple[str, ...]]
    WHAT: ClassVar[str]

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._open()

    def close(self) -> None:
        """Release the database file; later calls behave as an empty cache."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(
        self, operation: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T | None:
        """Run ``operation(conn, ...)`` under the lock; a damaged file is recreated once, other errors miss."""
        with self._lock:
            for attempt in range(2):
                if self._conn is None:
                    return None
                try:
                    return operation(self._conn, *args, **kwargs)
                except sqlite3.DatabaseError as err:
                    if is_corruption(err) and attempt == 0:
                        log.warning("the %s %s is damaged (%s); starting a new one", self.WHAT, self.path, err)
                        self._recreate()
                        continue
                    log.warning("%s error, treated as a miss: %s", self.WHAT, err)
                    return None
            return None

    def _open(self) -> None:
        try:
            self._conn = self._connect()
        except (sqlite3.DatabaseError, OSError) as err:
            if not (isinstance(err, sqlite3.DatabaseError) and is_corruption(err)):
                log.warning("cannot open the %s %s (%s); caching is off", self.WHAT, self.path, err)
                return
            log.warning("the %s %s is damaged (%s); starting a new one", self.WHAT, self.path, err)
            self._recreate()

    def _recreate(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        try:
            remove_database(self.path)
            self._conn = self._connect()
        except (sqlite3.DatabaseError, OSError) as err:
            log.warning("cannot recreate the %s %s (%s); caching is off", self.WHAT, self.path, err)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by all threads, serialised by self._lock; `with conn` commits each change.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a power cut may lose the last entries, no more
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, self.SCHEMA_VERSION):
                log.warning("the %s %s has schema %s; starting a new one", self.WHAT, self.path, version)
                conn.executescript("".join(f"DROP TABLE IF EXISTS {table};" for table in self.TABLES))
            conn.executescript(self.SCHEMA)
            conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        return conn


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


def remove_database(path: Path) -> None:
    """Remove a SQLite file and its journal files, those that exist (OSError if one cannot be removed)."""
    for suffix in ("", *SIDECAR_SUFFIXES):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def is_corruption(err: sqlite3.DatabaseError) -> bool:
    """Whether ``err`` says the database file itself is damaged (not a database, or corrupt): starting afresh is
    the only cure. Other errors (a lock held too long, a full disk) pass."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in CORRUPTION_CODES  # extended codes carry the primary code in the low byte
    return not isinstance(err, sqlite3.OperationalError)
