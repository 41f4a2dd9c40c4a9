"""New audio end to end: `musrec embed`, `musrec recommend FILE` and `musrec serve`, on a random-weight VGGish."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from audio_fixtures import ffmpeg, tone
from audioset_fixtures import make_segments
from tolerances import dot_tolerance
from vggish_fixtures import distinct_clip, music_like, shared_embedder, shared_vggish_files

from musrec.audio.decode import decode
from musrec.audio.wav import to_wav_bytes
from musrec.audioset.labels import default_labels
from musrec.audioset.records import Segment
from musrec.audioset.representation import fit_rows
from musrec.cli import main
from musrec.config import load_config
from musrec.embedding.local import LocalEmbedder
from musrec.index.build import BuildOptions, build_index
from musrec.pipeline import Musrec

RATE = 16000
CLIPS = 6  # real audio clips indexed as if they were AudioSet segments


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> LocalEmbedder:
    return shared_embedder(tmp_path_factory)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("clips")
    paths = []
    for i in range(CLIPS):
        path = root / f"clip{i}.wav"
        path.write_bytes(to_wav_bytes(distinct_clip(i, 12.0)))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, embedder: LocalEmbedder, clips: list[Path]) -> Path:
    """An index holding the embeddings of the clips' first 10 s (as AudioSet would) among synthetic segments."""
    root = tmp_path_factory.mktemp("pipeline")
    segments: list[Segment] = make_segments(300, split="eval")
    for i, path in enumerate(clips):
        audio = decode(path)
        rows = embedder.embed(audio.samples[: 10 * RATE])
        segments.append(Segment(f"clipvideo{i:02d}", 0.0, 10.0, (140,), "eval", fit_rows(rows)))
    build_index(segments, root / "index", labels=default_labels(), options=BuildOptions(trees=10))
    files = shared_vggish_files(tmp_path_factory)
    config = root / "config.toml"
    config.write_text(
        f'[index]\npath = "{root / "index"}"\n'
        f'[embedder]\ncheckpoint = "{files.checkpoint}"\npca_params = "{files.pca_column}"\n'
    )
    return config


def test_embed_json_matches_the_library(
    config_file: Path, clips: list[Path], embedder: LocalEmbedder, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config_file), "embed", str(clips[0]), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["embedding"]
    assert len(rows) == 12 and all(len(r) == 128 for r in rows)  # one row per 0.96 s of 12 s, like MAX
    assert all(isinstance(v, int) and 0 <= v <= 255 for r in rows for v in r)
    np.testing.assert_array_equal(np.array(rows, dtype=np.uint8), embedder.embed(decode(clips[0]).samples))


def test_embed_section_and_relu(config_file: Path, clips: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_file), "embed", str(clips[1]), "--start", "0:02", "--duration", "3s"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("3 rows x 128") and len(out) == 4
    assert main(["--config", str(config_file), "embed", str(clips[1]), "--json"]) == 0
    plain = np.array(json.loads(capsys.readouterr().out)["embedding"])
    assert main(["--config", str(config_file), "embed", str(clips[1]), "--relu", "--json"]) == 0
    relu = np.array(json.loads(capsys.readouterr().out)["embedding"])
    assert plain.shape == relu.shape and not np.array_equal(plain, relu)


