"""musrec.cache: a real SQLite file in tmp_path, shared by threads, damaged on purpose."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from musrec.cache import CacheKey, EmbeddingCache

pytestmark = pytest.mark.timeout(60)


def key(video_id: str = "dQw4w9WgXcQ", start_s: float | None = 30.0, embedder: str = "vggish") -> CacheKey:
    return CacheKey(video_id=video_id, start_s=start_s, duration_s=10.0, embedder=embedder)


def codes(value: int, rows: int = 10) -> np.ndarray:
    return np.full((rows, 128), value, dtype=np.uint8)


def put(cache: EmbeddingCache, k: CacheKey, value: int, rows: int = 10) -> None:
    cache.put(k, codes(value, rows), window_start_s=30.0, window_end_s=40.0)


def first_code(cache: EmbeddingCache, k: CacheKey) -> int:
    entry = cache.get(k)
    assert entry is not None
    return int(entry.embedding[0, 0])


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    embedding = np.arange(10 * 128, dtype=np.int64).reshape(10, 128).astype(np.uint8)
    with EmbeddingCache(path) as cache:
        assert cache.get(key()) is None
        cache.put(key(), embedding, window_start_s=30.0, window_end_s=40.0, title="Song", video_duration_s=212.0)
    with EmbeddingCache(path) as cache:
        entry = cache.get(key())
    assert entry is not None
    assert entry.embedding.dtype == np.uint8 and np.array_equal(entry.embedding, embedding)
    assert not entry.embedding.flags.writeable
    assert (entry.window_start_s, entry.window_end_s, entry.title, entry.video_duration_s) == (
        30.0,
        40.0,
        "Song",
        212.0,
    )


def test_keys_are_distinct(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "cache.sqlite3") as cache:
        variants = [key(), key(start_s=None), key(start_s=0.0), key(embedder="max"), key(video_id="url:http://a/b")]
        variants.append(CacheKey(video_id="dQw4w9WgXcQ", start_s=30.0, duration_s=5.0, embedder="vggish"))
        for value, k in enumerate(variants):
            put(cache, k, value)
        assert [first_code(cache, k) for k in variants] == list(range(len(variants)))
        assert cache.get(key(start_s=30.0004)) is not None  # starts count to the millisecond
        put(cache, key(), 99, rows=3)  # replacing
        entry = cache.get(key())
        assert entry is not None and entry.embedding.shape == (3, 128)
        assert len(cache) == len(variants)


def test_least_recently_used_is_evicted(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "cache.sqlite3", max_entries=3) as cache:
        for name in "abc":
            put(cache, key(video_id=name), 1)
        assert cache.get(key(video_id="a")) is not None  # a is now the most recently used
        put(cache, key(video_id="d"), 1)
        assert len(cache) == 3
        assert cache.get(key(video_id="b")) is None
        assert all(cache.get(key(video_id=name)) is not None for name in "acd")


def test_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    with EmbeddingCache(path) as cache:
        put(cache, key(), 1)
        with sqlite3.connect(path) as other:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_embeddings_are_refused(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "cache.sqlite3") as cache:
        for bad in (np.zeros((10, 128), dtype=np.float32), np.zeros((10, 64), dtype=np.uint8), np.zeros(128, np.uint8)):
            with pytest.raises(ValueError):
                cache.put(key(), bad, window_start_s=0.0, window_end_s=10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EmbeddingCache(tmp_path / "other.sqlite3", max_entries=0)


def test_corrupt_file_is_recreated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"this is not a database, just bytes " * 200)
    with caplog.at_level(logging.WARNING, logger="musrec.sqlitefile"), EmbeddingCache(path) as cache:
        assert cache.get(key()) is None
        put(cache, key(), 5)
        assert cache.get(key()) is not None
    assert any("damaged" in r.getMessage() for r in caplog.records)


def test_damaged_pages_are_recreated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cache.sqlite3"
    with EmbeddingCache(path) as cache:
        for value in range(50):
            put(cache, key(video_id=f"v{value}"), value)
        cache.close()
        data = bytearray(path.read_bytes())
        data[100 : len(data)] = b"\xff" * (len(data) - 100)  # keep the header, wreck every page
        path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="musrec.sqlitefile"), EmbeddingCache(path) as cache:
        assert cache.get(key(video_id="v1")) is None  # a miss, not an exception
        put(cache, key(), 1)
        assert cache.get(key()) is not None
    assert any("damaged" in r.getMessage() for r in caplog.records)


def test_damaged_entry_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    with EmbeddingCache(path) as cache:
        put(cache, key(), 1)
        with sqlite3.connect(path) as other:
            other.execute("UPDATE embeddings SET data = x'0102'")
        assert cache.get(key()) is None
        assert len(cache) == 0


def test_unusable_location_turns_caching_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with (
        caplog.at_level(logging.WARNING, logger="musrec.sqlitefile"),
        EmbeddingCache(blocker / "cache.sqlite3") as cache,
    ):
        put(cache, key(), 1)
        assert cache.get(key()) is None and len(cache) == 0
    assert any("caching is off" in r.getMessage() for r in caplog.records)


def test_other_schema_version_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE embeddings (whatever TEXT)")
        old.execute("PRAGMA user_version = 99")
    with EmbeddingCache(path) as cache:
        put(cache, key(), 1)
        assert cache.get(key()) is not None


def test_threads_share_one_cache(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with EmbeddingCache(tmp_path / "cache.sqlite3", max_entries=40) as cache:

        def work(worker: int) -> None:
            try:
                for i in range(60):
                    k = key(video_id=f"w{worker}-{i % 25}")
                    put(cache, k, worker)
                    entry = cache.get(k)
                    assert entry is None or entry.embedding[0, 0] == worker
            except BaseException as err:  # noqa: BLE001 - reported by the main thread
                errors.append(err)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        assert len(cache) == 40


def test_two_instances_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    with EmbeddingCache(path) as writer, EmbeddingCache(path) as reader:
        put(writer, key(), 3)
        entry = reader.get(key())
        assert entry is not None and entry.embedding[0, 0] == 3
