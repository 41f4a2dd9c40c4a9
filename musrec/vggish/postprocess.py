"""VGGish post-processing: PCA whitening and 8-bit quantisation, and its inverse for search.

The same functions serve the AudioSet side (released embeddings are already quantised uint8) and the query side
(our embedder's float output), so both land in one space.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from musrec.errors import EmbedderError

log = logging.getLogger(__name__)

EMBEDDING_SIZE = 128
PCA_FILE_NAME = "vggish_pca_params.npz"  # Google's name for the file
NPZ_MAGIC = b"PK\x03\x04"  # an .npz is a ZIP archive of .npy files
QUANTIZE_MIN = -2.0
QUANTIZE_MAX = 2.0
# (x - min) * 255 / (max - min): 63.75 per unit for the range [-2, 2].
QUANTIZE_SCALE = 255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)


def load_pca_params(path: Path) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Read ``vggish_pca_params.npz``: eigenvectors [128, 128] and means as [128, 1] (the file has either shape).

    EmbedderError, in one line naming the file, if it is missing or not such an archive (numpy's own message for a
    file of another kind, advice to load pickles, is no help here and is not shown).
    """
    try:
        with path.open("rb") as f:
            is_zip = f.read(len(NPZ_MAGIC)) == NPZ_MAGIC
        if not is_zip:
            raise EmbedderError(f"{path.name} is not a VGGish PCA file (an .npz archive such as {PCA_FILE_NAME})")
        with np.load(path) as params:
            vectors = np.asarray(params["pca_eigen_vectors"], dtype=np.float64)
            means = np.asarray(params["pca_means"], dtype=np.float64).reshape(-1, 1)
    except FileNotFoundError:
        raise EmbedderError(f"PCA parameters not found: {path}") from None
    except KeyError as err:
        raise EmbedderError(f"{path.name} is not a VGGish PCA file: it has no {err}") from None
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        log.debug("cannot read PCA file %s: %s", path, err)
        raise EmbedderError(f"{path.name} is not a readable VGGish PCA file (a damaged .npz archive?)") from None
    if vectors.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE) or means.shape != (EMBEDDING_SIZE, 1):
        raise EmbedderError(f"PCA parameters have shapes {vectors.shape} and {means.shape}; expected 128x128, 128")
    return vectors, means


def postprocess(
    embeddings: npt.NDArray[np.floating],
    *,
    eigen_vectors: npt.NDArray[np.float64],
    means: npt.NDArray[np.float64],
) -> npt.NDArray[np.uint8]:
    """PCA-whiten [n, 128] float embeddings, clip to [-2, 2] and quantise to uint8 by truncation (as the reference)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[1] != EMBEDDING_SIZE:
        raise ValueError(f"expected [n, {EMBEDDING_SIZE}] embeddings, got {emb.shape}")
    pca = (eigen_vectors @ (emb.T - means)).T
    clipped = np.clip(pca, QUANTIZE_MIN, QUANTIZE_MAX)
    return ((clipped - QUANTIZE_MIN) * QUANTIZE_SCALE).astype(np.uint8)


def dequantize(quantized: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Map uint8 codes back to [-2, 2]: ``q * 4/255 - 2``. Cosine on raw codes would crowd every score towards 1."""
    q = np.asarray(quantized)
    return (q.astype(np.float32) / np.float32(QUANTIZE_SCALE) + np.float32(QUANTIZE_MIN)).astype(np.float32)
