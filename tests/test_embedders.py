"""LocalEmbedder end to end: real TensorFlow on a random-weight checkpoint in the official layout."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from max_fixtures import wav_bytes
from tolerances import network_atol
from vggish_fixtures import VggishFiles, music_like, shared_embedder, shared_vggish_files, tone

from musrec.audio.resample import resample
from musrec.audioset.representation import REPRESENTATION_DIMS, fit_rows, represent
from musrec.embedding.base import Embedder, vggish_pcm
from musrec.embedding.local import BATCH_EXAMPLES, LocalEmbedder
from musrec.errors import EmbedderError
from musrec.vggish.frontend import waveform_to_examples
from musrec.vggish.postprocess import load_pca_params, postprocess

EXAMPLE_SAMPLES = 96 * 160  # one example's hop in samples at 16 kHz


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> VggishFiles:
    return shared_vggish_files(tmp_path_factory)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> LocalEmbedder:
    return shared_embedder(tmp_path_factory)


@pytest.fixture(scope="module")
def relu_embedder(tmp_path_factory: pytest.TempPathFactory) -> LocalEmbedder:
    return shared_embedder(tmp_path_factory, relu=True)


def test_is_an_embedder(embedder: LocalEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.relu is False


@pytest.mark.parametrize(("n_samples", "rows"), [(160_000, 10), (153_840, 10), (153_839, 9), (15_600, 1)])
def test_one_row_per_example_over_the_whole_input(embedder: LocalEmbedder, n_samples: int, rows: int) -> None:
    codes = embedder.embed(music_like(n_samples / 16000))
    assert codes.shape == (rows, 128)
    assert codes.dtype == np.uint8


def test_no_ten_second_cut(embedder: LocalEmbedder) -> None:
    assert embedder.embed(music_like(25.0)).shape == (26, 128)


def test_short_input_gives_zero_rows(embedder: LocalEmbedder) -> None:
    for samples in (music_like(0.97), np.zeros(0)):
        codes = embedder.embed(samples)
        assert codes.shape == (0, 128)
        assert codes.dtype == np.uint8


def test_codes_spread_over_the_byte_range(embedder: LocalEmbedder) -> None:
    codes = embedder.embed(music_like(5.0))
    assert codes.min() < 64 and codes.max() > 192
    saturated = np.mean((codes == 0) | (codes == 255))
    assert saturated < 0.1
    assert len({row.tobytes() for row in codes}) == len(codes)  # successive seconds differ


def test_deterministic(embedder: LocalEmbedder) -> None:
    x = music_like(3.0, seed=7)
    np.testing.assert_array_equal(embedder.embed(x), embedder.embed(x))


def test_embed_is_frontend_then_model_then_postprocess(embedder: LocalEmbedder, files: VggishFiles) -> None:
    """On 16-bit samples (a 16-kHz WAV as read) ``embed`` is exactly the reference's chain; other floats are embedded
    as their 16-bit PCM, as a MAX server is sent them (issue 26)."""
    vectors, means = load_pca_params(files.pca_column)

    def chain(x: np.ndarray) -> np.ndarray:
        return postprocess(embedder.embed_examples(waveform_to_examples(x, 16000)), eigen_vectors=vectors, means=means)

    pcm16 = np.round(music_like(4.0, seed=2) * 32768) / 32768
    np.testing.assert_array_equal(embedder.embed(pcm16), chain(pcm16))
    floats = music_like(4.0, seed=2)
    np.testing.assert_array_equal(embedder.embed(floats), chain(vggish_pcm(floats) / 32768))


def test_batches_agree_with_single_passes(embedder: LocalEmbedder) -> None:
    x = music_like((BATCH_EXAMPLES + 3) * 0.96 + 0.1, seed=3)
    examples = waveform_to_examples(x, 16000)
    assert len(examples) == BATCH_EXAMPLES + 3
    batched = embedder.embed_examples(examples)
    tail = embedder.embed_examples(examples[BATCH_EXAMPLES:])
    # Another batch size may sum in another order: equal to float32 rounding (tests/tolerances.py).
    np.testing.assert_allclose(batched[BATCH_EXAMPLES:], tail, rtol=0, atol=network_atol(tail))


def test_rows_are_aligned_to_example_boundaries(embedder: LocalEmbedder) -> None:
    x = music_like(6.0, seed=4)
    whole = embedder.embed(x)
    later = embedder.embed(x[2 * EXAMPLE_SAMPLES :])
    assert len(later) == len(whole) - 2
    assert np.abs(whole[2:].astype(int) - later.astype(int)).max() <= 1


def test_relu_variant(embedder: LocalEmbedder, relu_embedder: LocalEmbedder) -> None:
    assert relu_embedder.relu is True
    examples = waveform_to_examples(music_like(3.0, seed=5), 16000)
    pre = embedder.embed_examples(examples)
    post = relu_embedder.embed_examples(examples)
    assert (pre < 0).any()
    # Another model object (a fused kernel may sum in another order): equal to float32 rounding.
    np.testing.assert_allclose(post, np.maximum(pre, 0.0), rtol=0, atol=network_atol(pre))
    x = music_like(3.0, seed=5)
    assert not np.array_equal(embedder.embed(x), relu_embedder.embed(x))


def test_stereo_44k(embedder: LocalEmbedder) -> None:
    left = music_like(3.0, rate=44100, seed=1)
    right = tone(330.0, 3.0, rate=44100, amplitude=0.2)
    codes = embedder.embed(np.stack([left, right], axis=1), 44100)
    assert codes.shape == (3, 128)
    np.testing.assert_array_equal(codes, embedder.embed(resample((left + right) / 2, 44100), 16000))


def test_float32_input(embedder: LocalEmbedder) -> None:
    x = music_like(2.0)
    np.testing.assert_array_equal(
        embedder.embed(x.astype(np.float32)), embedder.embed(x.astype(np.float32).astype(np.float64))
    )


def test_concurrent_calls_match_serial_ones(embedder: LocalEmbedder) -> None:
    inputs = [music_like(2.0 + i * 0.5, seed=10 + i) for i in range(4)]
    serial = [embedder.embed(x) for x in inputs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = embedder.embed(inputs[i])
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    for i, expected in enumerate(serial):
        np.testing.assert_array_equal(results[i], expected)


@pytest.mark.parametrize("representation", sorted(REPRESENTATION_DIMS))
def test_query_codes_and_released_codes_share_one_space(embedder: LocalEmbedder, representation: str) -> None:
    query = embedder.embed(music_like(10.0))
    released = np.frombuffer(bytes(range(256)) * 5, dtype=np.uint8).reshape(10, 128)  # AudioSet: 128 bytes/s
    assert query.dtype == released.dtype == np.uint8
    q = represent(fit_rows(query)[None], representation)
    r = represent(fit_rows(released)[None], representation)
    assert q.dtype == r.dtype == np.float32
    assert q.shape == r.shape == (1, REPRESENTATION_DIMS[representation])
    assert -1.0 <= float((q @ r.T)[0, 0]) <= 1.0
    np.testing.assert_allclose(np.linalg.norm(q), 1.0, rtol=1e-6)


def test_missing_files_raise_embedder_error(files: VggishFiles, tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="PCA parameters not found"):
        LocalEmbedder(files.checkpoint, tmp_path / "none.npz")
    with pytest.raises(EmbedderError, match="checkpoint not found"):
        LocalEmbedder(tmp_path / "none.ckpt", files.pca_column)


def test_issue_26_swapped_model_files_are_named_in_one_line(files: VggishFiles, tmp_path: Path) -> None:
    """Each file given as the other: one line saying so, never numpy's advice to load pickles."""
    with pytest.raises(EmbedderError) as swapped:
        LocalEmbedder(files.pca_column, files.checkpoint)
    text = str(swapped.value)
    assert "swapped" in text and files.pca_column.name in text and files.checkpoint.name in text
    with pytest.raises(
        EmbedderError, match=f"{files.checkpoint.name}, given as the VGGish PCA file .* is the checkpoint"
    ):
        LocalEmbedder(files.checkpoint, files.checkpoint)
    with pytest.raises(
        EmbedderError, match=f"{files.pca_flat.name}, given as the VGGish checkpoint .* is the PCA file"
    ):
        LocalEmbedder(files.pca_flat, files.pca_column)
    other = tmp_path / "notes.txt"
    other.write_text("not a model file at all\n")
    with pytest.raises(EmbedderError, match="notes.txt is not a VGGish PCA file") as neither:
        LocalEmbedder(files.checkpoint, other)
    for err in (swapped, neither):
        assert "pickle" not in str(err.value) and "\n" not in str(err.value)


def test_issue_26_swapped_model_files_at_the_command_line(
    files: VggishFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from musrec.cli import main

    monkeypatch.chdir(tmp_path)  # no config.toml from elsewhere
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(music_like(2.0), rate=16000))
    argv = ["embed", str(clip), "--checkpoint", str(files.pca_column), "--pca-params", str(files.checkpoint)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("musrec: error: the VGGish files are swapped") and err.count("\n") == 1
    assert "allow_pickle" not in err


def test_rejects_integer_samples(embedder: LocalEmbedder) -> None:
    with pytest.raises(ValueError, match="float samples"):
        embedder.embed(np.zeros(16000, dtype=np.int16))


def test_embed_examples_validates_shape(embedder: LocalEmbedder) -> None:
    with pytest.raises(ValueError, match="examples"):
        embedder.embed_examples(np.zeros((96, 64), np.float32))
    assert embedder.embed_examples(np.zeros((0, 96, 64), np.float32)).shape == (0, 128)
