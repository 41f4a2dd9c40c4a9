"""Reading (and writing) AudioSet's released feature TFRecords.

Each record is a ``tf.train.SequenceExample``, read with the class of musrec.audioset.example (not TensorFlow's):
context ``video_id`` (bytes), ``start_time_seconds`` and ``end_time_seconds`` (float), ``labels`` (int64 indices into
the label CSV); feature list ``audio_embedding`` with one bytes feature of 128 uint8 values per second, usually 10.
Sources may be single files, directories in the ``audioset_v1_embeddings/{bal_train,eval,unbal_train}`` layout, or
``features.tar.gz`` read as a stream (one shard at a time, never extracted whole).

Damaged data does not stop a build: a record that fails its checksum or does not parse is counted, the rest of a
truncated file is skipped, and :class:`IngestReport` lists what was lost. A file that is not a TFRecord at all (its
first header fails the checksum) is an error, since it usually means a wrong path.
"""

from __future__ import annotations

import gzip
import logging
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

import numpy as np
import numpy.typing as npt

from musrec.audioset.example import sequence_example
from musrec.audioset.labels import Labels
from musrec.audioset.representation import SEGMENT_ROWS, fit_rows
from musrec.audioset.tfrecord import HEADER_SIZE, DamagedRecordError, header_is_valid, read_tfrecord
from musrec.errors import DataError, is_disk_full
from musrec.progress import human_bytes
from musrec.vggish.postprocess import EMBEDDING_SIZE

log = logging.getLogger(__name__)

TFRECORD_SUFFIX = ".tfrecord"
MAX_LABEL = 0xFFFF  # an index keeps label indices in 16 bits (AudioSet has 527): a record with a larger one is damaged
_DRAIN = 1 << 20  # bytes read at once past a tarball's end marker


@dataclass(frozen=True)
class Segment:
    """One AudioSet segment: ``rows`` is [n, 128] uint8, one row per second (n is usually 10)."""

    video_id: str
    start_s: float
    end_s: float
    labels: tuple[int, ...]
    split: str
    rows: npt.NDArray[np.uint8]


SPLITS = ("bal_train", "eval", "unbal_train")  # the release's directories
SHORT_SEGMENT_POLICIES = ("pad", "skip")


@dataclass(frozen=True)
class SegmentFilter:
    """Which segments to keep. ``short_segments``: ``pad`` repeats a short run of rows to 10, ``skip`` drops it."""

    splits: frozenset[str] = frozenset(SPLITS)
    music_only: bool = False
    include_labels: frozenset[int] = frozenset()
    exclude_labels: frozenset[int] = frozenset()
    min_seconds: int = 1
    short_segments: str = "pad"


@dataclass
class IngestReport:
    """What a pass over the sources read, kept and lost."""

    files: int = 0
    records: int = 0
    kept: int = 0
    padded: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    corrupt_records: int = 0
    damaged_files: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)  # segments kept, by split ("" when the path names none)
    truncated: list[str] = field(default_factory=list)  # tarballs that end early: what was read, what is lost
    # TFRecord files in tarballs read to their end (gzip checksum included), by split ("other": none named): what
    # ``musrec setup`` records as verified while it builds.
    archived: dict[str, int] = field(default_factory=dict)
    archive_errors: list[str] = field(default_factory=list)  # why a tarball could not be read to its end

    def count_filtered(self, reason: str) -> None:
        self.filtered[reason] = self.filtered.get(reason, 0) + 1

    def summary(self) -> str:
        parts = [f"{self.files} files", f"{self.records} records", f"{self.kept} kept"]
        if self.padded:
            parts.append(f"{self.padded} short segments repeat-padded to {SEGMENT_ROWS} s")
        for reason, n in sorted(self.filtered.items()):
            parts.append(f"{n} dropped ({reason})")
        if self.corrupt_records:
            parts.append(f"{self.corrupt_records} corrupt records in {len(self.damaged_files)} files")
        return ", ".join(parts)


class DamagedArchiveError(DataError):
    """A build's tarball ends early or is damaged: nothing is built from part of an archive. ``reasons`` are the
    archive's or the decompressor's own words, one a tarball."""

    def __init__(self, message: str, *, reasons: Sequence[str]) -> None:
        super().__init__(message)
        self.reasons = tuple(reasons)


def split_of(path: PurePosixPath | Path) -> str:
    """The split named by a path's parent directory, or "" when the path does not say."""
    parent = path.parent.name
    return parent if parent in SPLITS else ""


# ---- finding record files -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RecordFile:
    name: str  # for reports: a path, or tarball:member
    path: Path  # a readable file (a temporary copy for tar members)
    split: str


