"""PCA + 8-bit quantisation: truncation at the edges, both means shapes, dequantisation, one space for both sides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musrec.audioset.representation import REPRESENTATION_DIMS, fit_rows, represent
from musrec.errors import EmbedderError
from musrec.vggish.checkpoint import write_random_pca_params
from musrec.vggish.postprocess import EMBEDDING_SIZE, dequantize, load_pca_params, postprocess

IDENTITY = np.eye(EMBEDDING_SIZE)
ZERO_MEANS = np.zeros((EMBEDDING_SIZE, 1))


def quantise_values(values: list[float]) -> list[int]:
    """Quantise scalars through the identity PCA: each value fills one row."""
    emb = np.repeat(np.asarray(values, dtype=np.float64)[:, None], EMBEDDING_SIZE, axis=1)
    codes = postprocess(emb, eigen_vectors=IDENTITY, means=ZERO_MEANS)
    assert codes.dtype == np.uint8
    assert (codes == codes[:, :1]).all()
    return [int(c) for c in codes[:, 0]]


def test_range_edges_and_clipping() -> None:
    assert quantise_values([-2.0, 2.0, -2.5, 2.5, -1e9, 1e9]) == [0, 255, 0, 255, 0, 255]


def test_truncation_not_rounding() -> None:
    # (x + 2) * 63.75: 127.5 at zero (rounding would give 128), 254.94 just below 2 (rounding: 255).
    assert quantise_values([0.0]) == [127]
    assert quantise_values([1.999]) == [254]
    assert quantise_values([-1.999]) == [0]


def test_code_boundaries() -> None:
    just_below = [-2.0 + (k - 1e-4) / 63.75 for k in (1, 128, 255)]
    just_above = [-2.0 + (k + 1e-4) / 63.75 for k in (1, 128, 254)]
    assert quantise_values(just_below) == [0, 127, 254]
    assert quantise_values(just_above) == [1, 128, 254]


def test_pca_arithmetic_float64() -> None:
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((EMBEDDING_SIZE, EMBEDDING_SIZE)))
    means = rng.normal(0.0, 0.3, size=(EMBEDDING_SIZE, 1))
    emb = rng.normal(0.0, 1.0, size=(7, EMBEDDING_SIZE)).astype(np.float32)
    expected = np.clip((q @ (emb.astype(np.float64).T - means)).T, -2.0, 2.0)
    expected_codes = np.floor((expected + 2.0) * 63.75).astype(np.uint8)
    np.testing.assert_array_equal(postprocess(emb, eigen_vectors=q, means=means), expected_codes)


def test_means_are_subtracted() -> None:
    means = np.linspace(-1.0, 1.0, EMBEDDING_SIZE).reshape(-1, 1)
    codes = postprocess(means.T, eigen_vectors=IDENTITY, means=means)
    assert (codes == 127).all()


@pytest.mark.parametrize("means_shape", ["column", "flat"])
def test_both_means_shapes_load_alike(tmp_path: Path, means_shape: str) -> None:
    path = write_random_pca_params(tmp_path / "pca.npz", seed=4, means_shape=means_shape)
    with np.load(path) as raw:
        assert raw["pca_eigen_vectors"].shape == (128, 128)
        assert raw["pca_means"].shape == ((128, 1) if means_shape == "column" else (128,))
    vectors, means = load_pca_params(path)
    column_vectors, column_means = load_pca_params(write_random_pca_params(tmp_path / "c.npz", seed=4))
    assert means.shape == (128, 1)
    assert vectors.dtype == means.dtype == np.float64
    np.testing.assert_array_equal(vectors, column_vectors)
    np.testing.assert_array_equal(means, column_means)


def test_random_pca_is_a_scaled_rotation(tmp_path: Path) -> None:
    vectors, _ = load_pca_params(write_random_pca_params(tmp_path / "pca.npz"))
    gram = vectors @ vectors.T
    scale = gram[0, 0]
    np.testing.assert_allclose(gram, scale * np.eye(128), atol=1e-12)


def test_load_pca_params_errors(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="not found"):
        load_pca_params(tmp_path / "missing.npz")
    np.savez(tmp_path / "keys.npz", eigen=np.eye(128), means=np.zeros(128))
    with pytest.raises(EmbedderError, match="not a VGGish PCA file"):
        load_pca_params(tmp_path / "keys.npz")
    np.savez(tmp_path / "shape.npz", pca_eigen_vectors=np.eye(64), pca_means=np.zeros(64))
    with pytest.raises(EmbedderError, match="shapes"):
        load_pca_params(tmp_path / "shape.npz")


def test_postprocess_rejects_wrong_width() -> None:
    with pytest.raises(ValueError, match="128"):
        postprocess(np.zeros((2, 64)), eigen_vectors=IDENTITY, means=ZERO_MEANS)


def test_dequantize_edges() -> None:
    x = dequantize(np.array([0, 1, 127, 128, 254, 255], dtype=np.uint8))
    assert x.dtype == np.float32
    assert x[0] == -2.0
    assert x[-1] == 2.0
    np.testing.assert_allclose(x, np.array([0, 1, 127, 128, 254, 255]) * 4 / 255 - 2, atol=1e-6)
    assert x[2] < 0 < x[3]


def test_dequantize_inverts_quantise_within_one_step() -> None:
    values = np.linspace(-2.5, 2.5, 1001)
    emb = np.repeat(values[:, None], EMBEDDING_SIZE, axis=1)
    back = dequantize(postprocess(emb, eigen_vectors=IDENTITY, means=ZERO_MEANS))[:, 0].astype(np.float64)
    clipped = np.clip(values, -2.0, 2.0)
    assert (back <= clipped + 1e-6).all()  # truncation only ever rounds down
    assert (clipped - back < 4 / 255 + 1e-6).all()


@pytest.mark.parametrize("representation", sorted(REPRESENTATION_DIMS))
def test_index_and_query_codes_share_one_space(representation: str) -> None:
    rng = np.random.default_rng(2)
    # Index side: AudioSet stores each second as 128 raw bytes.
    released = [bytes(rng.integers(0, 256, EMBEDDING_SIZE, dtype=np.uint8)) for _ in range(10)]
    index_rows = np.stack([np.frombuffer(b, dtype=np.uint8) for b in released])
    # Query side: float network output through the same postprocess.
    query_rows = postprocess(rng.normal(size=(4, EMBEDDING_SIZE)), eigen_vectors=IDENTITY, means=ZERO_MEANS)
    assert index_rows.dtype == query_rows.dtype == np.uint8
    index_vec = represent(fit_rows(index_rows)[None], representation)
    query_vec = represent(fit_rows(query_rows)[None], representation)
    assert index_vec.dtype == query_vec.dtype == np.float32
    assert index_vec.shape == query_vec.shape == (1, REPRESENTATION_DIMS[representation])
    np.testing.assert_allclose(np.linalg.norm(index_vec), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(query_vec), 1.0, rtol=1e-6)


def test_flatten_is_dequantize_normalised() -> None:
    """represent's in-place flatten equals dequantize followed by normalisation, within float32 rounding (a few
    units in the last place of values of about 1/36)."""
    rng = np.random.default_rng(3)
    segments = rng.integers(0, 256, size=(50, 10, 128), dtype=np.uint8)
    expected = dequantize(segments).reshape(50, -1).astype(np.float64)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(represent(segments, "flatten"), expected, rtol=0, atol=1e-6)
