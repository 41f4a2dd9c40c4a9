"""The VGGish network in TensorFlow 2, loading Google's official TF1 checkpoint by its slim variable names.

Layout (NHWC, height = time, width = mel band): four conv blocks (3x3 stride-1 SAME convolutions with ReLU, each
block followed by a 2x2 stride-2 SAME max pool), a flatten in NHWC order (6 x 4 x 512 = 12,288), two 4096-unit
ReLU layers and a 128-unit embedding layer ``fc2``.

The embeddings released with AudioSet are fc2 *before* any activation, which is the default here. IBM's MAX Audio
Embedding Generator applies a ReLU to fc2; ``relu=True`` reproduces that.

TensorFlow is imported only when a model is built, so importing musrec stays fast.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from musrec.errors import EmbedderError
from musrec.vggish.frontend import EXAMPLE_FRAMES, NUM_MEL_BANDS
from musrec.vggish.postprocess import EMBEDDING_SIZE

log = logging.getLogger(__name__)

SCOPE: Final = "vggish"
CONV_KERNEL: Final = 3
POOL_SIZE: Final = 2
FC_UNITS: Final = 4096

# (checkpoint name of a layer, input channels or features, output channels or features), in forward order.
# A conv layer's checkpoint variables are <name>/weights [3, 3, in, out] and <name>/biases [out].
CONV_LAYERS: Final[tuple[tuple[str, int, int], ...]] = (
    ("conv1", 1, 64),
    ("conv2", 64, 128),
    ("conv3/conv3_1", 128, 256),
    ("conv3/conv3_2", 256, 256),
    ("conv4/conv4_1", 256, 512),
    ("conv4/conv4_2", 512, 512),
)
# The layer names after which a max pool follows.
POOL_AFTER: Final = frozenset({"conv1", "conv2", "conv3/conv3_2", "conv4/conv4_2"})
# Four 2x2 pools take 96 x 64 to 6 x 4, with the last conv's 512 channels: 12,288 features.
FLAT_FEATURES: Final = (
    (EXAMPLE_FRAMES // POOL_SIZE ** len(POOL_AFTER))
    * (NUM_MEL_BANDS // POOL_SIZE ** len(POOL_AFTER))
    * CONV_LAYERS[-1][2]
)
# Fully connected layers: <name>/weights [in, out], <name>/biases [out]. All but the last take a ReLU.
FC_LAYERS: Final[tuple[tuple[str, int, int], ...]] = (
    ("fc1/fc1_1", FLAT_FEATURES, FC_UNITS),
    ("fc1/fc1_2", FC_UNITS, FC_UNITS),
    ("fc2", FC_UNITS, EMBEDDING_SIZE),
)


def _variable_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name, n_in, n_out in CONV_LAYERS:
        shapes[f"{SCOPE}/{name}/weights"] = (CONV_KERNEL, CONV_KERNEL, n_in, n_out)
        shapes[f"{SCOPE}/{name}/biases"] = (n_out,)
    for name, n_in, n_out in FC_LAYERS:
        shapes[f"{SCOPE}/{name}/weights"] = (n_in, n_out)
        shapes[f"{SCOPE}/{name}/biases"] = (n_out,)
    return shapes


# Every checkpoint variable VGGish needs, with its shape, in forward order (72,141,184 parameters).
VARIABLE_SHAPES: Final[Mapping[str, tuple[int, ...]]] = _variable_shapes()


def _tf() -> Any:
    import tensorflow as tf

    return tf


def _checkpoint_reader(path: Path) -> Any:
    """Open a V1 single-file checkpoint (the official format) or a V2 ``.index``/``.data`` prefix."""
    path = Path(path)
    if path.suffix == ".index" and path.is_file():
        path = path.with_suffix("")
    if not path.exists() and not path.with_name(path.name + ".index").is_file():
        raise EmbedderError(f"VGGish checkpoint not found: {path.name}")
    tf = _tf()
    try:
        return tf.train.load_checkpoint(str(path))
    except (tf.errors.OpError, ValueError) as err:
        # TensorFlow's message carries the full path; keep it in the log, out of the user-facing text.
        log.debug("cannot read checkpoint %s: %s", path, err)
        raise EmbedderError(f"not a readable TensorFlow checkpoint: {path.name}") from None


def check_variables(shapes: Mapping[str, list[int] | tuple[int, ...]], *, source: str) -> None:
    """Raise :class:`EmbedderError` naming every VGGish variable missing from ``shapes`` or of the wrong shape."""
    problems: list[str] = []
    for name, expected in VARIABLE_SHAPES.items():
        if name not in shapes:
            problems.append(f"missing {name}")
        elif tuple(shapes[name]) != expected:
            problems.append(f"{name} has shape {list(shapes[name])}, expected {list(expected)}")
    if problems:
        raise EmbedderError(f"{source} is not a VGGish checkpoint: " + "; ".join(problems))


def read_checkpoint(path: Path) -> dict[str, npt.NDArray[np.float32]]:
    """All VGGish weights of a checkpoint as float32 arrays keyed by their official names (~289 MB)."""
    reader = _checkpoint_reader(path)
    check_variables(reader.get_variable_to_shape_map(), source=Path(path).name)
    return {name: np.asarray(reader.get_tensor(name), dtype=np.float32) for name in VARIABLE_SHAPES}


class VGGish:
    """The VGGish network: ``model(examples [n, 96, 64]) -> [n, 128]`` float32 embeddings before PCA.

    Weights live in TensorFlow variables; the forward pass is one ``tf.function`` traced once for any batch size.
    Calls are thread-safe.
    """

    def __init__(self, weights: Mapping[str, npt.ArrayLike], *, relu: bool = False) -> None:
        """Build from weights keyed by official checkpoint name (see :data:`VARIABLE_SHAPES`)."""
        check_variables({name: np.shape(value) for name, value in weights.items()}, source="weights")
        self._build(lambda name: np.asarray(weights[name], dtype=np.float32), relu=relu)

    @classmethod
    def from_checkpoint(cls, path: Path, *, relu: bool = False) -> VGGish:
        """Load a TF1 checkpoint (V1 single file, as Google's ``vggish_model.ckpt``, or a V2 prefix)."""
        started = time.perf_counter()
        reader = _checkpoint_reader(path)
        check_variables(reader.get_variable_to_shape_map(), source=Path(path).name)
        dtypes = reader.get_variable_to_dtype_map()
        for name in VARIABLE_SHAPES:
            if dtypes[name] != _tf().float32:
                raise EmbedderError(f"{Path(path).name}: {name} is {dtypes[name].name}, expected float32")
        model = cls.__new__(cls)
        # Read one tensor at a time, so peak memory stays near one copy of the weights.
        model._build(reader.get_tensor, relu=relu)
        log.info("loaded VGGish from %s in %.1f s (relu=%s)", Path(path).name, time.perf_counter() - started, relu)
        return model

    def _build(self, tensor: Callable[[str], Any], *, relu: bool) -> None:
        tf = _tf()
        self._relu = relu
        self._variables: dict[str, Any] = {
            name: tf.Variable(tensor(name), trainable=False, name=name.replace("/", "_")) for name in VARIABLE_SHAPES
        }
        self._forward: Any = tf.function(
            self._graph,
            input_signature=[tf.TensorSpec([None, EXAMPLE_FRAMES, NUM_MEL_BANDS], tf.float32)],
            autograph=False,
        )

    @property
    def relu(self) -> bool:
        """Whether fc2 takes a ReLU (IBM MAX) or not (AudioSet's released embeddings, the default)."""
        return self._relu

    def _graph(self, examples: Any) -> Any:
        tf = _tf()
        v = self._variables
        net = tf.reshape(examples, [-1, EXAMPLE_FRAMES, NUM_MEL_BANDS, 1])
        for name, _, _ in CONV_LAYERS:
            net = tf.nn.conv2d(net, v[f"{SCOPE}/{name}/weights"], strides=1, padding="SAME")
            net = tf.nn.relu(tf.nn.bias_add(net, v[f"{SCOPE}/{name}/biases"]))
            if name in POOL_AFTER:
                net = tf.nn.max_pool2d(net, ksize=POOL_SIZE, strides=POOL_SIZE, padding="SAME")
        net = tf.reshape(net, [-1, FLAT_FEATURES])  # NHWC order, as slim.flatten
        last = FC_LAYERS[-1][0]
        for name, _, _ in FC_LAYERS:
            net = tf.nn.bias_add(tf.matmul(net, v[f"{SCOPE}/{name}/weights"]), v[f"{SCOPE}/{name}/biases"])
            if name != last or self._relu:
                net = tf.nn.relu(net)
        return net

    def __call__(self, examples: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """[n, 96, 64] log-mel examples -> [n, 128] float32 embeddings (fc2, with ReLU only if ``relu``)."""
        x = np.asarray(examples, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (EXAMPLE_FRAMES, NUM_MEL_BANDS):
            raise ValueError(f"expected [n, {EXAMPLE_FRAMES}, {NUM_MEL_BANDS}] examples, got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
        return np.asarray(self._forward(x).numpy(), dtype=np.float32)
