"""Segment metadata in SQLite, next to the vector index: item number -> video id, start, end, labels, split."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from musrec.errors import IndexFormatError

SCHEMA = """
CREATE TABLE segments (
    item INTEGER PRIMARY KEY,
    video_id TEXT NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    split TEXT NOT NULL,
    labels TEXT NOT NULL,
    music INTEGER NOT NULL
);
"""
INDEXES = "CREATE INDEX segments_by_video ON segments (video_id, start_s);"


@dataclass(frozen=True)
class SegmentInfo:
    item: int
    video_id: str
    start_s: float
    end_s: float
    split: str
    labels: tuple[int, ...]
    music: bool


@dataclass(frozen=True)
class ItemLabels:
    """Every item's label indices: ``flat[offsets[i]:offsets[i + 1]]`` are item ``i``'s."""

    offsets: npt.NDArray[np.int64]
    flat: npt.NDArray[np.uint16]

    def mask(self, wanted: frozenset[int]) -> npt.NDArray[np.bool_]:
        """Items with at least one label in ``wanted``."""
        hit = np.isin(self.flat, np.fromiter(wanted, dtype=np.uint16, count=len(wanted))).astype(np.int64)
        counts = np.diff(np.concatenate([[0], np.cumsum(hit)])[self.offsets])
        return counts > 0


class LabelsWriter:
    """Collects every item's label indices during a build, as arrays (2 million tuples of Python ints would take
    a few hundred MB), and writes ``labels.npz``: flat, with offsets, so a label filter needs no table scan."""

    def __init__(self) -> None:
        self._counts: list[npt.NDArray[np.int64]] = []
        self._flat: list[npt.NDArray[np.uint16]] = []

    def add(self, label_lists: list[tuple[int, ...]]) -> None:
        self._counts.append(np.fromiter(map(len, label_lists), dtype=np.int64, count=len(label_lists)))
        total = int(self._counts[-1].sum())
        self._flat.append(np.fromiter((i for labels in label_lists for i in labels), dtype=np.uint16, count=total))

    def save(self, path: Path) -> None:
        counts = np.concatenate([np.zeros(1, dtype=np.int64), *self._counts])
        flat = np.concatenate([np.empty(0, dtype=np.uint16), *self._flat])
        with path.open("wb") as f:
            np.savez(f, offsets=np.cumsum(counts), flat=flat)


def load_labels(path: Path, count: int) -> ItemLabels | None:
    """``labels.npz`` if present and of ``count`` items; None otherwise (the table is read instead)."""
    try:
        with np.load(path) as data:
            labels = ItemLabels(offsets=data["offsets"].astype(np.int64), flat=data["flat"].astype(np.uint16))
    except (OSError, KeyError, ValueError):
        return None
    return labels if len(labels.offsets) == count + 1 else None


class SegmentWriter:
    """Appends segment rows during a build; items must be added in order 0, 1, 2, ..."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path)
        self._db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;" + SCHEMA)
        self._pending: list[tuple[int, str, float, float, str, str, int]] = []

    def add(self, info: SegmentInfo) -> None:
        labels = ",".join(str(i) for i in info.labels)
        self._pending.append((info.item, info.video_id, info.start_s, info.end_s, info.split, labels, int(info.music)))
        if len(self._pending) >= 10_000:
            self.flush()

    def flush(self) -> None:
        self._db.executemany("INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?, ?)", self._pending)
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._db.execute(INDEXES)
        self._db.commit()
        self._db.close()


class SegmentStore:
    """Read-only access, safe to share between threads."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise IndexFormatError(f"index metadata is missing ({path.name})")
        self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        try:
            self.count = self._db.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise IndexFormatError(f"index metadata is unreadable ({path.name}): {err}") from None

    def get(self, item: int) -> SegmentInfo:
        with self._lock:
            row = self._db.execute("SELECT * FROM segments WHERE item = ?", (item,)).fetchone()
        if row is None:
            raise KeyError(item)
        return _info(row)

    def get_many(self, items: Iterable[int]) -> list[SegmentInfo]:
        return [self.get(i) for i in items]

    def find(self, video_id: str, start_s: float | None = None) -> list[SegmentInfo]:
        """Segments of a video (at a start time, to within half a second), in order of start."""
        sql = "SELECT * FROM segments WHERE video_id = ?"
        args: tuple[object, ...] = (video_id,)
        if start_s is not None:
            sql += " AND start_s BETWEEN ? AND ?"
            args += (start_s - 0.5, start_s + 0.5)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY start_s", args).fetchall()
        return [_info(r) for r in rows]

    def video_ids(self, *, after: str = "", limit: int = 1000) -> list[str]:
        """Up to ``limit`` of the indexed videos, each once, in order of id from the first after ``after``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT video_id FROM segments WHERE video_id > ? ORDER BY video_id LIMIT ?", (after, limit)
            ).fetchall()
        return [video_id for (video_id,) in rows]

    def video_count(self) -> int:
        """How many videos the indexed segments come from."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(DISTINCT video_id) FROM segments").fetchone()[0])

    def item_labels(self) -> ItemLabels:
        """Every item's labels, read from the table (indexes built before ``labels.npz``)."""
        lists: list[tuple[int, ...]] = []
        with self._lock:
            for (labels,) in self._db.execute("SELECT labels FROM segments ORDER BY item"):
                lists.append(tuple(int(x) for x in labels.split(",") if x))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(labels) for labels in lists])
        flat = np.fromiter((i for labels in lists for i in labels), dtype=np.uint16, count=int(offsets[-1]))
        return ItemLabels(offsets=offsets, flat=flat)

    def music_mask(self) -> npt.NDArray[np.bool_]:
        mask = np.zeros(self.count, dtype=bool)
        with self._lock:
            for (item,) in self._db.execute("SELECT item FROM segments WHERE music = 1"):
                mask[item] = True
        return mask

    def close(self) -> None:
        self._db.close()


def _info(row: tuple[int, str, float, float, str, str, int]) -> SegmentInfo:
    item, video_id, start_s, end_s, split, labels, music = row
    return SegmentInfo(
        item=item,
        video_id=video_id,
        start_s=start_s,
        end_s=end_s,
        split=split,
        labels=tuple(int(x) for x in labels.split(",") if x),
        music=bool(music),
    )