def test_recommend_a_file_finds_its_own_segment(
    config_file: Path, clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["--config", str(config_file), "recommend", str(clips[3]), "--start", "0", "--top-k", "3", "--json"]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["query"] == {"kind": "file", "source": "clip3.wav", "start_s": 0.0, "end_s": 10.0, "window": "start"}
    top = data["matches"][0]
    # The clip's own segment: cosine 1 up to float32 rounding of a 1280-term dot product (tests/tolerances.py).
    assert top["video_id"] == "clipvideo03" and top["score"] == pytest.approx(1.0, abs=dot_tolerance(1280))
    assert top["url"] == "https://www.youtube.com/watch?v=clipvideo03&t=0s"
    # The same audio as an MP3 at 44.1 kHz stereo: decoded, resampled and windowed, it still finds itself first.
    mp3 = tmp_path / "clip3.mp3"
    ffmpeg("-i", str(clips[3]), "-ar", "44100", "-ac", "2", "-t", "10", "-c:a", "libmp3lame", "-b:a", "192k", str(mp3))
    assert main(["--config", str(config_file), "recommend", str(mp3), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["matches"][0]["video_id"] == "clipvideo03"


def test_default_window_skips_a_silent_intro(
    config_file: Path, clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    intro = np.zeros(20 * RATE)
    clip = decode(clips[4]).samples[: 10 * RATE]
    padded = tmp_path / "intro.wav"
    padded.write_bytes(to_wav_bytes(np.concatenate([intro, clip, intro[: 5 * RATE]])))
    assert main(["--config", str(config_file), "recommend", str(padded), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["query"]["start_s"] == 20.0 and data["query"]["end_s"] == 30.0
    assert data["matches"][0]["video_id"] == "clipvideo04"


def test_library_facade(config_file: Path, clips: list[Path]) -> None:
    config = load_config(config_file, environ={})
    musrec = Musrec.from_config(config)
    musrec.warm_up()
    by_bytes = musrec.recommend(clips[2].read_bytes(), name="upload.wav", start_s=0.0, k=2)
    assert by_bytes.query.source == "upload.wav" and by_bytes.matches[0].video_id == "clipvideo02"
    seg = musrec.index.store.get(0)
    by_segment = musrec.recommend(f"audioset:{seg.video_id}", k=2)
    assert by_segment.query.kind == "audioset" and len(by_segment.matches) == 2
    musrec.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp3", "no such file"),
        (lambda d: _write(d / "notes.mp3", b"just some text, not audio\n" * 50), "could not read this as audio"),
        (lambda d: _write(d / "empty.wav", b""), "the file is empty"),
        (lambda d: _write(d / "silence.wav", to_wav_bytes(np.zeros(5 * RATE))), "the audio is silent"),
        (lambda d: _write(d / "blip.wav", to_wav_bytes(music_like(0.5))), "at least 1 s is needed"),
    ],
)
def test_bad_input_is_one_line(
    config_file: Path,
    tmp_path: Path,
    make,
    message: str,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make(tmp_path)
    for command in ("recommend", "embed"):
        assert main(["--config", str(config_file), command, str(path)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("musrec: error: ") and message in err and "\n" not in err


def test_too_long_input(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tone(tmp_path / "long.wav", seconds=30.0, rate=16000)
    monkeypatch.setenv("MUSREC_AUDIO_MAX_DURATION_S", "20")
    assert main(["--config", str(config_file), "embed", str(path)]) == 1
    assert "longer than 20 seconds" in capsys.readouterr().err
    # recommend only needs a window: a long file is fine there.
    assert main(["--config", str(config_file), "recommend", str(path), "--json"]) == 0
    monkeypatch.setenv("MUSREC_AUDIO_MAX_BYTES", "1000")
    assert main(["--config", str(config_file), "recommend", str(path)]) == 1
    assert "musrec: error: " in capsys.readouterr().err


def test_missing_model_files(
    config_file: Path, clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config_file), "embed", str(clips[0]), "--checkpoint", str(tmp_path / "no.ckpt")]) == 1
    err = capsys.readouterr().err
    assert "VGGish model files not found (no.ckpt" in err and "musrec setup" in err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_and_embed_through_it(config_file: Path, clips: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    """`musrec serve` in its own process; `musrec embed --embedder max` against it equals the local embedding."""
    port = _free_port()
    exe = Path(sys.executable).parent / "musrec"
    server = subprocess.Popen(
        [str(exe), "--config", str(config_file), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/model/metadata", timeout=2) as r:
                    assert json.load(r)["id"] == "audio_embeddings-tf"
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.5)
        url = f"http://127.0.0.1:{port}"
        assert (
            main(
                ["--config", str(config_file), "embed", str(clips[5]), "--embedder", "max", "--max-url", url, "--json"]
            )
            == 0
        )
        remote = json.loads(capsys.readouterr().out)["embedding"]
        assert main(["--config", str(config_file), "embed", str(clips[5]), "--json"]) == 0
        local = json.loads(capsys.readouterr().out)["embedding"]
        assert remote == local
        assert (
            main(
                [
                    "--config",
                    str(config_file),
                    "recommend",
                    str(clips[5]),
                    "--start",
                    "0",
                    "--embedder",
                    "max",
                    "--max-url",
                    url,
                    "--json",
                ]
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out)["matches"][0]["video_id"] == "clipvideo05"
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert main(["--config", str(config_file), "embed", str(clips[5]), "--embedder", "max", "--max-url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("musrec: error: ") and "127.0.0.1" not in err  # no internal URL in user-facing text


def test_recommend_and_embed_a_link(
    config_file: Path,
    clips: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real yt-dlp against a loopback media server (the allow-list widened to 127.0.0.1 for this test only)."""
    from youtube_fixtures import media_server

    ffmpeg("-i", str(clips[3]), "-c:a", "aac", "-b:a", "160k", str(tmp_path / "clip3.m4a"))
    with media_server(tmp_path) as media:
        url = media.media("clip3.m4a")
        # The default policy: YouTube only, public addresses only.
        assert main(["--config", str(config_file), "recommend", url]) == 1
        assert capsys.readouterr().err.strip() == "musrec: error: links to IP addresses are not accepted"
        assert media.count("/media/") == 0
        monkeypatch.setenv("MUSREC_YOUTUBE_ALLOWED_HOSTS", "127.0.0.1")
        monkeypatch.setenv("MUSREC_YOUTUBE_ALLOW_PRIVATE_ADDRESSES", "true")
        monkeypatch.setenv("MUSREC_YOUTUBE_CACHE_PATH", str(tmp_path / "cache.sqlite3"))
        assert main(["--config", str(config_file), "recommend", url, "--start", "0", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["query"]["kind"] == "url" and data["query"]["start_s"] == 0.0 and data["query"]["end_s"] == 10.0
        assert data["query"]["cached"] is False
        assert data["matches"][0]["video_id"] == "clipvideo03"
        fetched = media.count("/media/")
        assert main(["--config", str(config_file), "recommend", url, "--start", "0", "--json"]) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["query"]["cached"] is True and again["matches"] == data["matches"]
        assert media.count("/media/") == fetched  # the same link again: no download
        assert main(["--config", str(config_file), "embed", url, "--start", "2", "--duration", "3", "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)["embedding"]) == 3
        assert main(["--config", str(config_file), "recommend", media.media("missing.m4a")]) == 1
        err = capsys.readouterr().err.strip()
        assert err == "musrec: error: nothing was found at that link (HTTP 404)"
