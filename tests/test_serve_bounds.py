"""Issue 23 (point 9): what a hostile client can make `musrec serve` hold, and for how long.

Form fields that are not the upload are read past, not kept; a connection that trickles its request head is closed;
connections beyond a bound are answered 503 and closed; bodies of unknown length and compressed ones are refused
before they are read; and the aiohttp the package admits has the published fixes. The server runs as `musrec serve`
runs it (run_server, in a process of its own) where its connections are the subject, else the application on
loopback; every wait is bounded, and no bound here is a speed requirement.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import aiohttp
import pytest
from max_fixtures import (
    WAIT_S,
    LoopThread,
    Served,
    dead_url,
    int16_clip,
    peak_rss,
    peak_rss_reset,
    request,
    serving,
    wait_for_health,
    wav_bytes,
)
from packaging.requirements import Requirement
from packaging.version import Version

from musrec.embedding.local import LocalEmbedder
from musrec.embedding.server import make_app

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
FIELD_MIB = 96  # a plain form field beside the upload: aiohttp's post() held it whole, twice (bytes and text)
# Reading the form holds the spooled upload (96 KB) and aiohttp's read buffers (64 KiB pieces); what the peak gains
# besides is the allocator's (measured: 1-11 MiB, the same for fields of 0, 8 and 48 MiB). Half a copy of the field
# tells holding it from not holding it whatever the allocator does.
FIELD_PEAK_MIB = FIELD_MIB // 2


@pytest.fixture(scope="module")
def server(server_loop: LoopThread, local_embedder: LocalEmbedder) -> Iterator[Served]:
    with serving(server_loop, make_app(local_embedder, max_bytes=2 * FIELD_MIB * MIB)) as served:
        yield served


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _part(name: str, *, filename: str | None = None, content_type: str | None = None) -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    typed = f"Content-Type: {content_type}\r\n" if content_type else ""
    return f"--b\r\n{disposition}\r\n{typed}\r\n".encode()


def _read_answer(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def _post_with_field(url: str, field_mib: int) -> bytes:
    """A predict form whose upload follows a plain text field of ``field_mib`` MiB, sent 64 KiB at a time (the sender
    holds no more), and the raw answer."""
    wav = wav_bytes(int16_clip(3.0), rate=16000)
    before_field = _part("comment")
    after_field = b"\r\n" + _part("audio", filename="clip.wav", content_type="audio/wav") + wav + b"\r\n--b--\r\n"
    length = len(before_field) + field_mib * MIB + len(after_field)
    head = (
        f"POST /model/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {length}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    ).encode()
    piece = b"x" * (64 * 1024)
    with socket.create_connection(_address(url), timeout=WAIT_S) as sock:
        sock.sendall(head + before_field)
        for _ in range(field_mib * MIB // len(piece)):
            sock.sendall(piece)
        sock.sendall(after_field)
        return _read_answer(sock)


def test_issue_23_a_large_plain_field_is_read_past_not_held(server: Served) -> None:
    """A 32 MiB text field before the upload: the upload is embedded, and the field never sits in memory."""
    # The same form with small fields first: the first requests' costs (worker threads and their arenas) are paid.
    for warm_up_mib in (0, 8):
        assert _post_with_field(server.url, warm_up_mib).startswith(b"HTTP/1.1 200")
    peak_rss_reset()
    start = peak_rss()
    answer = _post_with_field(server.url, FIELD_MIB)
    grown = (peak_rss() - start) / MIB
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b'"embedding": [[' in answer
    assert grown < FIELD_PEAK_MIB, f"reading the form raised the peak by {grown:.0f} MiB"


def test_issue_23_only_the_first_audio_file_counts(server: Served, local_embedder: LocalEmbedder) -> None:
    """Other file fields and a second ``audio`` file are read past: the answer is the first upload's embedding."""
    first, second = int16_clip(2.0, seed=1), int16_clip(3.0, seed=2)
    body = (
        _part("other", filename="other.wav", content_type="audio/wav")
        + wav_bytes(second, rate=16000)
        + b"\r\n"
        + _part("audio", filename="a.wav", content_type="audio/wav")
        + wav_bytes(first, rate=16000)
        + b"\r\n"
        + _part("audio", filename="b.wav", content_type="audio/wav")
        + wav_bytes(second, rate=16000)
        + b"\r\n--b--\r\n"
    )
    answer = request(
        "POST", server.url + "/model/predict", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert answer.status == 200, answer.text
    assert answer.json()["embedding"] == local_embedder.embed(first).astype(float).tolist()


def test_issue_23_bodies_of_unknown_length_or_compressed_are_refused_unread(server: Served) -> None:
    host, port = _address(server.url)
    head = "POST /model/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    cases = {
        411: head + "Transfer-Encoding: chunked\r\n\r\n10000\r\n",  # ... and the chunk never comes
        415: head + "Content-Encoding: gzip\r\nContent-Length: 1000000\r\n\r\n",
        413: head + f"Content-Length: {2 * FIELD_MIB * MIB + 1}\r\n\r\n",
    }
    for status, request_head in cases.items():
        with socket.create_connection((host, port), timeout=WAIT_S) as sock:
            sock.sendall(request_head.encode())
            answer = sock.recv(65536)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
        assert b'"status": "error"' in answer


