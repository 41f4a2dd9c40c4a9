"""The fast record writer against TensorFlow's: the same bytes, the same parse, the same segments read back; the
reader's own SequenceExample against TensorFlow's, and a build that reads records without TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from audioset_fixtures import make_segments, short_segment

from musrec.audioset.example import sequence_example
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

CHILD_WAIT_S = 300.0  # bound on a musrec process a test starts (a hang guard, not a limit on speed)


def fast_record(segment: Segment) -> bytes:
    return encode(segment.video_id, segment.start_s, segment.end_s, segment.labels, frame_rows(segment.rows))


@pytest.fixture(scope="module")
def segments() -> list[Segment]:
    base = make_segments(4, split="", seed=3)
    return [
        *base,
        replace(base[0], video_id="--PJHxphWEs", labels=()),  # no labels: an empty int64 list
        replace(base[1], labels=(0, 127, 128, 526, 65_535)),  # one-, two- and three-byte varints, the largest kept
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


def test_our_sequence_example_parses_as_tensorflows(segments: list[Segment]) -> None:
    # The class musrec reads records with, against TensorFlow's: the same fields from the same bytes, and the same
    # bytes back (records written by TensorFlow's own classes, and by the fast writer).
    ours = sequence_example()
    tf = import_tensorflow()
    for segment in segments:
        for record in (segment_to_record(segment), fast_record(segment)):
            theirs = tf.train.SequenceExample.FromString(record)
            mine = ours.FromString(record)
            assert mine.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
            context = mine.context.feature
            assert context["video_id"].bytes_list.value[0].decode() == segment.video_id
            assert tuple(context["labels"].int64_list.value) == segment.labels
            frames = mine.feature_lists.feature_list["audio_embedding"].feature
            assert b"".join(f.bytes_list.value[0] for f in frames) == segment.rows.tobytes()
    # A field TensorFlow's class has that a record never uses reads the same way (the oneof: one kind at a time).
    both = ours.FromString(fast_record(segments[0])).context.feature["start_time_seconds"]
    assert both.WhichOneof("kind") == "float_list"


def test_a_label_index_beyond_16_bits_is_a_damaged_record(segments: list[Segment], tmp_path: Path) -> None:
    # AudioSet's are under 527; an index keeps them in 16 bits. Such a record is counted, the others read.
    odd = replace(segments[0], video_id="wideLabel01", labels=(3, 65_536))
    write_records(tmp_path / "eval" / "aa.tfrecord", [segments[1], odd, segments[2]])
    report = IngestReport()
    got = list(read_segments([tmp_path], labels=default_labels(), filt=SegmentFilter(), report=report))
    assert [s.video_id for s in got] == [segments[1].video_id, segments[2].video_id]
    assert report.corrupt_records == 1 and report.damaged_files == [str(tmp_path / "eval" / "aa.tfrecord")]


def test_building_an_index_does_not_import_tensorflow(tmp_path: Path) -> None:
    # issue 24's 2 GiB server: TensorFlow's libraries are about 600 MiB resident that reading records does not need.
    write_records(tmp_path / "features" / "eval" / "aa.tfrecord", make_segments(200, split="eval", seed=5))
    code = (
        "import sys\n"
        "from musrec.cli import main\n"
        f"code = main(['index', 'build', {str(tmp_path / 'features')!r}, '--out', {str(tmp_path / 'index')!r},\n"
        "             '--no-progress', '--min-seconds', '1'])\n"
        "print(code, 'tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CHILD_WAIT_S, env=env)
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout + done.stderr
    assert (tmp_path / "index").is_dir()
