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
TensorFlow's own writer (lengths and masked CRC32C checksums). Reading stays with TensorFlow's parser
(:mod:`musrec.audioset.records`), which is faster than any pure-Python reading of the wire format.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from musrec.vggish.postprocess import EMBEDDING_SIZE

VIDEO_ID, START, END, LABELS = "video_id", "start_time_seconds", "end_time_seconds", "labels"
EMBEDDING = "audio_embedding"

_LENGTH = 2  # wire type of length-delimited fields
_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = 1, 2, 3  # Feature's oneof field numbers
_FLOAT = struct.Struct("<f")
_MASK64 = (1 << 64) - 1


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
