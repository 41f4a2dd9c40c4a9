"""Issue 26: `musrec serve` as the README shows it: a port in use is one line before the model loads, and the curl
command the README gives is answered with an embedding."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from max_fixtures import WAIT_S, LoopThread, Served, int16_clip, serve_log_levels, serving, wav_bytes

from musrec.cli import main
from musrec.embedding.local import LocalEmbedder
from musrec.embedding.server import MSG_INVALID_TYPE, make_app

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def server(server_loop: LoopThread, local_embedder: LocalEmbedder) -> Iterator[Served]:
    with serving(server_loop, make_app(local_embedder)) as served:
        yield served


@pytest.fixture(autouse=True)
def _levels() -> Iterator[None]:
    with serve_log_levels():
        yield


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_issue_26_a_port_in_use_is_one_line_before_the_model_loads(
    taken_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model files named here do not exist: had serve loaded the model first, the error would be about them."""
    monkeypatch.chdir(tmp_path)
    argv = ["serve", "--port", str(taken_port), "--checkpoint", str(tmp_path / "none.ckpt")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == (
        f"musrec: error: port {taken_port} on 127.0.0.1 is already in use (another musrec serve or MAX server?): "
        "stop it, or choose another port with --port\n"
    )


def test_issue_26_a_host_that_is_not_here_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--host", "192.0.2.1", "--port", "0", "--checkpoint", str(tmp_path / "none.ckpt")]) == 1
    assert capsys.readouterr().err == (
        "musrec: error: 192.0.2.1 is not an address of this machine: choose another with --host\n"
    )


def _readme_curl() -> list[str]:
    """The curl command of the README's `musrec serve` section, as words."""
    (line,) = [
        line for line in README.read_text().splitlines() if line.startswith("curl ") and "/model/predict" in line
    ]
    return shlex.split(line)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_issue_26_the_readme_curl_example_gets_an_embedding(
    server: Served, local_embedder: LocalEmbedder, tmp_path: Path
) -> None:
    clip = int16_clip(2.5, rate=44100, channels=2)
    (tmp_path / "clip.wav").write_bytes(wav_bytes(clip, rate=44100))
    words = [re.sub(r"^http://127\.0\.0\.1:5000", server.url, word) for word in _readme_curl()]
    assert words[-1] == server.url + "/model/predict"
    done = subprocess.run(["curl", "-sS", *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["status"] == "ok"
    assert answer["embedding"] == local_embedder.embed(clip, 44100).astype(float).tolist()
    # Without the type, curl's default (application/octet-stream) is refused, as the README says.
    plain = [word.replace(";type=audio/wav", "") for word in words]
    refused = subprocess.run(["curl", "-sS", *plain[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=WAIT_S)
    assert json.loads(refused.stdout) == {"status": "error", "message": MSG_INVALID_TYPE}
