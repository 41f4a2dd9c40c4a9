"""The data the full-size benchmark runs on: an AudioSet-shaped ``features.tar.gz``, VGGish files, a config, a clip.

The tarball has the release's exact layout and schema: ``audioset_v1_embeddings/{bal_train,eval,unbal_train}/``
``XX.tfrecord`` sharded by the first two characters of the video id, ~22k / ~20k / the rest of the segments
(REFERENCE.md section 5), SequenceExample records with 10 embedding rows each (about 1% fewer, as where a video
ended), from :class:`musrec.audioset.synthetic.SyntheticAudioSet`. Records are encoded by
:mod:`musrec.audioset.tfrecord` (tested byte for byte against TensorFlow's serialisation) and framed by
TensorFlow's writer;
gzip runs in a second process, so generating two million segments takes a few minutes.
"""

from __future__ import annotations

import subprocess
import tarfile
import time
import wave
from pathlib import Path
from typing import Any

FULL_COUNT = 2_000_000
REAL_SPLITS = {"bal_train": 22_160, "eval": 20_371}  # the rest is unbal_train (REFERENCE.md section 5)
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"  # YouTube ids
SHORT_FRACTION = 0.01  # segments with fewer than 10 rows (the video ended)
GZIP_LEVEL = 6  # gzip's default
GENERATOR_VERSION = 1  # bump when the generated data changes: a cached tarball is reused only on a match


def split_sizes(count: int) -> dict[str, int]:
    """The release's split sizes at 2M segments; smaller counts scale bal_train and eval down in proportion."""
    scale = min(1.0, count / FULL_COUNT)
    sizes = {split: round(n * scale) for split, n in REAL_SPLITS.items()}
    return {**sizes, "unbal_train": count - sum(sizes.values())}


def generate(out: Path, count: int, seed: int) -> dict[str, Any]:
    """Write ``out`` (features.tar.gz), streaming: one shard at a time, gzip in a second process."""
    import numpy as np

    from musrec.audioset.synthetic import SyntheticAudioSet, SyntheticSpec
    from musrec.audioset.tfrecord import encode, frame_rows, write_tfrecord

    started = time.perf_counter()
    gen = SyntheticAudioSet(SyntheticSpec(seed=seed))
    rng = np.random.default_rng((seed, 7))
    prefixes = [a + b for a in ID_ALPHABET for b in ID_ALPHABET]
    part = out.with_name(out.name + ".part")
    shard = out.with_name("shard.tmp")
    files: dict[str, int] = {}
    query: dict[str, Any] = {}
    total = short = 0
    with part.open("wb") as sink:
        gz = subprocess.Popen(["gzip", f"-{GZIP_LEVEL}", "-c"], stdin=subprocess.PIPE, stdout=sink)
        assert gz.stdin is not None
        with tarfile.open(fileobj=gz.stdin, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            for split, n in split_sizes(count).items():
                # Uniform two-character prefixes: with ~20k segments about 4,070 of the 4,096 shards are non-empty,
                # as in the release.
                per_shard = rng.multinomial(n, np.full(len(prefixes), 1 / len(prefixes)))
                files[split] = int(np.count_nonzero(per_shard))
                for prefix, m in zip(prefixes, per_shard.tolist(), strict=True):
                    if m == 0:
                        continue
                    rows, cluster = gen.rows(total, m)
                    frames = frame_rows(rows)
                    tails = rng.choice(len(ID_ALPHABET), size=(m, 2))
                    offsets = 10.0 * rng.integers(0, 30, size=m)
                    lengths = np.where(rng.random(m) < SHORT_FRACTION, rng.integers(1, 10, size=m), 10)
                    records = []
                    for i in range(m):
                        video_id = f"{prefix}{ID_ALPHABET[tails[i, 0]]}{ID_ALPHABET[tails[i, 1]]}{total + i:07d}"
                        k = int(lengths[i])
                        labels = gen.cluster_labels[int(cluster[i])]
                        records.append(encode(video_id, offsets[i], offsets[i] + k, labels, frames[i, :k]))
                        if not query and split == "eval" and k == 10:
                            query = {"video_id": video_id, "start_s": float(offsets[i]), "labels": list(labels)}
                    short += int(np.count_nonzero(lengths < 10))
                    total += m
                    write_tfrecord(shard, records)
                    tar.add(shard, arcname=f"audioset_v1_embeddings/{split}/{prefix}.tfrecord")
        gz.stdin.close()
        if gz.wait() != 0:
            raise SystemExit("gzip failed")
    shard.unlink(missing_ok=True)
    part.rename(out)
    return {
        "records": total,
        "short": short,
        "files": files,
        "bytes": out.stat().st_size,
        "query": query,
        "generate_s": round(time.perf_counter() - started, 1),
    }


def write_models(directory: Path) -> dict[str, str]:
    """Random-weight VGGish files under the official names, unless they are there already."""
    from musrec.setup.models import CHECKPOINT_NAME, PCA_NAME
    from musrec.vggish.checkpoint import write_random_checkpoint, write_random_pca_params

    checkpoint, pca = directory / CHECKPOINT_NAME, directory / PCA_NAME
    if not checkpoint.is_file():
        write_random_checkpoint(checkpoint, seed=0)
    if not pca.is_file():
        write_random_pca_params(pca, seed=0)
    return {"checkpoint": str(checkpoint), "pca_params": str(pca)}


def write_query_wav(path: Path, *, seconds: float = 12.0, rate: int = 44_100) -> None:
    """A stereo 44.1 kHz clip (so the query is resampled, as a user's file is): notes, a sweep, a little noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    notes = 220.0 * 2 ** (np.floor(t * 2) % 12 / 12)
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(notes) / rate) + 0.1 * np.sin(2 * np.pi * (300 + 150 * t) * t)
    x += 0.02 * rng.standard_normal(len(t))
    pcm = (np.stack([x, 0.8 * x], axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def write_config(path: Path, data_dir: Path) -> None:
    """Defaults everywhere, except the data directory and no sha512 checks: the model files are not Google's."""
    path.write_text(
        f'[data]\ndir = "{data_dir}"\n\n[setup]\ncheckpoint_sha512 = ""\npca_sha512 = ""\n', encoding="utf-8"
    )
