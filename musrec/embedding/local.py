"""VGGish in this process (:class:`LocalEmbedder`): audio -> [n, 128] uint8 codes, one row per 0.96 s, in AudioSet's
released space, from Google's checkpoint and PCA file.

It embeds what every embedder embeds (:func:`~musrec.embedding.base.vggish_pcm`: 16-kHz mono 16-bit PCM). Input that
already is 16-kHz 16-bit PCM (a 16-kHz WAV read as ``int16 / 32768``) is unchanged by that rounding, so there the
pipeline is the reference's exactly. Elsewhere the rounding is 16-bit audio's own noise (98 dB under a full-scale
sine), far less than the choice of resampler makes (see :mod:`musrec.audio.resample`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from musrec.audio.wav import INT16_SCALE
from musrec.embedding.base import vggish_pcm
from musrec.vggish.checkpoint import check_model_files
from musrec.vggish.frontend import EXAMPLE_FRAMES, NUM_MEL_BANDS, SAMPLE_RATE, waveform_to_examples
from musrec.vggish.model import VGGish
from musrec.vggish.postprocess import EMBEDDING_SIZE, load_pca_params, postprocess

log = logging.getLogger(__name__)

# Examples per forward pass: large enough to keep the CPU busy, small enough that the first conv block's
# activations (96 x 64 x 64 floats, 1.5 MB per example) stay modest.
BATCH_EXAMPLES: Final = 32
WARM_UP_RATE: Final = 44100  # Hz; a common non-16 kHz rate, so warming up exercises resampling too


class LocalEmbedder:
    """VGGish in this process: front end -> network -> PCA and 8-bit quantisation.

    Model and PCA parameters are loaded once, at construction (about 300 MB of weights). ``embed`` is safe to
    call from several threads at once. ``relu=False`` (the default) matches AudioSet's released embeddings;
    ``relu=True`` matches IBM's MAX Audio Embedding Generator.
    """

    def __init__(self, checkpoint: Path, pca_params: Path, *, relu: bool = False) -> None:
        check_model_files(Path(checkpoint), Path(pca_params))
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

    def embed_examples(
        self, examples: npt.NDArray[np.floating], *, pool: Executor | None = None
    ) -> npt.NDArray[np.float32]:
        """[n, 96, 64] log-mel examples -> [n, 128] float32 network output before PCA, in batches: one after another,
        or with ``pool``, on its threads at once (the same output)."""
        x = np.asarray(examples, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (EXAMPLE_FRAMES, NUM_MEL_BANDS):
            raise ValueError(f"expected [n, {EXAMPLE_FRAMES}, {NUM_MEL_BANDS}] examples, got {x.shape}")
        if len(x) <= BATCH_EXAMPLES:
            return self._model(x)
        batches = [x[start : start + BATCH_EXAMPLES] for start in range(0, len(x), BATCH_EXAMPLES)]
        return np.concatenate(list(pool.map(self._model, batches)) if pool else [self._model(b) for b in batches])

    def embed(self, samples: npt.NDArray[np.floating], sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.uint8]:
        """Float samples in [-1, 1] (1-D or [n_samples, channels]) -> [n, 128] uint8, one row per 0.96 s.

        Any sample rate: the input is embedded as :func:`vggish_pcm` gives it (channels averaged, resampled to
        16 kHz, 16-bit), as a MAX server gets it. The whole input is embedded, with no padding, so under 0.975 s
        gives zero rows.
        """
        started = time.perf_counter()
        examples = waveform_to_examples(vggish_pcm(samples, sample_rate) / INT16_SCALE, SAMPLE_RATE)
        if len(examples) == 0:
            return np.zeros((0, EMBEDDING_SIZE), dtype=np.uint8)
        codes = postprocess(self.embed_examples(examples), eigen_vectors=self._eigen_vectors, means=self._means)
        log.debug("embedded %d examples in %.2f s", len(codes), time.perf_counter() - started)
        return codes

    def embed_batch(
        self, clips: Sequence[npt.NDArray[np.floating]], sample_rate: int = SAMPLE_RATE, *, pool: Executor | None = None
    ) -> list[npt.NDArray[np.uint8]]:
        """Several clips, each as :meth:`embed` gives it, their examples through the network in shared batches: a
        library's 10-s segments (18 for a 3-minute track) cost one track's forward passes, not 18 small ones. With
        ``pool``, the batches run on its threads at once (:meth:`embed_examples`)."""
        examples = [waveform_to_examples(vggish_pcm(c, sample_rate) / INT16_SCALE, SAMPLE_RATE) for c in clips]
        sizes = [len(e) for e in examples]
        if not sum(sizes):
            return [np.zeros((0, EMBEDDING_SIZE), dtype=np.uint8) for _ in clips]
        joined = np.concatenate([e for e in examples if len(e)])
        outputs = self.embed_examples(joined, pool=pool)
        codes = postprocess(outputs, eigen_vectors=self._eigen_vectors, means=self._means)
        return np.split(codes, np.cumsum(sizes)[:-1])
