"""The fast record writer against TensorFlow's: the same bytes, the same parse, the same segments read back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from audioset_fixtures import make_segments, short_segment

from musrec.audioset.labels import default_labels
from musrec.audioset.records import (
    IngestReport,
    Segment,
    SegmentFilter,
    read_segments,
    segment_to_record,
    write_records,
)
from musrec.audioset.tfrecord import (
    HEADER_SIZE,
    DamagedRecordError,
    encode,
    frame_rows,
    read_tfrecord,
    write_tfrecord,
)
from musrec.vggish.tfutil import import_tensorflow


def fast_record(segment: Segment) -> bytes:
    return encode(segment.video_id, segment.start_s, segment.end_s, segment.labels, frame_rows(segment.rows))


@pytest.fixture(scope="module")
def segments() -> list[Segment]:
    base = make_segments(4, split="", seed=3)
    return [
        *base,
        replace(base[0], video_id="--PJHxphWEs", labels=()),  # no labels: an empty int64 list
        replace(base[1], labels=(0, 127, 128, 526, 70_000)),  # one-, two- and three-byte varints
        replace(base[2], start_s=12.345, end_s=22.345),  # not exact in float32
        short_segment("shortAAAAA3", 3),
        short_segment("shortAAAAA1", 1),
    ]


def test_encoding_is_byte_identical_to_deterministic_serialisation(segments: list[Segment]) -> None:
    tf = import_tensorflow()
    for segment in segments:
        message = tf.train.SequenceExample.FromString(segment_to_record(segment))
        assert fast_record(segment) == message.SerializeToString(deterministic=True), segment.video_id


def test_encoding_parses_as_the_tensorflow_written_message(segments: list[Segment]) -> None:
    # TensorFlow's own serialisation orders map entries differently from run to run: compare parsed messages.
    tf = import_tensorflow()
    for segment in segments:
        fast = tf.train.SequenceExample.FromString(fast_record(segment))
        assert fast == tf.train.SequenceExample.FromString(segment_to_record(segment))


def test_files_read_back_the_same(segments: list[Segment], tmp_path: Path) -> None:
    write_records(tmp_path / "tf" / "eval" / "aa.tfrecord", segments)
    assert write_tfrecord(tmp_path / "fast" / "eval" / "aa.tfrecord", [fast_record(s) for s in segments]) == 9

    def read(root: Path) -> tuple[list[Segment], IngestReport]:
        report = IngestReport()
        got = list(read_segments([root], labels=default_labels(), filt=SegmentFilter(), report=report))
        return got, report

    (want, want_report), (got, got_report) = read(tmp_path / "tf"), read(tmp_path / "fast")
    assert got_report == want_report and got_report.corrupt_records == 0 and got_report.padded == 2
    for a, b in zip(want, got, strict=True):
        assert (a.video_id, a.start_s, a.end_s, a.labels) == (b.video_id, b.start_s, b.end_s, b.labels)
        assert a.split == b.split == "eval"
        np.testing.assert_array_equal(a.rows, b.rows)


def test_frames_of_a_batch_equal_frames_of_each_segment() -> None:
    rows = np.random.default_rng(0).integers(0, 256, size=(3, 10, 128), dtype=np.uint8)
    batch = frame_rows(rows)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], frame_rows(rows[i]))
        assert encode("x", 0.0, 10.0, (1,), batch[i, :4]) == encode("x", 0.0, 10.0, (1,), frame_rows(rows[i, :4]))


@pytest.mark.parametrize("block", [1 << 22, 7, 300], ids=["whole-file", "tiny-blocks", "records-across-blocks"])
def test_records_read_without_tensorflow_are_tensorflows_and_any_damage_is_told(
    segments: list[Segment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """issue 22: the reader that replaced the deprecated ``tf_record_iterator`` gives the records TensorFlow's writer
    framed, and refuses, as TensorFlow did, a flipped bit in any record's length, data or checksums, and a cut file;
    whether a record lies within one block read or across several."""
    monkeypatch.setattr("musrec.audioset.tfrecord._BLOCK", block)
    path = tmp_path / "framed.tfrecord"
    records = [fast_record(s) for s in segments]
    write_tfrecord(path, records)
    assert list(read_tfrecord(path)) == records
    whole = path.read_bytes()
    second = HEADER_SIZE + len(records[0]) + 4  # where the second record's header starts
    damaged = {
        "length": second + 2,
        "length checksum": second + 9,
        "data": second + HEADER_SIZE + 40,
        "data checksum": second + HEADER_SIZE + len(records[1]) + 1,
    }
    for what, offset in damaged.items():
        flipped = bytearray(whole)
        flipped[offset] ^= 0x10
        path.write_bytes(bytes(flipped))
        read: list[bytes] = []
        with pytest.raises(DamagedRecordError):
            read.extend(read_tfrecord(path))
        assert read == records[:1], what  # the record before the damage stands
    for cut in (second + 5, second + HEADER_SIZE + 3, second + HEADER_SIZE + len(records[1]) + 2):
        path.write_bytes(whole[:cut])
        read = []
        with pytest.raises(DamagedRecordError):
            read.extend(read_tfrecord(path))
        assert read == records[:1], cut
    path.write_bytes(b"")
    assert list(read_tfrecord(path)) == []
