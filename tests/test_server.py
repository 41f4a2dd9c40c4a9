"""The MAX-compatible server, over real HTTP on 127.0.0.1, with the real LocalEmbedder (random weights)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from max_fixtures import (
    WAIT_S,
    Answer,
    GatedEmbedder,
    LoopThread,
    Served,
    dead_url,
    form,
    int16_clip,
    request,
    serve_log_levels,
    serving,
    wait_for_health,
    wav_bytes,
)
from vggish_fixtures import shared_vggish_files

from musrec.audio.limits import AudioLimits
from musrec.embedding.listen import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS
from musrec.embedding.local import LocalEmbedder
from musrec.embedding.server import DEFAULT_MAX_PENDING, MODEL_METADATA, make_app

MISSING = {
    "message": "Input payload validation failed",
    "errors": {"audio": "signed 16-bit PCM WAV audio file Missing required parameter in an uploaded file"},
}
INVALID_TYPE = {"status": "error", "message": "Invalid file type/extension"}


@pytest.fixture(scope="module")
def server(server_loop: LoopThread, local_embedder: LocalEmbedder) -> Iterator[Served]:
    with serving(server_loop, make_app(local_embedder)) as served:
        yield served


def predict(
    served: Served,
    data: aiohttp.FormData | aiohttp.MultipartWriter | bytes | None,
    *,
    headers: dict[str, str] | None = None,
) -> Answer:
    return request("POST", served.url + "/model/predict", data=data, headers=headers)


def test_metadata_is_maxs(server: Served) -> None:
    answer = request("GET", server.url + "/model/metadata")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json() == MODEL_METADATA
    assert answer.json()["id"] == "audio_embeddings-tf"
    assert answer.json()["type"] == "audio_embeddings"
    assert answer.json()["license"] == "Apache 2.0"
    assert set(answer.json()) == {"id", "name", "description", "type", "license", "source"}


def test_health(server: Served) -> None:
    answer = request("GET", server.url + "/health")
    assert (answer.status, answer.json()) == (200, {"status": "ok"})


def test_predict_matches_in_process_embedding(server: Served, local_embedder: LocalEmbedder) -> None:
    clip = int16_clip(3.2)
    answer = predict(server, form("audio", wav_bytes(clip, rate=16000)))
    assert answer.status == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert list(body) == ["status", "embedding"]
    assert body["status"] == "ok"
    rows = body["embedding"]
    assert len(rows) == 3 and all(len(row) == 128 for row in rows)
    # Serialised as MAX does: every value a float with a whole value, e.g. 158.0.
    assert all(type(v) is float and v.is_integer() for row in rows for v in row)
    assert ".0," in answer.text
    np.testing.assert_array_equal(np.array(rows, dtype=np.uint8), local_embedder.embed(clip, 16000))


def test_predict_stereo_44k_is_averaged_then_resampled(server: Served, local_embedder: LocalEmbedder) -> None:
    clip = int16_clip(2.5, rate=44100, channels=2, seed=3)
    answer = predict(server, form("audio", wav_bytes(clip, rate=44100), filename="stereo.wav"))
    assert answer.status == 200, answer.text
    got = np.array(answer.json()["embedding"], dtype=np.uint8)
    np.testing.assert_array_equal(got, local_embedder.embed(clip, 44100))


def test_clip_under_the_minimum_is_422(server: Served) -> None:
    """Issue 14: the [audio] limits apply to uploads too; a readable but too short clip is 422, not MAX's []."""
    answer = predict(server, form("audio", wav_bytes(int16_clip(0.9), rate=16000)))
    assert answer.status == 422
    assert answer.json() == {"status": "error", "message": "the audio is only 0.9 s long; at least 1 s is needed"}


def test_without_a_minimum_short_clips_give_no_rows_as_in_max(
    server_loop: LoopThread, local_embedder: LocalEmbedder
) -> None:
    with serving(server_loop, make_app(local_embedder, limits=AudioLimits(min_duration_s=0.0))) as lenient:
        answer = predict(lenient, form("audio", wav_bytes(int16_clip(0.9), rate=16000)))
    assert (answer.status, answer.json()) == (200, {"status": "ok", "embedding": []})


