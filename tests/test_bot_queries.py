"""The searches behind result messages' buttons (bot/queries.py): kept whole, bounded, tied to their index."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bot.queries import QueryStore, Remembered
from musrec.recommend import Filters, Query


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