def test_issue_23_a_nested_multipart_part_is_a_malformed_form(server: Served) -> None:
    inner = b"--c\r\nContent-Disposition: form-data; name=x\r\n\r\nx\r\n--c--\r\n"
    body = b"--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n" + inner + b"\r\n--b--\r\n"
    answer = request(
        "POST", server.url + "/model/predict", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert (answer.status, answer.json()["message"]) == (400, "Malformed multipart/form-data body")


SERVE_SCRIPT = """
import logging, sys
import numpy as np
from musrec.embedding.server import run_server

class Instant:
    def embed(self, samples, sample_rate=16000):
        return np.zeros((int(len(samples) / sample_rate / 0.96), 128), dtype=np.uint8)

logging.basicConfig(level=logging.INFO)
run_server(Instant(), port=int(sys.argv[1]), max_connections=int(sys.argv[2]), header_timeout_s=float(sys.argv[3]))
"""


@pytest.fixture
def bounded_server(tmp_path: Path) -> Iterator[str]:
    """run_server in a process of its own (signals, sockets and all), with 3 connections and a 1-s head deadline."""
    url = dead_url()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE_SCRIPT, url.rsplit(":", 1)[1], "3", "1.0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for_health(url, proc, log=log)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(WAIT_S) == 0, log.read_text(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT_S)


def _closed_by_server(sock: socket.socket, trickle: bytes) -> bool:
    """Send ``trickle`` a byte every 0.1 s (a slowloris head; nothing if empty); True once the server closes the
    connection, False if it is still open after WAIT_S."""
    sock.settimeout(0.1)
    deadline = time.monotonic() + WAIT_S
    sent = 0
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.sendall(trickle[sent % len(trickle) : sent % len(trickle) + 1])
                sent += 1
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def test_issue_23_a_trickled_request_head_is_closed(bounded_server: str) -> None:
    """Slowloris: a request head sent a byte at a time never completes; the server closes it at its deadline."""
    with socket.create_connection(_address(bounded_server), timeout=WAIT_S) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        assert _closed_by_server(sock, b"X-Slow: " + b"a" * 50)
    with socket.create_connection(_address(bounded_server), timeout=WAIT_S) as idle:  # one that sends nothing at all
        assert _closed_by_server(idle, b"")
    assert request("GET", bounded_server + "/health").status == 200


def test_issue_23_connections_beyond_the_bound_get_503_and_are_closed(bounded_server: str) -> None:
    address = _address(bounded_server)
    held = [socket.create_connection(address, timeout=WAIT_S) for _ in range(3)]
    try:
        time.sleep(0.2)  # let the server accept them (no timing is measured: it only orders the connections)
        with socket.create_connection(address, timeout=WAIT_S) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _read_answer(extra)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b"Retry-After: 1" in answer and b"too many connections" in answer
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + WAIT_S
    while True:  # the places are free again once the server has seen the closes
        try:
            if request("GET", bounded_server + "/health").status == 200:
                break
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_issue_23_aiohttp_floor_has_the_published_fixes() -> None:
    """pyproject admits no aiohttp without the advisories' fixes (3.13.4 / 3.14.1) or without the first request's
    head deadline (3.14.4), and the installed one satisfies it."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [Requirement(d) for d in dependencies if Requirement(d).name == "aiohttp"]
    for unsafe in ("3.9.5", "3.13.3", "3.14.0", "3.14.3"):
        assert not spec.specifier.contains(unsafe), f"{spec} admits {unsafe}"
    assert spec.specifier.contains(version("aiohttp")), f"installed aiohttp {version('aiohttp')} is outside {spec}"
    assert Version(version("aiohttp")) >= Version("3.14.4")
