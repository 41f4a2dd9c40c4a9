"""AudioSet's record schema in protobuf wire format, encoded without TensorFlow's message classes.

A record is a ``tf.train.SequenceExample`` (field numbers from tensorflow/core/example/*.proto)::

    SequenceExample { 1: context Features, 2: feature_lists FeatureLists }
    Features        { 1: map<string, Feature> }              FeatureLists { 1: map<string, FeatureList> }
    Feature         { oneof: 1 bytes_list, 2 float_list, 3 int64_list }, each { 1: repeated value }
    FeatureList     { 1: repeated Feature }

Building a message object per record costs far more than writing its bytes, and generating a full-size,
AudioSet-shaped ``features.tar.gz`` (two million records) for benchmarks should not take an hour. :func:`encode`
writes exactly the bytes that protobuf's deterministic serialisation of the same message gives (map entries sorted
by key), so a test compares it with TensorFlow's byte for byte, and :func:`write_tfrecord` frames the records with
TensorFlow's own writer (lengths and masked CRC32C checksums). Parsing a record stays with TensorFlow's protobuf
classes (:mod:`musrec.audioset.records`), which are faster than any pure-Python reading of the wire format.

:func:`read_tfrecord` reads the frames without TensorFlow (whose ``tf_record_iterator`` is deprecated): each record
is a little-endian u64 length, the masked CRC32C of those 8 bytes, the data, and the masked CRC32C of the data. Both
checksums are verified (``google-crc32c``, in C), as TensorFlow's reader does, so a damaged or cut file is told.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import google_crc32c
import numpy as np
import numpy.typing as npt

from musrec.vggish.postprocess import EMBEDDING_SIZE

VIDEO_ID, START, END, LABELS = "video_id", "start_time_seconds", "end_time_seconds", "labels"
EMBEDDING = "audio_embedding"

_LENGTH = 2  # wire type of length-delimited fields
_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = 1, 2, 3  # Feature's oneof field numbers
_FLOAT = struct.Struct("<f")
_MASK64 = (1 << 64) - 1
_LENGTH_HEADER = struct.Struct("<QI")  # a record's length and the masked CRC32C of its 8 bytes
_CRC = struct.Struct("<I")
HEADER_SIZE = _LENGTH_HEADER.size
_BLOCK = 1 << 22  # bytes read at once; AudioSet's shards are about 200 KB each
_CRC_MASK_DELTA = 0xA282EAD8  # TensorFlow's (and LevelDB's) mask: a CRC of data holding CRCs stays meaningful


def _varint(value: int) -> bytes:
    value &= _MASK64  # negative int64 values take ten bytes, as two's complement
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [_varint(i) for i in range(1024)]


def _field(number: int, payload: bytes) -> bytes:
    n = len(payload)
    return _SMALL_VARINTS[number << 3 | _LENGTH] + (_SMALL_VARINTS[n] if n < 1024 else _varint(n)) + payload


# One frame of the feature list: Feature { bytes_list { value: <128 bytes> } }, all but the 128 bytes.
FRAME_HEADER = _field(1, _field(_BYTES_LIST, _field(1, bytes(EMBEDDING_SIZE))))[:-EMBEDDING_SIZE]
FRAME_SIZE = len(FRAME_HEADER) + EMBEDDING_SIZE


def frame_rows(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """[..., n, 128] rows as [..., n, FRAME_SIZE] feature-list frames: ``encode`` takes a slice of this."""
    header = np.frombuffer(FRAME_HEADER, dtype=np.uint8)
    out = np.empty((*rows.shape[:-1], FRAME_SIZE), dtype=np.uint8)
    out[..., : len(FRAME_HEADER)] = header
    out[..., len(FRAME_HEADER) :] = rows
    return out


def _feature(kind: int, values: bytes) -> bytes:
    return _field(kind, _field(1, values) if values else b"")


def encode(video_id: str, start_s: float, end_s: float, labels: Sequence[int], frames: npt.NDArray[np.uint8]) -> bytes:
    """One record's bytes; ``frames`` are ``frame_rows(rows)`` (so a batch of segments is framed at once)."""
    label_bytes = b"".join(_SMALL_VARINTS[i] if 0 <= i < 1024 else _varint(i) for i in labels)
    entries = (
        (END, _feature(_FLOAT_LIST, _FLOAT.pack(end_s))),
        (LABELS, _feature(_INT64_LIST, label_bytes)),
        (START, _feature(_FLOAT_LIST, _FLOAT.pack(start_s))),
        (VIDEO_ID, _feature(_BYTES_LIST, video_id.encode())),
    )  # sorted by key, as deterministic serialisation orders map entries
    context = b"".join(_field(1, _field(1, key.encode()) + _field(2, value)) for key, value in entries)
    feature_list = _field(1, _field(1, EMBEDDING.encode()) + _field(2, frames.tobytes()))
    return _field(1, context) + _field(2, feature_list)


def write_tfrecord(path: Path, records: Iterable[bytes]) -> int:
    """Write encoded records to a TFRecord file with TensorFlow's writer; returns the count."""
    from musrec.vggish.tfutil import import_tensorflow

    tf = import_tensorflow()
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
            n += 1
    return n


class DamagedRecordError(Exception):
    """A record whose checksum does not match, or a file that ends inside a record: nothing after it can be read
    (the length of the next record is not known)."""


def _mask(crc: int) -> int:
    """TensorFlow's mask of a CRC32C: rotated right by 15 bits plus a constant."""
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TensorFlow's masked CRC32C of ``data``."""
    return _mask(google_crc32c.value(data))


def header_is_valid(header: bytes) -> bool:
    """True when ``header`` is a whole record header whose length checksum matches."""
    if len(header) != HEADER_SIZE:
        return False
    return masked_crc32c(header[:8]) == _LENGTH_HEADER.unpack(header)[1]


def read_tfrecord(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file, in order, each checked against both its checksums.

    Raises DamagedRecordError at the first record whose length or data checksum fails or that the file cuts short;
    the records before it have been yielded. OSError if the file cannot be read.

    The file is read in blocks and records are cut from them (not three reads a record): that is what makes it as
    fast as TensorFlow's C++ reader (bench/tfrecord_bench.py).
    """
    crc_of = google_crc32c.value
    with path.open("rb") as f:
        buf, pos = b"", 0
        while True:
            if len(buf) - pos < HEADER_SIZE:
                buf, pos = buf[pos:] + f.read(max(_BLOCK, HEADER_SIZE)), 0
                if not buf:
                    return
                if len(buf) < HEADER_SIZE:
                    raise DamagedRecordError(f"{path.name}: the last record header is cut short")
            length, length_crc = _LENGTH_HEADER.unpack_from(buf, pos)
            if _mask(crc_of(buf[pos : pos + 8])) != length_crc:
                raise DamagedRecordError(f"{path.name}: a record length whose checksum does not match")
            end = pos + HEADER_SIZE + length + _CRC.size
            if end > len(buf):
                buf, end, pos = buf[pos:] + f.read(max(_BLOCK, end - len(buf))), end - pos, 0
                if end > len(buf):
                    raise DamagedRecordError(f"{path.name}: the last record is cut short")
            data = buf[pos + HEADER_SIZE : end - _CRC.size]
            if _mask(crc_of(data)) != _CRC.unpack_from(buf, end - _CRC.size)[0]:
                raise DamagedRecordError(f"{path.name}: a record whose data checksum does not match")
            pos = end
            yield data