def test_clip_over_the_duration_limit_is_413(server_loop: LoopThread, local_embedder: LocalEmbedder) -> None:
    limits = AudioLimits(max_duration_s=2.0)
    with serving(server_loop, make_app(local_embedder, limits=limits)) as served:
        at_limit = predict(served, form("audio", wav_bytes(int16_clip(2.0), rate=16000)))
        over = predict(served, form("audio", wav_bytes(int16_clip(2.01), rate=16000)))
    assert at_limit.status == 200 and len(at_limit.json()["embedding"]) == 2
    assert over.status == 413
    assert over.json() == {"status": "error", "message": "the audio is longer than 2 seconds; choose a shorter part"}


def test_a_lying_header_costs_nothing(server: Served) -> None:
    """Issue 14: 96 KB of 16 kHz samples under a 1-Hz header (48,000 "seconds") made the server resample to
    768 million samples and die. Refused from the header now, as is a data size claiming more than was sent."""
    wav = wav_bytes(int16_clip(3.0), rate=16000)
    one_hz = wav[:24] + (1).to_bytes(4, "little") + (2).to_bytes(4, "little") + wav[32:]
    answer = predict(server, form("audio", one_hz))
    assert answer.status == 400
    assert answer.json() == {"status": "error", "message": "the audio's sample rate (1 Hz) is outside 4000-192000 Hz"}
    huge_data = wav[:40] + (0xFFFFFFF0).to_bytes(4, "little") + wav[44:]  # claims 4 GiB, holds 3 s
    answer = predict(server, form("audio", huge_data))
    assert answer.status == 200 and len(answer.json()["embedding"]) == 3
    assert (predict(server, form("audio", wav))).json() == answer.json()


@pytest.mark.parametrize("content_type", ["audio/wav", "audio/x-wav", "audio/wave", "AUDIO/WAV"])
def test_wav_content_types_are_accepted(server: Served, content_type: str) -> None:
    answer = predict(server, form("audio", wav_bytes(int16_clip(1.0), rate=16000), content_type=content_type))
    assert answer.status == 200, answer.text


@pytest.mark.parametrize(
    "content_type", ["audio/mpeg", "application/octet-stream", "text/plain", "x-audio/wav", "video/wav"]
)
def test_other_content_types_are_400(server: Served, content_type: str) -> None:
    answer = predict(server, form("audio", wav_bytes(int16_clip(1.0), rate=16000), content_type=content_type))
    assert (answer.status, answer.json()) == (400, INVALID_TYPE)


def test_missing_field_is_400_validation_error(server: Served) -> None:
    wav = wav_bytes(int16_clip(0.5), rate=16000)
    cases: list[aiohttp.FormData | aiohttp.MultipartWriter | bytes | None] = [
        form("file", wav),  # wrong field name
        form("audio", wav, filename=None),  # a plain form field, not an uploaded file
        None,  # no body at all
    ]
    for data in cases:
        answer = predict(server, data)
        assert (answer.status, answer.json()) == (400, MISSING)
    answer = predict(server, b'{"audio": "x"}', headers={"Content-Type": "application/json"})
    assert (answer.status, answer.json()) == (400, MISSING)


@pytest.mark.parametrize(
    "payload",
    [
        b"this is not a wav file",
        b"",
        wav_bytes(int16_clip(1.5), rate=16000, sampwidth=1),
        wav_bytes(int16_clip(1.5), rate=16000, sampwidth=3),
        wav_bytes(int16_clip(1.5), rate=16000, sampwidth=4),
        wav_bytes(int16_clip(1.5), rate=16000)[:30],  # truncated header
    ],
    ids=["text", "empty", "8-bit", "24-bit", "32-bit", "truncated"],
)
def test_non_int16_wav_is_400_with_json_message(server: Served, payload: bytes) -> None:
    """Issue 14: IBM's image answers 500 here, which makes clients retry the same file on every server."""
    answer = predict(server, form("audio", payload))
    assert answer.status == 400
    body = answer.json()
    assert body["status"] == "error"
    assert isinstance(body["message"], str) and body["message"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xyz", b"no boundary anywhere"),
        ("multipart/form-data", b"--xyz\r\n"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="audio"\r\n\r\nab',
        ),
    ],
    ids=["no-boundary-in-body", "no-boundary-parameter", "unterminated"],
)
def test_malformed_multipart_is_400(server: Served, content_type: str, body: bytes) -> None:
    answer = predict(server, body, headers={"Content-Type": content_type})
    assert answer.status == 400
    assert answer.json()["status"] == "error"


