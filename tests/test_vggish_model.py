"""The TensorFlow VGGish network: official checkpoint layout (V1 and V2), a numpy forward pass, the ReLU switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from tolerances import network_atol
from vggish_fixtures import CHECKPOINT_SEED, VggishFiles, shared_embedder, shared_vggish_files, shared_weights

from musrec.errors import EmbedderError
from musrec.vggish.checkpoint import random_weights, write_checkpoint, write_random_checkpoint
from musrec.vggish.model import VARIABLE_SHAPES, VGGish, read_checkpoint

OFFICIAL_SHAPES = {
    "vggish/conv1/weights": (3, 3, 1, 64),
    "vggish/conv1/biases": (64,),
    "vggish/conv2/weights": (3, 3, 64, 128),
    "vggish/conv2/biases": (128,),
    "vggish/conv3/conv3_1/weights": (3, 3, 128, 256),
    "vggish/conv3/conv3_1/biases": (256,),
    "vggish/conv3/conv3_2/weights": (3, 3, 256, 256),
    "vggish/conv3/conv3_2/biases": (256,),
    "vggish/conv4/conv4_1/weights": (3, 3, 256, 512),
    "vggish/conv4/conv4_1/biases": (512,),
    "vggish/conv4/conv4_2/weights": (3, 3, 512, 512),
    "vggish/conv4/conv4_2/biases": (512,),
    "vggish/fc1/fc1_1/weights": (12288, 4096),
    "vggish/fc1/fc1_1/biases": (4096,),
    "vggish/fc1/fc1_2/weights": (4096, 4096),
    "vggish/fc1/fc1_2/biases": (4096,),
    "vggish/fc2/weights": (4096, 128),
    "vggish/fc2/biases": (128,),
}
CONVS = ["conv1", "conv2", "conv3/conv3_1", "conv3/conv3_2", "conv4/conv4_1", "conv4/conv4_2"]
POOLED = {"conv1", "conv2", "conv3/conv3_2", "conv4/conv4_2"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> VggishFiles:
    return shared_vggish_files(tmp_path_factory)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, npt.NDArray[np.float32]]:
    return shared_weights(tmp_path_factory)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> VGGish:
    """Loaded from the V1 checkpoint by VGGish.from_checkpoint (shared with the embedder tests)."""
    return shared_embedder(tmp_path_factory).model


@pytest.fixture(scope="module")
def relu_model(tmp_path_factory: pytest.TempPathFactory) -> VGGish:
    return shared_embedder(tmp_path_factory, relu=True).model


@pytest.fixture(scope="module")
def examples() -> npt.NDArray[np.float32]:
    """Three log-mel-like examples: values in the range ln(0.01)..ln(100)."""
    rng = np.random.default_rng(11)
    return rng.uniform(-4.6, 4.6, size=(3, 96, 64)).astype(np.float32)


def numpy_conv_stack(weights: dict[str, npt.NDArray[np.float32]], examples: npt.NDArray[np.float32]) -> np.ndarray:
    """VGGish's conv blocks written out plainly in float64: [n, 96, 64] -> NHWC [n, 6, 4, 512].

    A 3x3 SAME convolution is nine shifted matmuls over a zero-padded input; a 2x2 max pool is a reshape.
    """
    x = examples.astype(np.float64)[..., None]  # NHWC
    for name in CONVS:
        w = weights[f"vggish/{name}/weights"].astype(np.float64)
        b = weights[f"vggish/{name}/biases"].astype(np.float64)
        n, h, wd, _ = x.shape
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # SAME for a 3x3 kernel at stride 1
        out = np.zeros((n, h, wd, w.shape[3]))
        for dy in range(3):
            for dx in range(3):
                out += padded[:, dy : dy + h, dx : dx + wd, :] @ w[dy, dx]
        x = np.maximum(out + b, 0.0)
        if name in POOLED:
            n, h, wd, c = x.shape
            assert h % 2 == 0 and wd % 2 == 0  # so SAME pooling needs no padding
            x = x.reshape(n, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))
    return x


def numpy_head(
    weights: dict[str, npt.NDArray[np.float32]], flat: np.ndarray, *, relu: bool = False
) -> npt.NDArray[np.float64]:
    """fc1_1, fc1_2 (ReLU) and fc2 (ReLU only if ``relu``) on [n, 12288] flattened features, in float64."""
    x = flat
    for name in ["fc1/fc1_1", "fc1/fc1_2", "fc2"]:
        w = weights[f"vggish/{name}/weights"]
        # Column blocks keep the float64 copies of the large matrices small.
        x = (
            np.concatenate([x @ w[:, j : j + 512].astype(np.float64) for j in range(0, w.shape[1], 512)], axis=1)
            + weights[f"vggish/{name}/biases"]
        )
        if name != "fc2" or relu:
            x = np.maximum(x, 0.0)
    return x


def test_variable_table_is_the_official_one() -> None:
    assert dict(VARIABLE_SHAPES) == OFFICIAL_SHAPES
    assert sum(int(np.prod(s)) for s in VARIABLE_SHAPES.values()) == 72_141_184


def test_random_checkpoint_is_v1_single_file_with_official_names(files: VggishFiles) -> None:
    import tensorflow as tf

    assert files.checkpoint.is_file()
    assert sorted(p.name for p in files.checkpoint.parent.glob("vggish_model.ckpt*")) == ["vggish_model.ckpt"]
    reader = tf.train.load_checkpoint(str(files.checkpoint))
    shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
    assert shapes == OFFICIAL_SHAPES
    assert set(reader.get_variable_to_dtype_map().values()) == {tf.float32}
    assert 270e6 < files.checkpoint.stat().st_size < 300e6


def test_random_weights_are_reproducible_and_sensibly_scaled(weights: dict[str, npt.NDArray[np.float32]]) -> None:
    again = random_weights(seed=CHECKPOINT_SEED)
    for name in VARIABLE_SHAPES:
        np.testing.assert_array_equal(weights[name], again[name])
    conv = weights["vggish/conv2/weights"]
    assert conv.std() == pytest.approx(np.sqrt(2.0 / (3 * 3 * 64)), rel=0.05)  # He scale


def test_output_shape_and_dtype(model: VGGish, examples: npt.NDArray[np.float32]) -> None:
    out = model(examples)
    assert out.shape == (3, 128)
    assert out.dtype == np.float32
    assert model(examples[:0]).shape == (0, 128)
    assert model(examples[:1]).shape == (1, 128)


def test_matches_a_plain_numpy_forward_pass(
    model: VGGish, relu_model: VGGish, weights: dict[str, npt.NDArray[np.float32]], examples: npt.NDArray[np.float32]
) -> None:
    features = numpy_conv_stack(weights, examples[:2])
    assert features.shape == (2, 6, 4, 512)
    expected = numpy_head(weights, features.reshape(2, -1))  # NHWC flatten, as slim.flatten
    out = model(examples[:2])
    scale = np.abs(expected).max()
    assert scale > 0.1
    tolerance = network_atol(expected)  # float32 against a float64 reference: float32 rounding only
    np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance)
    assert (expected < 0).any()  # pre-activation: fc2 has no ReLU
    np.testing.assert_allclose(relu_model(examples[:2]), np.maximum(expected, 0.0), rtol=0, atol=tolerance)
    # The check can tell: an NCHW flatten (a classic porting bug) gives clearly different numbers.
    nchw = numpy_head(weights, features.transpose(0, 3, 1, 2).reshape(2, -1))
    assert np.abs(nchw - out).max() > 100 * tolerance


def test_relu_switch(model: VGGish, relu_model: VGGish, examples: npt.NDArray[np.float32]) -> None:
    assert model.relu is False
    assert relu_model.relu is True
    pre = model(examples)
    post = relu_model(examples)
    assert (pre < 0).any() and (pre > 0).any()
    # Another model object (a fused kernel may sum in another order): equal to float32 rounding.
    np.testing.assert_allclose(post, np.maximum(pre, 0.0), rtol=0, atol=network_atol(pre))
    assert (post[pre < 0] == 0.0).all()
    assert not np.array_equal(pre, post)


def test_deterministic(model: VGGish, examples: npt.NDArray[np.float32]) -> None:
    np.testing.assert_array_equal(model(examples), model(examples))


def test_batch_composition_barely_matters(model: VGGish, examples: npt.NDArray[np.float32]) -> None:
    """Issue 12: oneDNN sums in another order for another batch size; the outputs agree to float32 rounding."""
    together = model(examples)
    alone = np.concatenate([model(examples[i : i + 1]) for i in range(len(examples))])
    np.testing.assert_allclose(together, alone, rtol=0, atol=network_atol(together))


def test_v2_checkpoint_loads_the_same(tmp_path: Path, model: VGGish, examples: npt.NDArray[np.float32]) -> None:
    prefix = write_random_checkpoint(tmp_path / "model.ckpt", seed=CHECKPOINT_SEED, fmt="v2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt.data-00000-of-00001", "model.ckpt.index"]
    v2 = VGGish.from_checkpoint(prefix)
    np.testing.assert_array_equal(v2(examples), model(examples))
    # The index file's name works too.
    assert VGGish.from_checkpoint(tmp_path / "model.ckpt.index").relu is False
    with pytest.raises(ValueError, match="format"):
        write_random_checkpoint(tmp_path / "x.ckpt", fmt="v3")


def test_in_memory_weights_build_the_same_model(
    model: VGGish, weights: dict[str, npt.NDArray[np.float32]], examples: npt.NDArray[np.float32]
) -> None:
    np.testing.assert_array_equal(VGGish(weights)(examples), model(examples))


def test_missing_variable_is_named(tmp_path: Path, weights: dict[str, npt.NDArray[np.float32]]) -> None:
    partial = {name: w for name, w in weights.items() if name != "vggish/fc2/biases"}
    path = write_checkpoint(tmp_path / "partial.ckpt", partial, fmt="v2")
    with pytest.raises(EmbedderError) as err:
        VGGish.from_checkpoint(path)
    assert str(err.value) == "partial.ckpt is not a VGGish checkpoint: missing vggish/fc2/biases"
    with pytest.raises(EmbedderError, match="missing vggish/fc2/biases"):
        VGGish(partial)


def test_misshaped_variable_is_named(tmp_path: Path) -> None:
    small = {"vggish/conv1/weights": np.zeros((3, 3, 2, 64), np.float32), "vggish/conv1/biases": np.zeros(64)}
    path = write_checkpoint(tmp_path / "small.ckpt", small)  # V1
    with pytest.raises(EmbedderError) as err:
        VGGish.from_checkpoint(path)
    message = str(err.value)
    assert "vggish/conv1/weights has shape [3, 3, 2, 64], expected [3, 3, 1, 64]" in message
    assert "vggish/conv1/biases" not in message
    assert "missing vggish/conv2/weights" in message
    with pytest.raises(EmbedderError, match="conv1/weights has shape"):
        read_checkpoint(path)


def test_unreadable_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="not found: nowhere.ckpt"):
        VGGish.from_checkpoint(tmp_path / "nowhere.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(EmbedderError, match="not a readable TensorFlow checkpoint: junk.ckpt") as err:
        VGGish.from_checkpoint(junk)
    assert str(tmp_path) not in str(err.value)  # user-facing text names the file, not where it lives


def test_rejects_wrong_input_shape(model: VGGish) -> None:
    with pytest.raises(ValueError, match="96, 64"):
        model(np.zeros((2, 64, 96), np.float32))
