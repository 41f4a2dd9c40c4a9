"""AudioSet-shaped test data: TFRecords in the release's exact schema and layout, written with TensorFlow."""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from musrec.audioset.records import Segment, write_records
from musrec.audioset.synthetic import SyntheticAudioSet, SyntheticSpec

ROOT = "audioset_v1_embeddings"
GUITAR, JAZZ, SPEECH, DOG = 140, 235, 0, 74  # label indices in class_labels_indices.csv


def make_segments(count: int, *, split: str, seed: int = 0, start: int = 0) -> list[Segment]:
    gen = SyntheticAudioSet(SyntheticSpec(clusters=16, seed=seed))
    out = []
    for i, seg in enumerate(gen.segments(count, start=start, split=split)):
        # Half music (Guitar or Jazz), half not (Speech or Dog): deterministic so tests can count.
        labels = (GUITAR,) if i % 4 == 0 else (JAZZ,) if i % 4 == 1 else (SPEECH,) if i % 4 == 2 else (DOG,)
        out.append(replace(seg, labels=labels))
    return out


def write_layout(root: Path, segments_by_split: dict[str, Sequence[Segment]]) -> Path:
    """``root/audioset_v1_embeddings/{split}/XX.tfrecord``, sharded by the first two characters of the video id."""
    base = root / ROOT
    for split, segments in segments_by_split.items():
        shards: dict[str, list[Segment]] = {}
        for seg in segments:
            shards.setdefault(seg.video_id[:2], []).append(seg)
        for prefix, shard in sorted(shards.items()):
            write_records(base / split / f"{prefix}.tfrecord", shard)
    return base


def make_tarball(root: Path, out: Path) -> Path:
    """``features.tar.gz`` holding ``audioset_v1_embeddings/...`` as the release does."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(root / ROOT, arcname=ROOT)
    return out


def short_segment(video_id: str, rows: int, *, split: str = "eval", labels: tuple[int, ...] = (GUITAR,)) -> Segment:
    data = np.random.default_rng(rows).integers(0, 256, size=(rows, 128), dtype=np.uint8)
    return Segment(video_id=video_id, start_s=0.0, end_s=float(rows), labels=labels, split=split, rows=data)


def corrupt_middle(path: Path) -> None:
    """Flip bytes in the middle of a TFRecord file so a record fails its checksum."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, keep_fraction: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