def test_body_over_limit_is_413(server_loop: LoopThread, local_embedder: LocalEmbedder) -> None:
    with serving(server_loop, make_app(local_embedder, max_bytes=40_000)) as small:
        answer = predict(small, form("audio", wav_bytes(int16_clip(1.5), rate=16000)))  # 48 kB
        assert answer.status == 413
        assert answer.json()["status"] == "error"
        # The server stays healthy after refusing an upload.
        ok = predict(small, form("audio", wav_bytes(int16_clip(1.0), rate=16000)))  # 32 kB
        assert ok.status == 200


def test_file_over_the_audio_byte_limit_is_413(server_loop: LoopThread, local_embedder: LocalEmbedder) -> None:
    wav = wav_bytes(int16_clip(1.5), rate=16000)
    with serving(server_loop, make_app(local_embedder, limits=AudioLimits(max_bytes=len(wav) - 1))) as small:
        answer = predict(small, form("audio", wav))
    assert answer.status == 413
    assert answer.json()["status"] == "error" and "larger than" in answer.json()["message"]


def test_unknown_route_and_method_answer_json(server: Served) -> None:
    missing = request("GET", server.url + "/nope")
    assert (missing.status, missing.json()["status"]) == (404, "error")
    wrong = request("GET", server.url + "/model/predict")
    assert wrong.status == 405
    assert wrong.json()["status"] == "error"
    assert "POST" in wrong.headers["Allow"]


