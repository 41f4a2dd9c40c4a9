"""The searches behind result messages, remembered so their buttons work after a restart.

A button's custom id holds at most 100 characters: enough for an AudioSet segment ("More like 3"), not for an
uploaded clip's embedding. "More" needs the query itself (its rows, what it was, its filters; for a blend, each of
its sounds) and the segments already shown, so each result message's search is kept here under a short key that
its buttons carry.

Storage is one SQLite file in the data directory, opened per call (calls come from worker threads, never the event
loop). It holds at most ``max_entries`` searches and drops the oldest. Each entry names the index it was searched
in: item ids mean nothing in another index, so after a rebuild old entries are treated as gone.

The store never takes the bot down, since only buttons depend on it: a damaged file is removed and a new one made
(as the embedding cache does, with its test of what is damage), and any other failure (a full disk, a lock held past
``BUSY_TIMEOUT_S``, a directory that cannot be written) is logged, after which a search is answered without
buttons and a button finds its search gone.

WAL mode: a button's lookup never waits for an answer's save (readers do not block the writer, nor it them), and
with ``synchronous=NORMAL`` a commit costs no fsync; a power cut may lose the last searches, never the file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from musrec.recommend.results import Filters, Query, Resolved
from musrec.sqlitefile import is_corruption, remove_database

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

FILENAME = "bot-queries.sqlite3"
DEFAULT_MAX_ENTRIES = 10_000  # 15-40 MB: a 10-row query is 1.3 kB, a blend of three 3.9 kB
SHOWN_MAX = 200  # items left out of "More" at most: beyond that, repeats are unlikely to matter
KEY_BYTES = 6  # 8 URL-safe characters
BUSY_TIMEOUT_S = 5.0  # another process holding the write lock: wait this long, then give up (no buttons)
ROW_SIZE = 128

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    idx TEXT NOT NULL,
    query TEXT NOT NULL,
    rows BLOB,
    item INTEGER,
    filters TEXT NOT NULL,
    k INTEGER NOT NULL,
    shown TEXT NOT NULL,
    ranked INTEGER NOT NULL,
    parts TEXT
);
"""
# Added after the first release: stores made before have no such column (NULL: not a blend).
_PARTS_COLUMN = "ALTER TABLE queries ADD COLUMN parts TEXT"


@dataclass(frozen=True, eq=False)
class Remembered:
    """A result message's search: ``rows`` (and ``item``) of one query, or the ``sounds`` of a blend; neither when
    it cannot be searched again (a blend remembered before blends could be)."""

    query: Query
    rows: npt.NDArray[np.uint8] | None
    item: int | None
    filters: Filters
    k: int
    shown: tuple[int, ...]  # items left out of the next search: those shown, and those left out of this one
    ranked: int  # results of this query shown so far (the next "More" starts at ranked + 1)
    sounds: tuple[Resolved, ...] = ()  # a blend's sounds

    @property
    def searchable(self) -> bool:
        """Whether "More" can search it again."""
        return self.rows is not None or bool(self.sounds)


