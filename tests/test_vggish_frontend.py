"""VGGish front end against the numbers of its specification (no TensorFlow needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from vggish_fixtures import music_like, tone

from musrec.audio.resample import resample
from musrec.vggish.frontend import (
    EXAMPLE_FRAMES,
    LOG_OFFSET,
    MIN_EXAMPLE_SAMPLES,
    NUM_MEL_BANDS,
    SPECTROGRAM_BINS,
    STFT_HOP_SAMPLES,
    STFT_WINDOW_SAMPLES,
    frame,
    hertz_to_mel,
    log_mel_spectrogram,
    mel_matrix,
    periodic_hann,
    spectrogram,
    to_mono,
    waveform_to_examples,
)


def htk_mel(hz: float) -> float:
    return 1127.0 * math.log(1.0 + hz / 700.0)


@pytest.mark.parametrize(
    ("n_samples", "frames", "examples"),
    [
        (160_000, 998, 10),  # 10.0 s
        (153_840, 960, 10),  # the shortest input with 10 examples
        (153_839, 959, 9),
        (15_600, 96, 1),  # 0.975 s
        (15_599, 95, 0),
        (400, 1, 0),
        (399, 0, 0),
        (0, 0, 0),
    ],
)
def test_frame_and_example_counts(n_samples: int, frames: int, examples: int) -> None:
    x = np.zeros(n_samples)
    assert log_mel_spectrogram(x).shape == (frames, NUM_MEL_BANDS)
    out = waveform_to_examples(x, 16000)
    assert out.shape == (examples, EXAMPLE_FRAMES, NUM_MEL_BANDS)
    assert out.dtype == np.float32


def test_min_example_samples_constant() -> None:
    assert MIN_EXAMPLE_SAMPLES == 15_600
    assert waveform_to_examples(np.zeros(MIN_EXAMPLE_SAMPLES), 16000).shape[0] == 1
    assert waveform_to_examples(np.zeros(MIN_EXAMPLE_SAMPLES - 1), 16000).shape[0] == 0


def test_frame_drops_incomplete_tail_and_is_a_view() -> None:
    data = np.arange(11.0)
    frames = frame(data, 4, 3)
    np.testing.assert_array_equal(frames, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    assert np.shares_memory(frames, data)
    assert not frames.flags.writeable
    two_d = frame(np.arange(20.0).reshape(10, 2), 4, 4)
    assert two_d.shape == (2, 4, 2)
    np.testing.assert_array_equal(two_d[1, 0], [8, 9])
    assert frame(data, 12, 1).shape == (0, 12)


def test_examples_do_not_overlap() -> None:
    x = music_like(3.0)
    log_mel = log_mel_spectrogram(x)
    examples = waveform_to_examples(x, 16000)
    assert examples.shape[0] == 3
    for i in range(3):
        np.testing.assert_array_equal(examples[i], log_mel[96 * i : 96 * (i + 1)].astype(np.float32))


def test_periodic_not_symmetric_hann() -> None:
    w = periodic_hann(STFT_WINDOW_SAMPLES)
    assert w.shape == (400,)
    assert w[0] == 0.0
    assert w[200] == 1.0
    # Periodic: one period of length 400, i.e. the symmetric window of length 401 without its last point.
    np.testing.assert_allclose(w, np.hanning(401)[:400], atol=1e-15)
    np.testing.assert_allclose(w[1:], w[1:][::-1], atol=1e-15)
    assert np.max(np.abs(w - np.hanning(400))) > 1e-3
    n = np.arange(400)
    np.testing.assert_allclose(w, 0.5 - 0.5 * np.cos(2 * np.pi * n / 400), atol=1e-15)


def test_spectrogram_is_windowed_dft_magnitude_without_centring() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(1000)
    spec = spectrogram(x)
    assert spec.shape == (1 + (1000 - 400) // 160, SPECTROGRAM_BINS)
    # Frame 2 starts at sample 320 (no centring); a direct 512-point DFT of the zero-padded windowed frame.
    segment = x[2 * STFT_HOP_SAMPLES : 2 * STFT_HOP_SAMPLES + 400] * periodic_hann(400)
    k = np.arange(SPECTROGRAM_BINS)[:, None]
    n = np.arange(400)[None, :]
    direct = np.abs((segment[None, :] * np.exp(-2j * np.pi * k * n / 512)).sum(axis=1))
    np.testing.assert_allclose(spec[2], direct, rtol=1e-9, atol=1e-9)


def test_hertz_to_mel_htk() -> None:
    assert float(hertz_to_mel(0.0)) == 0.0
    assert float(hertz_to_mel(1000.0)) == pytest.approx(999.9907, abs=1e-4)  # HTK: ~1000 mel at 1 kHz
    assert float(hertz_to_mel(700.0)) == pytest.approx(1127.0 * math.log(2.0), rel=1e-15)


def test_mel_matrix_hand_computed_entries() -> None:
    m = mel_matrix()
    assert m.shape == (SPECTROGRAM_BINS, NUM_MEL_BANDS)
    # Bin 32 is 1000 Hz (bins are 31.25 Hz apart). Its position between the 66 band edges, in edge units:
    spacing = (htk_mel(7500.0) - htk_mel(125.0)) / 65
    pos = (htk_mel(1000.0) - htk_mel(125.0)) / spacing  # 20.46: between edges 20 and 21
    assert 20 < pos < 21
    # Band 19 (edges 19..21) is on its falling side there, band 20 (edges 20..22) on its rising side.
    assert m[32, 19] == pytest.approx(21 - pos, rel=1e-12)
    assert m[32, 20] == pytest.approx(pos - 20, rel=1e-12)
    assert m[32, 19] == pytest.approx(0.53630063, abs=1e-8)
    assert m[32, 20] == pytest.approx(0.46369937, abs=1e-8)
    assert np.count_nonzero(m[32]) == 2
    # Band 0's lowest edge is 125 Hz = bin 4, weight exactly 0; bin 5 (156.25 Hz) is just past its peak.
    pos5 = (htk_mel(156.25) - htk_mel(125.0)) / spacing
    assert 1 < pos5 < 2
    assert m[4, 0] == 0.0
    assert m[5, 0] == pytest.approx(2 - pos5, rel=1e-12)
    assert m[5, 1] == pytest.approx(pos5 - 1, rel=1e-12)
    # Nothing reaches above 7500 Hz (bin 240).
    assert not m[241:].any()


def test_mel_matrix_shape_properties() -> None:
    m = mel_matrix()
    assert not m[0].any()  # the DC row is zero
    assert m.min() >= 0.0
    assert m.max() <= 1.0
    assert (m > 0).sum(axis=0).min() >= 1  # every band sees at least one bin
    # Not area-normalised: high bands are wider, so their columns sum to more.
    sums = m.sum(axis=0)
    assert sums[-1] > 5 * sums[0]


@pytest.mark.parametrize("band", [20, 35, 50, 60])
def test_tone_at_a_band_centre_peaks_in_that_band(band: int) -> None:
    edges = np.linspace(htk_mel(125.0), htk_mel(7500.0), NUM_MEL_BANDS + 2)
    centre_hz = 700.0 * (math.exp(edges[band + 1] / 1127.0) - 1.0)
    log_mel = log_mel_spectrogram(tone(centre_hz, 1.0))
    assert int(np.argmax(log_mel.mean(axis=0))) == band


def test_tone_at_1khz_lands_in_the_bands_covering_it() -> None:
    log_mel = log_mel_spectrogram(tone(1000.0, 1.0))
    assert int(np.argmax(log_mel.mean(axis=0))) in (19, 20)
    assert log_mel.mean(axis=0).max() > 2.0
    assert log_mel[:, 5].max() < math.log(LOG_OFFSET) + 0.5  # far bands hear only window leakage


def test_log_offset_on_silence() -> None:
    log_mel = log_mel_spectrogram(np.zeros(16000))
    assert (log_mel == math.log(LOG_OFFSET)).all()
    examples = waveform_to_examples(np.zeros(32000), 16000)
    assert (examples == np.float32(math.log(0.01))).all()


def test_log_mel_is_ln_of_mel_energies_plus_offset() -> None:
    """The reference's dense product, to the last bits of float64: the sparse product adds the same nonzero terms
    in another order (each sum moves by an ulp or two, 2.2e-16 relative each), and the log turns a relative error
    of its argument into the same absolute one."""
    x = music_like(1.0)
    expected = np.log(spectrogram(x) @ mel_matrix() + 0.01)
    np.testing.assert_allclose(log_mel_spectrogram(x), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_network_gets_the_reference_s_examples(seed: int) -> None:
    """Rounded to float32 (the network's input), the sparse product's examples are the dense product's: a float64
    value an ulp or two off can only round to the neighbouring float32 at most, and in practice rounds the same."""
    x = music_like(10.0, seed=seed)
    dense = np.log(spectrogram(x) @ mel_matrix() + 0.01)
    examples = waveform_to_examples(x, 16000)
    reference = frame(dense, 96, 96).astype(np.float32)
    np.testing.assert_array_max_ulp(examples, reference, maxulp=1)


def test_float64_inside_float32_out() -> None:
    x = music_like(2.0).astype(np.float32)
    examples = waveform_to_examples(x, 16000)
    assert examples.dtype == np.float32
    reference = log_mel_spectrogram(x.astype(np.float64))[:192].reshape(2, 96, 64)
    np.testing.assert_array_equal(examples, reference.astype(np.float32))


def test_stereo_is_averaged_before_resampling() -> None:
    left = music_like(2.5, rate=44100, seed=1)
    right = tone(660.0, 2.5, rate=44100)
    stereo = np.stack([left, right], axis=1)
    expected = log_mel_spectrogram(resample((left + right) / 2, 44100, 16000))
    examples = waveform_to_examples(stereo, 44100)
    assert examples.shape == (2, 96, 64)
    np.testing.assert_array_equal(examples, expected[:192].reshape(2, 96, 64).astype(np.float32))
    np.testing.assert_array_equal(to_mono(stereo), (left + right) / 2)


def test_anti_phase_stereo_cancels_to_silence() -> None:
    x = music_like(1.0, rate=48000)
    examples = waveform_to_examples(np.stack([x, -x], axis=1), 48000)
    assert (examples == np.float32(math.log(LOG_OFFSET))).all()


@pytest.mark.parametrize(
    ("rate", "seconds", "examples"),
    [(44100, 10.0, 10), (48000, 10.0, 10), (44100, 5.0, 5), (22050, 2.0, 2), (8000, 1.0, 1), (44100, 0.97, 0)],
)
def test_other_rates_give_the_expected_example_count(rate: int, seconds: float, examples: int) -> None:
    x = music_like(seconds, rate=rate)
    assert waveform_to_examples(x, rate).shape == (examples, 96, 64)


def test_resampled_tone_keeps_its_band() -> None:
    at_16k = log_mel_spectrogram(tone(1000.0, 1.0)).mean(axis=0)
    at_44k = waveform_to_examples(tone(1000.0, 1.0, rate=44100), 44100)[0].mean(axis=0)
    assert int(np.argmax(at_44k)) == int(np.argmax(at_16k))
    loud = at_16k > 0.0  # below that, resampler noise near the log floor dominates
    assert loud.sum() >= 3
    np.testing.assert_allclose(at_44k[loud], at_16k[loud], atol=0.05)


def test_16k_input_is_not_resampled() -> None:
    x = music_like(1.0)
    np.testing.assert_array_equal(waveform_to_examples(x, 16000)[0], log_mel_spectrogram(x)[:96].astype(np.float32))


@pytest.mark.parametrize(
    ("samples", "rate", "message"),
    [
        (np.zeros(16000, dtype=np.int16), 16000, "float samples"),
        (np.zeros((10, 2, 2)), 16000, "shape"),
        (np.zeros(16000), 0, "sample rate"),
        (np.full(16000, np.nan), 16000, "NaN"),
    ],
)
def test_rejects_bad_input(samples: np.ndarray, rate: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        waveform_to_examples(samples, rate)