def test_busy_model_blocks_neither_metadata_nor_health(
    server_loop: LoopThread,
    local_embedder: LocalEmbedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gated = GatedEmbedder(local_embedder)
    wav = wav_bytes(int16_clip(1.5), rate=16000)
    with serving(server_loop, make_app(gated, concurrency=1, max_pending=0)) as served:

        async def scenario() -> tuple[int, int, int]:
            timeout = aiohttp.ClientTimeout(total=WAIT_S)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                predict_url = served.url + "/model/predict"
                slow = asyncio.ensure_future(session.post(predict_url, data=form("audio", wav)))
                assert await asyncio.to_thread(gated.wait_entered)
                # The model is held at the gate, so answering at all shows metadata does not wait for it.
                async with session.get(served.url + "/model/metadata") as meta:
                    meta_status = meta.status
                # The only worker is busy and no queue is allowed: the next predicts are turned away at once.
                for _ in range(3):
                    async with session.post(predict_url, data=form("audio", wav)) as busy:
                        busy_status = busy.status
                        assert (await busy.json())["status"] == "error"
                gated.gate.set()
                async with await slow as done:
                    assert len((await done.json())["embedding"]) == 1
                    return meta_status, busy_status, done.status

        with caplog.at_level(logging.WARNING, logger="musrec.embedding.server"):
            meta_status, busy_status, done_status = asyncio.run(scenario())
    assert meta_status == 200
    assert busy_status == 503
    assert done_status == 200
    # Busy answers are counted, not logged one by one: the first is noted, the next two wait for the next note.
    notes = [r.getMessage() for r in caplog.records if "predict refused" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith("predict refused 1 time(s) since the last note")


def test_serve_takes_its_queue_from_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``[server] max_pending`` and ``concurrency`` reach the server ``musrec serve`` runs."""
    from musrec.cli import main
    from musrec.config import ServerConfig

    assert ServerConfig().max_pending == DEFAULT_MAX_PENDING  # the documented defaults are the server's own
    assert ServerConfig().max_connections == DEFAULT_MAX_CONNECTIONS
    assert ServerConfig().header_timeout_s == DEFAULT_HEADER_TIMEOUT_S
    config = tmp_path / "musrec.toml"
    config.write_text(
        "[server]\nport = 0\nconcurrency = 2\nmax_pending = 3\nmax_connections = 5\nheader_timeout_s = 2.5\n",
        encoding="utf-8",
    )
    ran: dict[str, Any] = {}
    monkeypatch.setattr("musrec.cli.use_model_threads", lambda config, concurrent: 1)  # this process's TensorFlow
    monkeypatch.setattr("musrec.configured.make_embedder", lambda config: object())
    monkeypatch.setattr("musrec.embedding.server.run_server", lambda embedder, **options: ran.update(options))
    with serve_log_levels():
        assert main(["--config", str(config), "serve"]) == 0
    assert ran["concurrency"] == 2 and ran["max_pending"] == 3
    assert ran["max_connections"] == 5 and ran["header_timeout_s"] == 2.5
    for sock in ran["sockets"]:  # bound before the model loaded
        assert sock.getsockname()[1] > 0
        sock.close()


def test_make_app_rejects_bad_limits(local_embedder: LocalEmbedder) -> None:
    for kwargs in ({"max_bytes": 0}, {"concurrency": 0}, {"max_pending": -1}):
        with pytest.raises(ValueError):
            make_app(local_embedder, **kwargs)  # type: ignore[arg-type]


SERVE_SCRIPT = """
import logging, sys
import numpy as np
from musrec.embedding.server import run_server

class Silent:
    warmed = False
    def warm_up(self):
        Silent.warmed = True
    def embed(self, samples, sample_rate=16000):
        rows = int(len(samples) / sample_rate / 0.96)
        return np.full((rows, 128), 7 if Silent.warmed else 0, dtype=np.uint8)

logging.basicConfig(level=logging.INFO)
run_server(Silent(), port=int(sys.argv[1]))
"""


def test_run_server_serves_until_interrupted() -> None:
    url = dead_url()
    port = url.rsplit(":", 1)[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT, port],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                answer = request("GET", url + "/health")
                break
            except aiohttp.ClientConnectionError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.1)
        assert answer.status == 200
        got = predict(Served(url), form("audio", wav_bytes(int16_clip(2.0), rate=16000)))
        assert got.json()["embedding"] == [[7.0] * 128] * 2  # warmed up before serving
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT_S)
        if proc.stdout:
            proc.stdout.close()


def test_musrec_serve_takes_the_audio_limits_of_its_configuration(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Issue 14: ``musrec serve`` applied none of the [audio] limits; now it applies them to every upload."""
    files = shared_vggish_files(tmp_path_factory)
    url = dead_url()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[embedder]\ncheckpoint = "{files.checkpoint}"\npca_params = "{files.pca_column}"\n'
        f"[audio]\nmax_duration_s = 2.0\nmin_duration_s = 1.5\n"
        f"[server]\nport = {url.rsplit(':', 1)[1]}\n"
    )
    log = tmp_path / "serve.log"  # a file, not a pipe nobody reads: the server's logging never blocks
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "musrec.cli", "--config", str(config), "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for_health(url, proc, log=log, wait_s=120)  # TensorFlow's import and the checkpoint's load, slowly
        served = Served(url)
        wav = wav_bytes(int16_clip(3.0), rate=16000)
        one_hz = wav[:24] + (1).to_bytes(4, "little") + (2).to_bytes(4, "little") + wav[32:]
        answers = [
            predict(served, form("audio", payload))
            for payload in (wav, wav_bytes(int16_clip(1.2), rate=16000), one_hz, wav_bytes(int16_clip(1.8), rate=16000))
        ]
        assert [a.status for a in answers] == [413, 422, 400, 200]
        assert answers[0].json()["message"] == "the audio is longer than 2 seconds; choose a shorter part"
        assert len(answers[3].json()["embedding"]) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT_S)
    # Issue 26: its start-up line is information, not a warning, and the user who runs it sees it without -v.
    lines = log.read_text(errors="replace").splitlines()
    assert f"INFO musrec.embedding.server: serving the MAX audio embedding API on {url}" in lines
    assert not [line for line in lines if line.startswith("WARNING") and "serving" in line]


def test_a_trickled_upload_cannot_hold_a_place(server_loop: LoopThread, local_embedder: LocalEmbedder) -> None:
    """Issue 14: a client that sends part of a body and stalls is answered 408, and its place is free again."""
    import json
    import socket
    from urllib.parse import urlsplit

    app = make_app(local_embedder, concurrency=1, max_pending=0, read_timeout_s=0.5)
    with serving(server_loop, app) as served:
        host, port = urlsplit(served.url).hostname, urlsplit(served.url).port
        assert host is not None and port is not None
        with socket.create_connection((host, port), timeout=30) as stalled:
            head = (
                f"POST /model/predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
            )
            stalled.sendall(head.encode())  # ... and nothing more
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = stalled.recv(65536)
                if not chunk:
                    break
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1] == b"408", answer
        expected = {"status": "error", "message": "Request body not received in time"}
        assert json.loads(rest.partition(b"\r\n\r\n")[2]) == expected
        # The only place (concurrency 1, nothing pending) is free: a real upload is embedded.
        answer = predict(served, form("audio", wav_bytes(int16_clip(1.0), rate=16000)))
        assert answer.status == 200 and len(answer.json()["embedding"]) == 1
