"""VGGish's two files: what each looks like (so files given the wrong way round are named as such), and stand-ins
with random weights in the official layouts, for tests and offline trials.

A checkpoint (Google's ``vggish_model.ckpt``, a TF1 V1 single file, or a V2 ``.index``) ends with the footer magic
of TensorFlow's table format; the PCA file is an ``.npz``, a ZIP archive. :func:`check_model_files` tells them apart
by those bytes before either is loaded.

Google's weights cannot be fetched everywhere musrec runs (they are on no package registry), yet the loading code
should be exercised on real files. These writers produce a checkpoint under the official slim variable names and
shapes, in the official TF1 V1 single-file format by default, and a PCA file with the official keys. The random
scales are chosen so that log-mel input of ordinary audio gives quantised codes spread over 0..255 rather than
stuck at 0 or 255.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from musrec.errors import EmbedderError
from musrec.vggish.model import FC_LAYERS, SCOPE, VARIABLE_SHAPES
from musrec.vggish.postprocess import EMBEDDING_SIZE, NPZ_MAGIC, PCA_FILE_NAME

log = logging.getLogger(__name__)

CHECKPOINT_FORMATS: Final = ("v1", "v2")
MEANS_SHAPES: Final = ("column", "flat")
# Bias of every hidden layer: a little positive, so fewer ReLUs start dead.
HIDDEN_BIAS: Final = 0.01
# fc2 weights are scaled down from He's scale so the float embedding is of order one.
EMBEDDING_GAIN: Final = 0.2
# PCA output scale: whitened values mostly within the quantiser's [-2, 2].
PCA_GAIN: Final = 0.7
CHECKPOINT_FILE_NAME: Final = "vggish_model.ckpt"  # Google's name for the file
# The last 8 bytes of a TensorFlow table (a V1 checkpoint, a V2 checkpoint's .index): its magic number.
TABLE_MAGIC: Final = (0xDB4775248B80FB57).to_bytes(8, "little")


def file_kind(path: Path) -> str | None:
    """``"checkpoint"`` or ``"pca"`` by the file's own bytes (a V2 checkpoint by its prefix's ``.index``); None for
    anything else, including a missing file."""
    path = Path(path)
    index = path.with_name(path.name + ".index")
    if not path.is_file() and index.is_file():
        path = index
    try:
        with path.open("rb") as f:
            head = f.read(len(NPZ_MAGIC))
            if head == NPZ_MAGIC:
                return "pca"
            f.seek(0, 2)
            if f.tell() < len(TABLE_MAGIC):
                return None
            f.seek(-len(TABLE_MAGIC), 2)
            return "checkpoint" if f.read() == TABLE_MAGIC else None
    except OSError:
        return None


def check_model_files(checkpoint: Path, pca_params: Path) -> None:
    """EmbedderError, in one line, when the checkpoint and the PCA file are each given as the other, or one of them is
    the other's kind; anything else (missing, damaged) is left to the loaders, which name it."""
    checkpoint_kind, pca_kind = file_kind(checkpoint), file_kind(pca_params)
    if checkpoint_kind == "pca" and pca_kind == "checkpoint":
        raise EmbedderError(
            f"the VGGish files are swapped: {Path(checkpoint).name}, given as the checkpoint, is the PCA file, and "
            f"{Path(pca_params).name}, given as the PCA file, is the checkpoint; exchange them (embedder.checkpoint "
            "and embedder.pca_params, or --checkpoint and --pca-params)"
        )
    if checkpoint_kind == "pca":
        raise EmbedderError(
            f"{Path(checkpoint).name}, given as the VGGish checkpoint (embedder.checkpoint), is the PCA file; "
            f"the checkpoint is {CHECKPOINT_FILE_NAME}"
        )
    if pca_kind == "checkpoint":
        raise EmbedderError(
            f"{Path(pca_params).name}, given as the VGGish PCA file (embedder.pca_params), is the checkpoint; "
            f"the PCA file is {PCA_FILE_NAME}"
        )