class QueryStore:
    """The searches behind result messages (see the module docstring); safe to call from several threads."""

    def __init__(self, path: Path, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.path = path
        self.max_entries = max_entries
        self._lock = threading.Lock()  # one operation at a time in this process; SQLite's lock guards the file
        self._ready = False  # the schema is in place (checked again after the file was replaced)
        self._run(lambda db: None)  # at start-up: a damaged file is replaced now, other failures only logged

    def save(self, entry: Remembered, *, index: str) -> str | None:
        """Remember ``entry`` (searched in ``index``); its key, to put in custom ids, or None if it could not be
        saved (logged: the answer then goes without buttons)."""
        key = secrets.token_urlsafe(KEY_BYTES)
        rows = None if entry.rows is None else np.ascontiguousarray(entry.rows, dtype=np.uint8).tobytes()
        parts = None
        if entry.sounds:  # each sound's rows, one after the other, and what each is
            rows = b"".join(np.ascontiguousarray(s.rows, dtype=np.uint8).tobytes() for s in entry.sounds)
            parts = json.dumps(
                [{"query": dataclasses.asdict(s.query), "item": s.item, "rows": len(s.rows)} for s in entry.sounds]
            )
        values = (
            key,
            index,
            json.dumps(dataclasses.asdict(entry.query)),
            rows,
            entry.item,
            json.dumps(dataclasses.asdict(entry.filters)),
            entry.k,
            json.dumps(list(entry.shown[-SHOWN_MAX:])),
            entry.ranked,
            parts,
        )
        return key if self._run(self._insert, values) else None

    def get(self, key: str, *, index: str) -> Remembered | None:
        """The search remembered under ``key``, if it is still kept, was searched in ``index`` and can be read."""
        row = self._run(self._select, key, index)
        if row is None:
            return None
        query, rows, item, filters, k, shown, ranked, parts = row
        f = json.loads(filters)
        matrix = None if rows is None else np.frombuffer(rows, dtype=np.uint8).reshape(-1, ROW_SIZE)
        sounds: list[Resolved] = []
        if parts is not None and matrix is not None:
            at = 0
            for part in json.loads(parts):
                sounds.append(Resolved(matrix[at : at + part["rows"]], _query(part["query"]), part["item"]))
                at += part["rows"]
        return Remembered(
            query=_query(json.loads(query)),
            rows=None if sounds else matrix,
            item=item,
            filters=Filters(**{**f, "labels": tuple(f["labels"]), "not_labels": tuple(f["not_labels"])}),
            k=k,
            shown=tuple(json.loads(shown)),
            ranked=ranked,
            sounds=tuple(sounds),
        )

    def __len__(self) -> int:
        """The searches kept (0 when the store cannot be read)."""
        return self._run(lambda db: int(db.execute("SELECT COUNT(*) FROM queries").fetchone()[0])) or 0

    def _insert(self, db: sqlite3.Connection, values: tuple[object, ...]) -> bool:
        with db:
            db.execute(
                "INSERT INTO queries (key, idx, query, rows, item, filters, k, shown, ranked, parts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            db.execute("DELETE FROM queries WHERE seq <= (SELECT MAX(seq) FROM queries) - ?", (self.max_entries,))
        return True

    def _select(self, db: sqlite3.Connection, key: str, index: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = db.execute(
            "SELECT query, rows, item, filters, k, shown, ranked, parts FROM queries WHERE key = ? AND idx = ?",
            (key, index),
        ).fetchone()
        return row

    def _run(
        self, operation: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T | None:
        """``operation(db, ...)`` on a connection of its own; a damaged file is replaced once, then tried again;
        any other failure is logged and gives None."""
        with self._lock:
            for attempt in range(2):
                try:
                    db = self._connect()
                    try:
                        return operation(db, *args, **kwargs)
                    finally:
                        db.close()
                except sqlite3.DatabaseError as err:
                    if is_corruption(err) and attempt == 0:
                        log.warning("the store of searches %s is damaged (%s); starting a new one", self.path, err)
                        if self._remove():
                            continue
                        return None
                    log.warning("the store of searches %s failed (%s): buttons may not work", self.path, err)
                    return None
                except OSError as err:  # its directory cannot be made
                    log.warning("the store of searches %s cannot be opened (%s): buttons may not work", self.path, err)
                    return None
            return None

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        try:
            if not self._ready:
                db.execute("PRAGMA journal_mode=WAL")  # kept in the file: once is enough
                with db:
                    db.executescript(_SCHEMA)
                    if "parts" not in {row[1] for row in db.execute("PRAGMA table_info(queries)")}:
                        db.execute(_PARTS_COLUMN)
                self._ready = True
            db.execute("PRAGMA synchronous=NORMAL")  # per connection
        except BaseException:
            db.close()
            raise
        return db

    def _remove(self) -> bool:
        self._ready = False
        try:
            remove_database(self.path)
        except OSError as err:
            log.warning("cannot remove the damaged store of searches %s (%s)", self.path, err)
            return False
        return True


def _query(fields: dict[str, Any]) -> Query:
    """A Query from its stored fields (JSON has lists where the Query has tuples)."""
    return Query(**{**fields, "labels": tuple(fields["labels"])})
