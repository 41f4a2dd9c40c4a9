"""Embedders: audio -> [n, 128] uint8 VGGish codes, one row per 0.96 s, in AudioSet's released space.

:class:`Embedder` is the interface the rest of musrec depends on. :class:`LocalEmbedder` runs VGGish in this
process from Google's checkpoint and PCA file; a client for IBM's MAX service implements the same protocol.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from musrec.vggish.frontend import EXAMPLE_FRAMES, NUM_MEL_BANDS, SAMPLE_RATE, waveform_to_examples
from musrec.vggish.model import VGGish
from musrec.vggish.postprocess import EMBEDDING_SIZE, load_pca_params, postprocess

log = logging.getLogger(__name__)

# Examples per forward pass: large enough to keep the CPU busy, small enough that the first conv block's
# activations (96 x 64 x 64 floats, 1.5 MB per example) stay modest.
BATCH_EXAMPLES: Final = 32
WARM_UP_RATE: Final = 44100  # Hz; a common non-16 kHz rate, so warming up exercises resampling too


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns audio into VGGish codes in the space of AudioSet's released embeddings."""

    def embed(self, samples: npt.NDArray[np.floating], sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.uint8]:
        """Float samples in [-1, 1] (1-D or [n_samples, channels]) -> [n, 128] uint8, one row per 0.96 s.

        The whole input is embedded (no 10-second cut, no padding); under 0.975 s gives zero rows.
        """
        ...


class LocalEmbedder:
    """VGGish in this process: front end -> network -> PCA and 8-bit quantisation.

    Model and PCA parameters are loaded once, at construction (about 300 MB of weights). ``embed`` is safe to
    call from several threads at once. ``relu=False`` (the default) matches AudioSet's released embeddings;
    ``relu=True`` matches IBM's MAX Audio Embedding Generator.
    """

    def __init__(self, checkpoint: Path, pca_params: Path, *, relu: bool = False) -> None:
        self._eigen_vectors, self._means = load_pca_params(Path(pca_params))
        self._model = VGGish.from_checkpoint(Path(checkpoint), relu=relu)

    @property
    def relu(self) -> bool:
        """Whether fc2 takes a ReLU (as MAX) rather than not (as AudioSet's index)."""
        return self._model.relu

    @property
    def model(self) -> VGGish:
        """The network: [n, 96, 64] log-mel examples -> [n, 128] float32, unbatched."""
        return self._model

    def warm_up(self) -> None:
        """Pay start-up costs now rather than on the first request: trace the network, import the resampler.

        Embeds one second of silence at 44.1 kHz.
        """
        started = time.perf_counter()
        self.embed(np.zeros(WARM_UP_RATE, dtype=np.float64), WARM_UP_RATE)
        log.info("VGGish warmed up in %.2f s", time.perf_counter() - started)

    def embed_examples(self, examples: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """[n, 96, 64] log-mel examples -> [n, 128] float32 network output before PCA, in batches."""
        x = np.asarray(examples, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (EXAMPLE_FRAMES, NUM_MEL_BANDS):
            raise ValueError(f"expected [n, {EXAMPLE_FRAMES}, {NUM_MEL_BANDS}] examples, got {x.shape}")
        if len(x) <= BATCH_EXAMPLES:
            return self._model(x)
        return np.concatenate(
            [self._model(x[start : start + BATCH_EXAMPLES]) for start in range(0, len(x), BATCH_EXAMPLES)]
        )

    def embed(self, samples: npt.NDArray[np.floating], sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.uint8]:
        """Float samples in [-1, 1] (1-D or [n_samples, channels]) -> [n, 128] uint8, one row per 0.96 s.

        Any sample rate (resampled to 16 kHz after averaging channels); the whole input is embedded, with no
        padding, so under 0.975 s gives zero rows.
        """
        started = time.perf_counter()
        examples = waveform_to_examples(samples, sample_rate)
        if len(examples) == 0:
            return np.zeros((0, EMBEDDING_SIZE), dtype=np.uint8)
        codes = postprocess(self.embed_examples(examples), eigen_vectors=self._eigen_vectors, means=self._means)
        log.debug("embedded %d examples in %.2f s", len(codes), time.perf_counter() - started)
        return codes
