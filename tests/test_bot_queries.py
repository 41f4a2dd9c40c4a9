"""The searches behind result messages' buttons (bot/queries.py): kept whole, bounded, tied to their index."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np

from bot.queries import QueryStore, Remembered
from musrec.recommend.results import Filters, Query, Resolved


def entry(n: int) -> Remembered:
    return Remembered(
        query=Query(kind="file", source=f"clip{n}.wav", start_s=1.5, end_s=11.5, extra={"title": "t"}),
        rows=np.full((10, 128), n, dtype=np.uint8),
        item=None,
        filters=Filters(music_only=True, labels=("Rock music",), not_labels=("Speech",)),
        k=5,
        shown=(n, n + 1),
        ranked=2,
    )


def test_an_entry_comes_back_whole_in_its_own_index_only(tmp_path: Path) -> None:
    store = QueryStore(tmp_path / "data" / "bot-queries.sqlite3")
    key = store.save(entry(7), index="built-1")
    assert len(key) <= 16
    back = store.get(key, index="built-1")
    assert back is not None and back.rows is not None
    assert np.array_equal(back.rows, entry(7).rows)
    assert (back.query, back.filters, back.k, back.shown, back.ranked) == (
        entry(7).query, entry(7).filters, 5, (7, 8), 2
    )  # fmt: skip
    assert store.get(key, index="built-2") is None  # item ids of another build mean nothing
    assert store.get("nosuchkey", index="built-1") is None


def test_the_oldest_entries_are_dropped(tmp_path: Path) -> None:
    store = QueryStore(tmp_path / "q.sqlite3", max_entries=3)
    keys = [store.save(entry(n), index="i") for n in range(5)]
    assert len(store) == 3
    assert [store.get(k, index="i") is not None for k in keys] == [False, False, True, True, True]
    # Reopened (the bot restarted): what was kept is still there.
    assert QueryStore(tmp_path / "q.sqlite3", max_entries=3).get(keys[-1], index="i") is not None


def blend_entry() -> Remembered:
    sounds = (
        Resolved(np.full((10, 128), 1, dtype=np.uint8), Query(kind="file", source="a.wav", start_s=0.0, end_s=10.0)),
        Resolved(np.full((6, 128), 2, dtype=np.uint8), Query(kind="audioset", source="audioset:x", video_id="x"), 42),
    )
    query = Query(kind="blend", source="a.wav + audioset:x")
    return replace(entry(0), query=query, rows=None, sounds=sounds, shown=(42, 3, 4), ranked=2)


def test_a_blend_comes_back_with_each_of_its_sounds(tmp_path: Path) -> None:
    store = QueryStore(tmp_path / "q.sqlite3")
    back = store.get(store.save(blend_entry(), index="i"), index="i")
    assert back is not None and back.searchable and back.rows is None
    assert back.query == blend_entry().query and (back.shown, back.ranked) == ((42, 3, 4), 2)
    for got, sent in zip(back.sounds, blend_entry().sounds, strict=True):
        assert np.array_equal(got.rows, sent.rows) and (got.query, got.item) == (sent.query, sent.item)


def test_a_store_made_before_blends_were_kept_gains_their_column(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    with sqlite3.connect(path) as db:  # the first release's table
        db.execute(
            "CREATE TABLE queries (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, idx TEXT NOT NULL,"
            " query TEXT NOT NULL, rows BLOB, item INTEGER, filters TEXT NOT NULL, k INTEGER NOT NULL,"
            " shown TEXT NOT NULL, ranked INTEGER NOT NULL)"
        )
        db.execute(
            "INSERT INTO queries (key, idx, query, rows, item, filters, k, shown, ranked)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("old", "i", '{"kind": "blend", "source": "a + b", "video_id": null, "start_s": null, "end_s": null,'
             ' "labels": [], "extra": {}}', None, None,
             '{"music_only": false, "one_per_video": true, "labels": [], "not_labels": []}', 5, "[1, 2]", 2),
        )  # fmt: skip
    store = QueryStore(path)
    old = store.get("old", index="i")
    assert old is not None and not old.searchable  # a blend kept before: its buttons say the search is gone
    back = store.get(store.save(blend_entry(), index="i"), index="i")
    assert back is not None and len(back.sounds) == 2


def test_a_damaged_store_is_replaced_and_a_failing_one_never_raises(tmp_path: Path) -> None:
    """Issue 23, point 1: a file that is not a database used to raise sqlite3.DatabaseError when the store opened
    (and the bot exited). It is replaced, at opening and when damaged later; a store that cannot be written at all
    gives no key (its answers go without buttons) and finds nothing."""
    path = tmp_path / "q.sqlite3"
    path.write_bytes(b"a copy cut short " * 100)
    store = QueryStore(path)
    key = store.save(entry(1), index="i")
    assert key is not None and store.get(key, index="i") is not None
    path.write_bytes(b"\x00" * 4096)  # damaged under the open store
    assert store.get(key, index="i") is None
    assert store.save(entry(2), index="i") is not None and len(store) == 1
    assert path.read_bytes().startswith(b"SQLite format 3\x00")
    blocked = tmp_path / "a file, not a directory"
    blocked.write_text("")
    nowhere = QueryStore(blocked / "q.sqlite3")
    assert nowhere.save(entry(3), index="i") is None and nowhere.get("any", index="i") is None and len(nowhere) == 0