def iter_record_files(
    sources: Sequence[Path], *, splits: frozenset[str], report: IngestReport
) -> Iterator[_RecordFile]:
    """Every TFRecord file under ``sources`` whose split is wanted (files whose split is unknown are always read)."""
    for source in sources:
        if not source.exists():
            raise DataError(f"no such file or directory: {source}")
        if source.is_dir():
            files = sorted(p for p in source.rglob(f"*{TFRECORD_SUFFIX}") if p.is_file())
            if not files:
                raise DataError(f"no {TFRECORD_SUFFIX} files under {source}")
            for path in files:
                split = split_of(path)
                if split and split not in splits:
                    continue
                yield _RecordFile(str(path), path, split)
        elif source.name.endswith((".tar.gz", ".tgz", ".tar")):
            yield from _iter_tar(source, splits=splits, report=report)
        else:
            split = split_of(source)
            if not split or split in splits:
                yield _RecordFile(str(source), source, split)


def _iter_tar(path: Path, *, splits: frozenset[str], report: IngestReport) -> Iterator[_RecordFile]:
    """Stream a (gzipped) tarball: each wanted shard is copied to a temporary file, read, then deleted.

    A tarball that ends early (a truncated download) or is damaged mid-way keeps what was read before; what was
    read and what was lost are added to ``report.truncated``. A gzipped tarball is read to the end of its gzip
    stream, whose CRC32 covers every byte (tarfile's own stream stops at the archive's end marker and checks no
    CRC), so a whole read verifies it as ``musrec setup``'s check did: its TFRecord files go to ``report.archived``.
    """
    found = False
    records_before = report.records
    shards: dict[str, int] = {}  # shards read in full, by split
    archived: dict[str, int] = {}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="musrec-shard-") as tmp,
            path.open("rb") as raw,
            _decompressed(raw) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            for member in tar:
                if not member.isfile() or not member.name.endswith(TFRECORD_SUFFIX):
                    continue
                found = True
                name = PurePosixPath(member.name)
                split = split_of(name)
                archived[split or "other"] = archived.get(split or "other", 0) + 1
                if split and split not in splits:
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                shard = Path(tmp) / "shard.tfrecord"
                with src, shard.open("wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                yield _RecordFile(f"{path.name}:{member.name}", shard, split)
                shards[split or "other"] = shards.get(split or "other", 0) + 1
            # Past the end-of-archive marker to the end of the stream: the gzip trailer's CRC and length.
            while stream.read(_DRAIN):
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        if isinstance(err, OSError) and is_disk_full(err):
            raise  # writing the shard's temporary copy, not reading the tarball
        if not found:
            raise DataError(f"{path.name} is not a readable tarball: {err}") from None
        # A truncated download: what was read stands, the loss is reported.
        log.warning("tarball %s is truncated or damaged: %s", path, err)
        report.damaged_files.append(f"{path.name} (truncated)")
        report.truncated.append(_truncation(path, err, shards, report.records - records_before))
        report.archive_errors.append(str(err) or type(err).__name__)
        return
    if not found:
        raise DataError(f"{path.name} contains no {TFRECORD_SUFFIX} files")
    for split, n in archived.items():
        report.archived[split] = report.archived.get(split, 0) + n


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """A tarball's bytes: through gzip (which checks the stream's CRC32 and length at its end) when it is gzipped,
    else as they are (an uncompressed .tar)."""
    gzipped = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb")) if gzipped else raw


def _truncation(path: Path, err: BaseException, shards: dict[str, int], records: int) -> str:
    """What a tarball that ends early gave, and what it lost, in one sentence."""
    by_split = ", ".join(f"{split} {n:,}" for split, n in sorted(shards.items()))
    read = (
        f"{sum(shards.values()):,} whole TFRecord files ({by_split}; {records:,} records)"
        if shards
        else "no whole file"
    )
    return (
        f"{path.name} ends early or is damaged ({err or type(err).__name__}) after {read}: "
        f"whatever followed in the archive is lost ({human_bytes(path.stat().st_size)} on disk; AudioSet's "
        "features.tar.gz is 2.4 GB)"
    )


# ---- reading records ----------------------------------------------------------------------------------------


def looks_like_tfrecord(path: Path) -> bool:
    """True when the file is empty or its first record header carries a valid checksum."""
    with path.open("rb") as f:
        header = f.read(HEADER_SIZE)
    return not header or header_is_valid(header)


def read_segments(
    sources: Sequence[Path], *, labels: Labels, filt: SegmentFilter, report: IngestReport | None = None
) -> Iterator[Segment]:
    """Yield the segments of ``sources`` that pass ``filt``, with rows fitted to 10 (see SegmentFilter)."""
    report = report if report is not None else IngestReport()
    for source in sources:
        if not source.exists():
            raise DataError(f"no such file or directory: {source}")
    for rf in iter_record_files(sources, splits=filt.splits, report=report):
        if not looks_like_tfrecord(rf.path):
            raise DataError(f"{rf.name} is not a TFRecord file")
        parse = _parser()

        report.files += 1
        damaged = False
        records = read_tfrecord(rf.path)
        while True:
            try:
                raw = next(records)
            except StopIteration:
                break
            except DamagedRecordError:
                # A checksum failure or truncation: no reader can resynchronise inside a file, so the rest is lost.
                report.corrupt_records += 1
                damaged = True
                break
            report.records += 1
            segment = parse(raw, rf.split)
            if segment is None:
                report.corrupt_records += 1
                damaged = True
                continue
            kept = _filter(segment, labels=labels, filt=filt, report=report)
            if kept is not None:
                report.kept += 1
                report.splits[kept.split] = report.splits.get(kept.split, 0) + 1
                yield kept
        if damaged:
            report.damaged_files.append(rf.name)
            log.warning("%s: corrupt or truncated records skipped", rf.name)


def _parser() -> Callable[[bytes, str], Segment | None]:
    from google.protobuf.message import DecodeError

    from_string = sequence_example().FromString

    def parse(raw: bytes, split: str) -> Segment | None:
        try:
            example = from_string(raw)
            ctx = example.context.feature
            video_id = ctx["video_id"].bytes_list.value[0].decode("utf-8")
            start = float(ctx["start_time_seconds"].float_list.value[0])
            end = float(ctx["end_time_seconds"].float_list.value[0])
            label_ids = tuple(ctx["labels"].int64_list.value)
            blobs = [f.bytes_list.value[0] for f in example.feature_lists.feature_list["audio_embedding"].feature]
        except (DecodeError, IndexError, KeyError, UnicodeDecodeError):
            return None
        if any(len(b) != EMBEDDING_SIZE for b in blobs) or any(not 0 <= i <= MAX_LABEL for i in label_ids):
            return None
        rows = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), EMBEDDING_SIZE)
        return Segment(video_id=video_id, start_s=start, end_s=end, labels=label_ids, split=split, rows=rows)

    return parse


