"""SQLite files that mend themselves: one file in WAL mode shared by threads and processes, which a damaged file or a
busy lock never turns into an error of its caller (:class:`SQLiteFile`), and what counts as damage.

The embedding cache, the store of video states and the bot's store of searches keep their data this way.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Concatenate, ParamSpec, Self, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0  # another process holding the write lock: wait this long, then give up (a miss)
# SQLite result codes that mean the file itself is damaged, so starting afresh is the only cure.
CORRUPTION_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")


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