def random_weights(*, seed: int = 0) -> dict[str, npt.NDArray[np.float32]]:
    """Random float32 VGGish weights keyed by official name: He-uniform hidden layers, a quiet fc2."""
    rng = np.random.default_rng(seed)
    weights: dict[str, npt.NDArray[np.float32]] = {}
    embedding_weights = f"{SCOPE}/{FC_LAYERS[-1][0]}/weights"
    for name, shape in VARIABLE_SHAPES.items():
        if name.endswith("/biases"):
            weights[name] = np.full(shape, HIDDEN_BIAS, dtype=np.float32)
            continue
        fan_in = int(np.prod(shape[:-1]))
        limit = np.sqrt(6.0 / fan_in)  # He uniform: variance 2 / fan_in
        if name == embedding_weights:
            limit *= EMBEDDING_GAIN
        w = rng.random(shape, dtype=np.float32)
        w *= np.float32(2 * limit)
        w -= np.float32(limit)
        weights[name] = w
    return weights


def write_checkpoint(path: Path, weights: Mapping[str, npt.ArrayLike], *, fmt: str = "v1") -> Path:
    """Write ``weights`` (any names and shapes) as a TF1 checkpoint; returns the path to load it by.

    ``fmt="v1"`` writes one file at ``path`` with TensorFlow's V1 writer (the format of Google's
    ``vggish_model.ckpt``); ``"v2"`` writes ``path.index`` and ``path.data-00000-of-00001``.
    """
    if fmt not in CHECKPOINT_FORMATS:
        raise ValueError(f"checkpoint format must be one of {CHECKPOINT_FORMATS}, got {fmt!r}")
    import tensorflow as tf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(weights)
    tensors = [np.asarray(weights[name], dtype=np.float32) for name in names]
    full_slices = [""] * len(names)  # "" = the whole tensor, as a non-partitioned Saver writes it
    started = time.perf_counter()
    # These are the ops tf.compat.v1.train.Saver runs for its V1 and V2 formats.
    if fmt == "v1":
        tf.raw_ops.SaveSlices(filename=str(path), tensor_names=names, shapes_and_slices=full_slices, data=tensors)
    else:
        tf.raw_ops.SaveV2(prefix=str(path), tensor_names=names, shape_and_slices=full_slices, tensors=tensors)
    log.info("wrote %s checkpoint %s in %.1f s", fmt, path.name, time.perf_counter() - started)
    return path


def write_random_checkpoint(path: Path, *, seed: int = 0, fmt: str = "v1") -> Path:
    """Write a full-size (~289 MB) VGGish checkpoint of random weights under the official names and shapes.

    The default is the official TF1 V1 single-file format; ``fmt="v2"`` writes an ``.index``/``.data`` pair at
    the prefix ``path``. Returns the path to pass to :meth:`musrec.vggish.model.VGGish.from_checkpoint`.
    """
    if fmt not in CHECKPOINT_FORMATS:
        raise ValueError(f"checkpoint format must be one of {CHECKPOINT_FORMATS}, got {fmt!r}")
    return write_checkpoint(path, random_weights(seed=seed), fmt=fmt)


def write_random_pca_params(path: Path, *, seed: int = 0, means_shape: str = "column") -> Path:
    """Write a ``vggish_pca_params.npz`` stand-in: a scaled random orthogonal ``pca_eigen_vectors`` [128, 128].

    ``pca_means`` are small random values of shape [128, 1] (``"column"``, as Google's file) or [128]
    (``"flat"``). Fits networks from :func:`write_random_checkpoint`.
    """
    if means_shape not in MEANS_SHAPES:
        raise ValueError(f"means_shape must be one of {MEANS_SHAPES}, got {means_shape!r}")
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((EMBEDDING_SIZE, EMBEDDING_SIZE)))
    orthogonal = q * np.sign(np.diag(r))  # sign fix makes the draw uniform over rotations
    means = rng.normal(0.0, 0.1, size=(EMBEDDING_SIZE, 1))
    if means_shape == "flat":
        means = means.reshape(EMBEDDING_SIZE)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, pca_eigen_vectors=orthogonal * PCA_GAIN, pca_means=means)
    return path
