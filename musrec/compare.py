"""Comparing two sounds: one similarity for the pair, and second-by-second similarities to show as a picture."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from musrec.audioset.representation import fit_rows, represent
from musrec.vggish.postprocess import dequantize

CELL_PX = 24  # each second-by-second cell of the picture is a 24 x 24 pixel square


@dataclass(frozen=True)
class Comparison:
    """``score``: cosine similarity of the two windows in the index's representation (as recommendation scores).

    ``matrix[i, j]``: cosine similarity of second ``i`` of the first sound and second ``j`` of the second.
    """

    score: float
    matrix: npt.NDArray[np.float32]


def compare_rows(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], *, representation: str) -> Comparison:
    """Compare two [n, 128] uint8 embeddings (each fitted to 10 rows, as queries are)."""
    fa, fb = fit_rows(a), fit_rows(b)
    va, vb = represent(np.stack([fa, fb]), representation)
    xa, xb = dequantize(fa), dequantize(fb)
    xa /= np.maximum(np.linalg.norm(xa, axis=1, keepdims=True), 1e-12)
    xb /= np.maximum(np.linalg.norm(xb, axis=1, keepdims=True), 1e-12)
    return Comparison(score=float(va @ vb), matrix=(xa @ xb.T).astype(np.float32))


def similarity_png(matrix: npt.NDArray[np.floating], *, cell_px: int = CELL_PX) -> bytes:
    """A heat map of a similarity matrix as PNG bytes: dark blue for -1 or less alike, through white, to red for 1."""
    m = np.clip(np.asarray(matrix, dtype=np.float64), -1.0, 1.0)
    rgb = _diverging(m)
    image = np.repeat(np.repeat(rgb, cell_px, axis=0), cell_px, axis=1)
    return encode_png(image)


def _diverging(m: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    blue = np.array([33, 102, 172], dtype=np.float64)
    white = np.array([247, 247, 247], dtype=np.float64)
    red = np.array([178, 24, 43], dtype=np.float64)
    t = m[..., None]
    low = white + (blue - white) * np.clip(-t, 0, 1)
    high = white + (red - white) * np.clip(t, 0, 1)
    return np.where(t < 0, low, high).round().astype(np.uint8)


def encode_png(rgb: npt.NDArray[np.uint8]) -> bytes:
    """Encode an [h, w, 3] uint8 image as an 8-bit RGB PNG (no dependencies beyond zlib)."""
    h, w, channels = rgb.shape
    if channels != 3:
        raise ValueError("expected an RGB image")
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(h))  # filter type 0 on every scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
