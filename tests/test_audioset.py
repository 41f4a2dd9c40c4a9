from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from audioset_fixtures import (
    GUITAR,
    JAZZ,
    corrupt_middle,
    make_segments,
    make_tarball,
    short_segment,
    truncate,
    write_layout,
)

from musrec.audioset.labels import default_labels
from musrec.audioset.records import IngestReport, SegmentFilter, looks_like_tfrecord, read_segments, write_records
from musrec.errors import DataError

LABELS = default_labels()


def read(sources: list[Path], **kwargs: object) -> tuple[list, IngestReport]:
    report = IngestReport()
    filt = SegmentFilter(**kwargs)  # type: ignore[arg-type]
    return list(read_segments(sources, labels=LABELS, filt=filt, report=report)), report


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audioset")
    return write_layout(
        root,
        {
            "eval": make_segments(40, split="eval", seed=1),
            "bal_train": make_segments(30, split="bal_train", seed=2, start=1000),
            "unbal_train": make_segments(20, split="unbal_train", seed=3, start=2000),
        },
    )


def test_record_round_trip_keeps_every_field(tmp_path: Path) -> None:
    segs = make_segments(5, split="", seed=9)
    write_records(tmp_path / "x.tfrecord", segs)
    got, report = read([tmp_path / "x.tfrecord"])
    assert report.records == 5 and report.kept == 5 and report.corrupt_records == 0
    for a, b in zip(segs, got, strict=True):
        assert (a.video_id, a.start_s, a.end_s, a.labels) == (b.video_id, b.start_s, b.end_s, b.labels)
        assert b.rows.dtype == np.uint8 and b.rows.shape == (10, 128)
        np.testing.assert_array_equal(a.rows, b.rows)


def test_directory_layout_and_split_filter(layout: Path) -> None:
    everything, report = read([layout])
    assert len(everything) == 90 and report.files > 3
    assert {s.split for s in everything} == {"eval", "bal_train", "unbal_train"}
    only_eval, _ = read([layout], splits=frozenset({"eval"}))
    assert len(only_eval) == 40 and {s.split for s in only_eval} == {"eval"}
    split_dir, _ = read([layout / "bal_train"])
    assert len(split_dir) == 30


def test_tarball_is_streamed_and_equals_the_directory(layout: Path, tmp_path: Path) -> None:
    tarball = make_tarball(layout.parent, tmp_path / "features.tar.gz")
    from_tar, report = read([tarball], splits=frozenset({"eval", "unbal_train"}))
    from_dir, _ = read([layout], splits=frozenset({"eval", "unbal_train"}))
    assert [s.video_id for s in from_tar] == [s.video_id for s in from_dir]
    assert report.kept == 60
    assert list(tmp_path.iterdir()) == [tarball]  # nothing extracted beside it


def test_mixed_sources(layout: Path, tmp_path: Path) -> None:
    single = tmp_path / "extra.tfrecord"
    write_records(single, make_segments(3, split="", seed=5, start=5000))
    got, _ = read([layout / "eval", single])
    assert len(got) == 43


def test_music_and_label_filters(layout: Path) -> None:
    music, report = read([layout / "eval"], music_only=True)
    assert len(music) == 20 and all(LABELS.is_music(s.labels) for s in music)
    assert report.filtered == {"not music": 20}
    guitar, _ = read([layout / "eval"], include_labels=frozenset({GUITAR}))
    assert len(guitar) == 10 and all(s.labels == (GUITAR,) for s in guitar)
    no_jazz, _ = read([layout / "eval"], exclude_labels=frozenset({JAZZ}))
    assert len(no_jazz) == 30 and all(JAZZ not in s.labels for s in no_jazz)


def test_short_segments_policy(tmp_path: Path) -> None:
    path = tmp_path / "eval" / "sh.tfrecord"
    write_records(path, [short_segment("shortAAAAA3", 3), short_segment("shortAAAAA7", 7), *make_segments(2, split="")])
    padded, report = read([path])
    assert len(padded) == 4 and report.padded == 2
    three = next(s for s in padded if s.video_id == "shortAAAAA3")
    assert three.rows.shape == (10, 128)
    # Repeat-padding: rows cycle 0,1,2,0,1,2,... never zero-filled, never shifted.
    np.testing.assert_array_equal(three.rows[3], three.rows[0])
    np.testing.assert_array_equal(three.rows[9], three.rows[0])
    skipped, report = read([path], short_segments="skip")
    assert len(skipped) == 2 and report.filtered == {"under 10 s": 2}
    long_only, report = read([path], min_seconds=5)
    assert len(long_only) == 3 and report.filtered == {"under 5 s": 1}


def test_corrupt_and_truncated_records_are_counted_and_the_rest_is_read(tmp_path: Path) -> None:
    good = tmp_path / "eval" / "aa.tfrecord"
    bad = tmp_path / "eval" / "bb.tfrecord"
    cut = tmp_path / "eval" / "cc.tfrecord"
    write_records(good, make_segments(10, split="", seed=1))
    write_records(bad, make_segments(10, split="", seed=2, start=100))
    write_records(cut, make_segments(10, split="", seed=3, start=200))
    corrupt_middle(bad)
    truncate(cut)
    got, report = read([tmp_path])
    assert report.corrupt_records == 2
    assert sorted(Path(p).name for p in report.damaged_files) == ["bb.tfrecord", "cc.tfrecord"]
    assert 10 + 2 <= len(got) < 30  # all of the good file, the readable head of the others
    assert "2 corrupt records in 2 files" in report.summary()


def test_truncated_tarball_keeps_what_was_read(layout: Path, tmp_path: Path) -> None:
    tarball = make_tarball(layout.parent, tmp_path / "features.tar.gz")
    truncate(tarball, 0.7)
    got, report = read([tarball])
    assert 0 < len(got) < 90
    assert any("truncated" in name for name in report.damaged_files)


def test_not_a_tfrecord_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.tfrecord"
    bogus.write_text("this is not a TFRecord file at all\n" * 10)
    assert not looks_like_tfrecord(bogus)
    with pytest.raises(DataError, match="notes.tfrecord is not a TFRecord file"):
        read([bogus])
    with pytest.raises(DataError, match="no such file"):
        read([tmp_path / "missing"])
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="no .tfrecord files"):
        read([tmp_path / "empty_dir"])
    fake_tar = tmp_path / "features.tar.gz"
    fake_tar.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="not a readable tarball"):
        read([fake_tar])