def _filter(segment: Segment, *, labels: Labels, filt: SegmentFilter, report: IngestReport) -> Segment | None:
    n = len(segment.rows)
    if n < filt.min_seconds or n == 0:
        report.count_filtered(f"under {filt.min_seconds} s")
        return None
    if filt.music_only and not labels.is_music(segment.labels):
        report.count_filtered("not music")
        return None
    if filt.include_labels and not filt.include_labels.intersection(segment.labels):
        report.count_filtered("no included label")
        return None
    if filt.exclude_labels.intersection(segment.labels):
        report.count_filtered("excluded label")
        return None
    if n < SEGMENT_ROWS:
        if filt.short_segments == "skip":
            report.count_filtered(f"under {SEGMENT_ROWS} s")
            return None
        report.padded += 1
    if n != SEGMENT_ROWS:
        segment = Segment(
            video_id=segment.video_id,
            start_s=segment.start_s,
            end_s=segment.end_s,
            labels=segment.labels,
            split=segment.split,
            rows=fit_rows(segment.rows),
        )
    return segment


# ---- writing records (tests, benchmarks, exporting a subset) ------------------------------------------------


def segment_to_record(segment: Segment) -> bytes:
    """Serialise a segment in AudioSet's exact SequenceExample schema, with TensorFlow's own classes (what the
    reader is tested against)."""
    from musrec.vggish.tfutil import import_tensorflow

    tf = import_tensorflow()

    rows = np.asarray(segment.rows, dtype=np.uint8)
    context = tf.train.Features(
        feature={
            "video_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[segment.video_id.encode()])),
            "start_time_seconds": tf.train.Feature(float_list=tf.train.FloatList(value=[segment.start_s])),
            "end_time_seconds": tf.train.Feature(float_list=tf.train.FloatList(value=[segment.end_s])),
            "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=list(segment.labels))),
        }
    )
    frames = [tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.tobytes()])) for row in rows]
    feature_lists = tf.train.FeatureLists(feature_list={"audio_embedding": tf.train.FeatureList(feature=frames)})
    return tf.train.SequenceExample(context=context, feature_lists=feature_lists).SerializeToString()


def write_records(path: Path, segments: Iterable[Segment]) -> int:
    """Write segments to a TFRecord file with TensorFlow's writer; returns the count."""
    from musrec.audioset.tfrecord import write_tfrecord

    return write_tfrecord(path, (segment_to_record(segment) for segment in segments))
