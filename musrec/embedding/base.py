"""What an embedder is (:class:`Embedder`), and the samples every embedder embeds (:func:`vggish_pcm`).

The rest of musrec depends on this protocol only: :class:`~musrec.embedding.local.LocalEmbedder` runs VGGish in this
process, :class:`~musrec.embedding.max_client.MaxEmbedder` asks MAX servers over HTTP.

**Every embedder embeds the same samples** (issue 26): the input as 16-kHz mono 16-bit PCM (channels averaged, then
resampled, then rounded to 16 bits). That is what a MAX server is sent, since its API takes only 16-bit PCM WAVs, and
what the in-process model embeds, so the two give the same codes, bit for bit, at any rate and channel count.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from musrec.audio.wav import INT16_MAX, INT16_MIN, INT16_SCALE
from musrec.vggish.frontend import SAMPLE_RATE, mono_16k


def vggish_pcm(samples: npt.NDArray[np.floating], sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.int16]:
    """What every embedder embeds: float samples in [-1, 1] (1-D or ``[n_samples, channels]``) as 16-kHz mono 16-bit
    PCM, as a WAV upload carries them.

    Channels are averaged, the mean resampled to 16 kHz (the reference's order), then scaled by 32768, rounded and
    clipped (+1.0 becomes 32767). ValueError for NaN or infinity, a rate that is not positive, or integer samples.
    """
    mono = mono_16k(samples, sample_rate)
    return np.clip(np.rint(mono * INT16_SCALE), INT16_MIN, INT16_MAX).astype(np.int16)


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns audio into VGGish codes in the space of AudioSet's released embeddings."""

    def embed(self, samples: npt.NDArray[np.floating], sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.uint8]:
        """Float samples in [-1, 1] (1-D or [n_samples, channels]) -> [n, 128] uint8, one row per 0.96 s.

        The whole input is embedded (no 10-second cut, no padding), as :func:`vggish_pcm` gives it; under 0.975 s
        gives zero rows.
        """
        ...
