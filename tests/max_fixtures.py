"""Loopback MAX servers for the server and client tests: the real app around the real LocalEmbedder.

Servers run on an event loop in a background thread, so tests stay synchronous and the client's blocking
``embed`` can talk to them. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import io
import logging
import socket
import subprocess
import threading
import time
import wave
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import numpy.typing as npt
from aiohttp import web

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
WAIT_S = 10.0  # upper bound on any single wait; tests themselves should finish far sooner
INT16_SCALE = 32768.0
MAX_EXACT = 0.499


def int16_clip(seconds: float, *, rate: int = 16000, channels: int = 1, seed: int = 0) -> npt.NDArray[np.float64]:
    """Tones plus noise as 16-bit PCM values (k / 32768) below 0.5 in magnitude.

    musrec.audio.wav writes WAV as ``x * 32768`` and reads ``int16 / 32768``, so these values round-trip exactly and
    an upload carries exactly the samples embedded in-process.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    columns = []
    for ch in range(channels):
        tone = 0.2 * np.sin(2 * np.pi * (220.0 * (ch + 1)) * t) + 0.15 * np.sin(2 * np.pi * 1234.5 * t**1.5)
        columns.append(tone + 0.03 * rng.standard_normal(len(t)))
    x = np.stack(columns, axis=1) if channels > 1 else columns[0]
    return np.round(np.clip(x, -MAX_EXACT, MAX_EXACT) * INT16_SCALE) / INT16_SCALE


def wav_bytes(samples: npt.NDArray[np.floating], *, rate: int, sampwidth: int = 2) -> bytes:
    """A WAV written by the stdlib (independent of musrec.audio.wav); ``sampwidth`` is 1, 2, 3 or 4 bytes."""
    x = np.asarray(samples, dtype=np.float64)
    channels = 1 if x.ndim == 1 else x.shape[1]
    if sampwidth == 1:  # 8-bit WAV is unsigned
        frames = (np.round(x * 127) + 128).astype(np.uint8).tobytes()
    elif sampwidth == 3:
        ints = np.round(x * 2**23).astype("<i4").reshape(-1, 1).view(np.uint8)
        frames = ints[:, :3].tobytes()
    else:
        dtype = {2: "<i2", 4: "<i4"}[sampwidth]
        frames = np.round(x * 2 ** (8 * sampwidth - 1)).astype(dtype).tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


class LoopThread:
    """An event loop in a daemon thread; ``run`` executes a coroutine there and waits at most ``WAIT_S``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-servers", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)
        self.loop.close()


@dataclass
class Served:
    """A running server: its base URL and how many requests it answered, per path."""

    url: str
    hits: dict[str, int] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def count(self, path: str) -> int:
        return self.hits.get(path, 0)


@contextmanager
def serving(loop: LoopThread, app: web.Application) -> Iterator[Served]:
    """Run ``app`` on 127.0.0.1 at an ephemeral port for the duration of the block."""
    served = Served(url="")

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        served.hits[request.path] = served.hits.get(request.path, 0) + 1

    app.on_response_prepare.append(count)

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        port = runner.addresses[0][1]
        served.url = f"http://{LOOPBACK}:{port}"
        return runner

    runner = loop.run(start())
    try:
        yield served
    finally:
        loop.run(runner.cleanup())


def wait_for_health(url: str, proc: subprocess.Popen[bytes], *, log: Path, wait_s: float = WAIT_S) -> None:
    """Wait (at most ``wait_s``) until the server process ``proc`` answers ``GET /health`` at ``url``; fail with its
    ``log`` if it ends first."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            request("GET", url + "/health")
            return
        except aiohttp.ClientConnectionError:
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)


@contextmanager
def serve_log_levels() -> Iterator[None]:
    """Keep the levels ``musrec serve`` sets on its loggers (it shows their INFO lines) to the block it runs in."""
    loggers = [logging.getLogger(name) for name in ("musrec.configured", "musrec.embedding")]
    levels = [logger.level for logger in loggers]
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just released by the OS)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    return f"http://{LOOPBACK}:{port}"


def tiny_app(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    """A stand-in server answering every MAX endpoint with ``handler``."""
    app = web.Application()
    app.router.add_post("/model/predict", handler)
    app.router.add_get("/model/metadata", handler)
    return app


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        import json

        return json.loads(self.text)


def request(
    method: str,
    url: str,
    *,
    data: aiohttp.FormData | aiohttp.MultipartWriter | bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One raw HTTP request from the test thread, as any MAX client would send it."""

    async def go() -> Answer:
        timeout = aiohttp.ClientTimeout(total=WAIT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, data=data, headers=headers) as response,
        ):
            return Answer(response.status, dict(response.headers), await response.text())

    return asyncio.run(go())


def form(
    field_name: str, payload: bytes, *, filename: str | None = "clip.wav", content_type: str = "audio/wav"
) -> aiohttp.FormData | aiohttp.MultipartWriter:
    """multipart/form-data with one part, as ``requests.post(files={name: (filename, data, type)})`` sends.

    ``filename=None`` makes a plain form field rather than an uploaded file.
    """
    if filename is None:
        writer = aiohttp.MultipartWriter("form-data")
        part = writer.append(payload, {"Content-Type": content_type})
        part.set_content_disposition("form-data", name=field_name)
        return writer
    data = aiohttp.FormData()
    data.add_field(field_name, payload, filename=filename, content_type=content_type)
    return data


class GatedEmbedder:
    """An embedder behind a gate the test opens: requests stay in the model until then.

    ``entered`` counts the calls that reached the gate; ``wait_entered(n)`` waits (bounded) until ``n`` have.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self._entered = 0
        self._changed = threading.Condition()

    @property
    def entered(self) -> int:
        with self._changed:
            return self._entered

    def wait_entered(self, count: int = 1) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._entered >= count, WAIT_S)

    def embed(self, samples: npt.NDArray[np.floating], sample_rate: int = 16000) -> npt.NDArray[np.uint8]:
        with self._changed:
            self._entered += 1
            self._changed.notify_all()
        if not self.gate.wait(WAIT_S):
            raise TimeoutError("gate never opened")
        rows: npt.NDArray[np.uint8] = self.inner.embed(samples, sample_rate)
        return rows


def peak_rss_reset() -> int:
    """Reset this process's peak resident set (VmHWM) to its current size, and return that size in bytes.

    Linux only (``/proc/self/clear_refs``, since 4.0); with :func:`peak_rss` it measures the peak of a stretch of
    work rather than of the whole test run. Freed heap is handed back to the system first (glibc's
    ``malloc_trim``), so memory earlier tests freed but the allocator kept cannot hide new allocations.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the measure is only less strict
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    """This process's peak resident set since the last :func:`peak_rss_reset`, in bytes."""
    return _status_kib("VmHWM") * 1024


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


# The LocalEmbedder on a random-weight checkpoint comes from vggish_fixtures.shared_embedder, which writes
# the 289 MB checkpoint once per run for every module that needs it.


@contextmanager
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    try:
        yield loop
    finally:
        loop.stop()
