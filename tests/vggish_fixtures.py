"""VGGish test resources: a random-weight checkpoint in the official layout, PCA files, embedders, test signals.

The helpers cache at module level so the 289 MB checkpoint is written once and each model loaded once per run,
however many test modules wrap them in fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from musrec.embedding.local import LocalEmbedder
from musrec.vggish.checkpoint import write_random_checkpoint, write_random_pca_params
from musrec.vggish.model import read_checkpoint

RATE = 16000
CHECKPOINT_SEED = 0
PCA_SEED = 0

_cache: dict[str, Any] = {}


@dataclass(frozen=True)
class VggishFiles:
    checkpoint: Path  # V1 single file, as Google's vggish_model.ckpt
    pca_column: Path  # pca_means [128, 1], as Google's file
    pca_flat: Path  # pca_means [128], the same values


def shared_vggish_files(tmp_path_factory: pytest.TempPathFactory) -> VggishFiles:
    """Random-weight VGGish files in the official layouts, written once per run."""
    if "files" not in _cache:
        root = tmp_path_factory.mktemp("vggish_files")
        _cache["files"] = VggishFiles(
            checkpoint=write_random_checkpoint(root / "vggish_model.ckpt", seed=CHECKPOINT_SEED),
            pca_column=write_random_pca_params(root / "pca_column.npz", seed=PCA_SEED),
            pca_flat=write_random_pca_params(root / "pca_flat.npz", seed=PCA_SEED, means_shape="flat"),
        )
    files: VggishFiles = _cache["files"]
    return files


def shared_embedder(tmp_path_factory: pytest.TempPathFactory, *, relu: bool = False) -> LocalEmbedder:
    """A warmed-up LocalEmbedder on the shared files, one per ``relu`` setting per run."""
    key = f"embedder-relu={relu}"
    if key not in _cache:
        files = shared_vggish_files(tmp_path_factory)
        embedder = LocalEmbedder(files.checkpoint, files.pca_column, relu=relu)
        embedder.warm_up()
        _cache[key] = embedder
    embedder_: LocalEmbedder = _cache[key]
    return embedder_


def shared_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, npt.NDArray[np.float32]]:
    """The shared checkpoint's weights as numpy arrays, read back from the file."""
    if "weights" not in _cache:
        _cache["weights"] = read_checkpoint(shared_vggish_files(tmp_path_factory).checkpoint)
    weights: dict[str, npt.NDArray[np.float32]] = _cache["weights"]
    return weights


def tone(freq_hz: float, seconds: float, *, rate: int = RATE, amplitude: float = 0.5) -> npt.NDArray[np.float64]:
    t = np.arange(int(round(seconds * rate))) / rate
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def music_like(seconds: float, *, rate: int = RATE, seed: int = 0) -> npt.NDArray[np.float64]:
    """A changing signal: a few notes, a sweep and a little noise, so successive examples differ."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    notes = 220.0 * 2 ** (np.floor(t * 2) % 12 / 12)  # a new semitone every half second
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(notes) / rate)
    x += 0.1 * np.sin(2 * np.pi * (300 + 150 * t) * t)
    x += 0.02 * rng.standard_normal(len(t))
    return x


def distinct_clip(i: int, seconds: float) -> npt.NDArray[np.float64]:
    """Clips that differ in register, rhythm and timbre, so even a random-weight network tells them apart."""
    t = np.arange(int(seconds * RATE)) / RATE
    base = 110.0 * 2 ** (i * 0.75)
    notes = base * 2 ** ((np.floor(t * (2 + i)) % 5) * 2 / 12)
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(notes) / RATE) + 0.15 * np.sin(2 * np.pi * base * (3 + i % 3) * t)
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * (0.5 + i) * t) ** 2
    return x + 0.01 * np.random.default_rng(i).standard_normal(len(t))
