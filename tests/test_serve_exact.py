"""Issue 26: `musrec serve` gives the embedding of the in-process model, value for value, at any rate and channel count.

The query a user sends is decoded and resampled to 16 kHz in this process, then embedded either here or by a MAX
server; both must answer the same uint8 codes, so `recommend --embedder max` against `musrec serve` ranks exactly as
`recommend` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from audioset_fixtures import make_segments
from max_fixtures import LoopThread, Served, form, int16_clip, request, serving, wav_bytes
from vggish_fixtures import shared_vggish_files

from musrec.audio.decode import decode
from musrec.audio.wav import read_wav_bytes, to_wav_bytes
from musrec.audioset.labels import default_labels
from musrec.audioset.records import Segment
from musrec.audioset.representation import fit_rows
from musrec.cli import main
from musrec.embedding.base import vggish_pcm
from musrec.embedding.local import LocalEmbedder
from musrec.embedding.max_client import MaxEmbedder
from musrec.embedding.server import make_app
from musrec.index.build import BuildOptions, build_index

RATES = (44100, 48000)
CLIP_S = 12.0


def music(seconds: float, rate: int, *, seed: int) -> np.ndarray:
    """A stereo recording with a loud part, not on any grid but 16-bit PCM's: what a 44.1/48 kHz WAV holds."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    notes = 196.0 * 2 ** (seed * 5 / 12) * 2 ** ((np.floor(t * (3 + seed)) % 7) * 2 / 12)
    left = 0.25 * np.sin(2 * np.pi * np.cumsum(notes) / rate) + 0.05 * rng.standard_normal(len(t))
    right = 0.2 * np.sin(2 * np.pi * 1.5 * np.cumsum(notes) / rate + 0.3) + 0.05 * rng.standard_normal(len(t))
    loud = 0.5 + 0.5 * (t > seconds / 2)
    return np.stack([left * loud, right * loud], axis=1)


@pytest.fixture(scope="module")
def server(server_loop: LoopThread, local_embedder: LocalEmbedder) -> Iterator[Served]:
    with serving(server_loop, make_app(local_embedder)) as served:
        yield served


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("recordings")
    paths = {}
    for i, rate in enumerate(RATES):
        path = root / f"guitar-{rate}.wav"
        path.write_bytes(wav_bytes(music(CLIP_S, rate, seed=i), rate=rate))
        paths[rate] = path
    return paths


@pytest.fixture(scope="module", params=["annoy", "ivf"])
def config_file(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    local_embedder: LocalEmbedder,
    recordings: dict[int, Path],
) -> Path:
    """An index holding, among synthetic segments, neighbours of the recordings: near ties to rank."""
    root = tmp_path_factory.mktemp(f"serve-exact-{request.param}")
    segments: list[Segment] = make_segments(400, split="eval")
    for rate, path in recordings.items():
        rows = local_embedder.embed(decode(path).samples[2 * 16000 : 12 * 16000])  # the loud 10 s
        for k in range(4):  # the recording's own codes, nudged: the ranking among them turns on single values
            nudged = np.clip(rows.astype(int) + np.random.default_rng(k).integers(-1, 2, rows.shape), 0, 255)
            segments.append(Segment(f"near{rate}x{k}", 0.0, 10.0, (140,), "eval", fit_rows(nudged.astype(np.uint8))))
    options = BuildOptions(trees=10, backend=request.param)
    build_index(segments, root / "index", labels=default_labels(), options=options)
    files = shared_vggish_files(tmp_path_factory)
    config = root / "config.toml"
    config.write_text(
        f'[index]\npath = "{root / "index"}"\n'
        f'[embedder]\ncheckpoint = "{files.checkpoint}"\npca_params = "{files.pca_column}"\n'
    )
    return config


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, object]:
    assert main(argv) == 0, capsys.readouterr().err
    answer: dict[str, object] = json.loads(capsys.readouterr().out)
    return answer


@pytest.mark.parametrize("rate", RATES)
def test_issue_26_serve_embeds_a_stereo_recording_as_in_process(
    rate: int,
    config_file: Path,
    recordings: dict[int, Path],
    server: Served,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`embed` and `recommend` on a 44.1/48 kHz stereo WAV: the same codes and the same ranking through a server."""
    path = str(recordings[rate])
    base = ["--config", str(config_file)]
    remote = ["--embedder", "max", "--max-url", server.url]
    local_rows = _json(capsys, [*base, "embed", path, "--json"])["embedding"]
    remote_rows = _json(capsys, [*base, "embed", path, *remote, "--json"])["embedding"]
    assert np.asarray(local_rows).shape == (12, 128)
    assert remote_rows == local_rows
    local = _json(capsys, [*base, "recommend", path, "--top-k", "8", "--json"])
    through = _json(capsys, [*base, "recommend", path, "--top-k", "8", "--json", *remote])
    assert through["matches"] == local["matches"]
    assert str(local["matches"][0]["video_id"]).startswith(f"near{rate}")  # type: ignore[index]


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("channels", [1, 2])
def test_issue_26_client_and_local_embedder_agree_on_any_samples(
    rate: int, channels: int, server: Served, local_embedder: LocalEmbedder
) -> None:
    """The library's two embedders on float samples at the source rate, on no 16-bit grid: equal, bit for bit."""
    x = music(3.5, rate, seed=rate % 7)[:, :channels] * 0.9
    x = x[:, 0] if channels == 1 else x
    with MaxEmbedder([server.url]) as client:
        remote = client.embed(x, rate)
    local = local_embedder.embed(x, rate)
    assert local.shape == (3, 128)
    np.testing.assert_array_equal(remote, local)


@pytest.mark.parametrize("rate", RATES)
def test_issue_26_server_resamples_a_wav_sent_at_its_own_rate_as_in_process(
    rate: int, server: Served, local_embedder: LocalEmbedder
) -> None:
    """A MAX client that uploads a 44.1/48 kHz stereo WAV as it is (IBM's examples do): the server averages the
    channels, then resamples, and answers what the in-process embedder gives for the same file."""
    stereo = int16_clip(2.5, rate=rate, channels=2, seed=rate)
    upload = wav_bytes(stereo, rate=rate)
    answer = request("POST", server.url + "/model/predict", data=form("audio", upload))
    assert answer.status == 200, answer.text
    np.testing.assert_array_equal(
        np.asarray(answer.json()["embedding"], dtype=np.uint8), local_embedder.embed(stereo, rate)
    )


def test_vggish_pcm_is_what_a_wav_carries() -> None:
    """The one quantisation both embedders apply: the 16-kHz 16-bit PCM a WAV upload carries, so writing it as a WAV
    and reading it back changes nothing."""
    x = music(2.0, 44100, seed=3)
    pcm = vggish_pcm(x, 44100)
    assert pcm.dtype == np.int16 and len(pcm) == int(len(x) * 16000 / 44100)
    sent, rate = read_wav_bytes(to_wav_bytes(pcm / 32768.0))
    assert rate == 16000
    np.testing.assert_array_equal(sent * 32768.0, pcm)
    # Full scale: +1.0 is the largest 16-bit value, as a WAV writer stores it.
    assert vggish_pcm(np.ones(16000), 16000).max() == 32767
