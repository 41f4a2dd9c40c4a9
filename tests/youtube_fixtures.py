"""A loopback media server and stepped-tone recordings for the YouTube-link tests.

The recordings play a different tone in every 10-second step (300 Hz, 400 Hz, ...), so the frequency of a
fetched window says which part of the file it came from. The server is real aiohttp on 127.0.0.1 at an
ephemeral port, in a background thread; its FileResponse answers Range requests, as ffmpeg's seeking needs.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import ssl
import threading
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import web
from audio_fixtures import ffmpeg

from musrec.links.fetch import FetchOptions

LOOPBACK = "127.0.0.1"
WAIT_S = 10.0
SOURCE_RATE = 44100
STEP_S = 10.0
BASE_HZ = 300.0
STEP_HZ = 100.0
ROW_SAMPLES = 15360  # one VGGish row: 0.96 s at 16 kHz
HZ_PER_CODE = 10.0

# name -> (suffix, encoder arguments); m4a and webm are what YouTube serves as audio-only formats.
CODECS: dict[str, tuple[str, tuple[str, ...]]] = {
    "m4a": ("m4a", ("-c:a", "aac", "-b:a", "96k")),
    "webm": ("webm", ("-c:a", "libopus", "-b:a", "48k")),
    "mp3": ("mp3", ("-c:a", "libmp3lame", "-b:a", "96k")),
}


def step_hz(step: int) -> float:
    """The tone played from ``step * 10`` s to ``(step + 1) * 10`` s."""
    return BASE_HZ + STEP_HZ * step


def stepped_tones(path: Path, *, seconds: float, codec: str) -> Path:
    """A mono recording of ``seconds`` whose tone changes every 10 s, encoded with one of :data:`CODECS`."""
    t = np.arange(round(seconds * SOURCE_RATE)) / SOURCE_RATE
    hz = BASE_HZ + STEP_HZ * np.floor(t / STEP_S)
    phase = 2 * np.pi * np.cumsum(hz) / SOURCE_RATE  # continuous phase across the steps
    source = path.with_suffix(".source.wav")
    with wave.open(str(source), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SOURCE_RATE)
        w.writeframes(np.round(0.5 * np.sin(phase) * 32767).astype("<i2").tobytes())
    ffmpeg("-i", str(source), *CODECS[codec][1], str(path))
    source.unlink()
    return path


def hls(directory: Path, source: Path, *, live: bool = False) -> Path:
    """An HLS rendition of ``source`` in 10-s AAC segments: a finished (VOD) playlist, or one still live."""
    directory.mkdir(parents=True, exist_ok=True)
    playlist = directory / "index.m3u8"
    ffmpeg(
        "-i", str(source), "-c:a", "aac", "-b:a", "64k", "-f", "hls", "-hls_time", "10",
        "-hls_playlist_type", "vod", "-hls_segment_filename", str(directory / "seg%d.ts"), str(playlist),
    )  # fmt: skip
    if live:
        lines = playlist.read_text().splitlines()
        playlist.write_text("\n".join(x for x in lines if "ENDLIST" not in x and "PLAYLIST-TYPE" not in x) + "\n")
    return playlist


def video_only(path: Path, *, seconds: float = 30.0) -> Path:
    """An MPEG-4 video without an audio track."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size=64x48:rate=5:duration={seconds}", "-c:v", "mpeg4", str(path))
    return path


def dominant_hz(samples: npt.NDArray[np.floating], rate: int = 16000) -> float:
    """The strongest frequency in ``samples``, to the nearest bin of a zero-padded FFT."""
    x = np.asarray(samples, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=4 * len(x)))
    return float(np.argmax(spectrum) * rate / (4 * len(x)))


def first_change_s(samples: npt.NDArray[np.floating], low_hz: float, high_hz: float, rate: int = 16000) -> float:
    """Where the tone changes from ``low_hz`` to ``high_hz``, in seconds, to about a millisecond."""
    x = np.asarray(samples, dtype=np.float64)
    t = np.arange(len(x)) / rate
    width = rate // 50  # 20 ms frames, hopped by 1 ms
    low = np.abs(np.convolve(x * np.exp(-2j * np.pi * low_hz * t), np.ones(width), "valid"))
    high = np.abs(np.convolve(x * np.exp(-2j * np.pi * high_hz * t), np.ones(width), "valid"))
    crossing = int(np.argmax(high > low))
    return (crossing + width / 2) / rate


class ToneEmbedder:
    """An :class:`~musrec.embedding.base.Embedder` whose rows say which tone each 0.96 s holds (Hz / 10, as uint8)."""

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, samples: npt.NDArray[np.floating], sample_rate: int = 16000) -> npt.NDArray[np.uint8]:
        self.calls += 1
        rows = len(samples) // ROW_SAMPLES
        codes = [
            round(dominant_hz(samples[i * ROW_SAMPLES : (i + 1) * ROW_SAMPLES]) / HZ_PER_CODE) for i in range(rows)
        ]
        return np.repeat(np.array(codes, dtype=np.uint8)[:, None], 128, axis=1)


def loopback_options(**overrides: Any) -> FetchOptions:
    """Options that reach the loopback server: 127.0.0.1 allowed explicitly, private addresses opted in."""
    settings: dict[str, Any] = {
        "allowed_hosts": (LOOPBACK,),
        "allow_private_addresses": True,
        "socket_timeout_s": 5.0,
        "retries": 0,
    }
    return FetchOptions(**{**settings, **overrides})


@dataclass
class MediaServer:
    """Serves files under ``root`` at ``/media/<path>``, any status at ``/status/<code>`` and a redirect to any URL at
    ``/redirect?to=<url>``; logs every request."""

    root: Path
    url: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)

    def media(self, name: str) -> str:
        return f"{self.url}/media/{name}"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def count(self, prefix: str = "/") -> int:
        return sum(1 for path, _ in self.requests if path.startswith(prefix))

    async def _file(self, request: web.Request) -> web.StreamResponse:
        path = (self.root / request.match_info["name"]).resolve()
        if not path.is_file() or self.root.resolve() not in path.parents:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def _status(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.query["to"])

    @web.middleware
    async def _log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.path, request.headers.get("Range")))
        response: web.StreamResponse = await handler(request)
        return response


@contextmanager
def media_server(
    root: Path, *, host: str = LOOPBACK, port: int = 0, tls: ssl.SSLContext | None = None
) -> Iterator[MediaServer]:
    """A :class:`MediaServer` on ``host`` (a loopback address) at ``port`` (0: an ephemeral one), in its own
    event-loop thread; https with ``tls``."""
    server = MediaServer(root)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="media-server", daemon=True)
    thread.start()

    async def start() -> web.AppRunner:
        app = web.Application(middlewares=[server._log])
        app.router.add_get("/media/{name:.+}", server._file)
        app.router.add_get("/status/{code:\\d+}", server._status)
        app.router.add_get("/redirect", server._redirect)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=tls).start()
        server.url = f"{'https' if tls else 'http'}://{host}:{runner.addresses[0][1]}"
        return runner

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(WAIT_S)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(WAIT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT_S)
        loop.close()


def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just released by the OS)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    return f"http://{LOOPBACK}:{port}/media/gone.m4a"


DRIP_BYTES = 1024
DRIP_EVERY_S = 0.1  # 10 KiB/s: never a stall as long as a socket timeout, far slower than a section needs


class DripServer(socketserver.ThreadingTCPServer):
    """Answers any GET on 127.0.0.1 with ``body`` as audio/mpeg, :data:`DRIP_BYTES` every :data:`DRIP_EVERY_S`;
    ``sent`` counts the body bytes sent over all connections."""

    daemon_threads = True

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.sent = 0
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        super().__init__((LOOPBACK, 0), _DripHandler)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}/media/tones.mp3"


def read_request_head(sock: socket.socket) -> bytes | None:
    """An HTTP request's line and headers from ``sock`` (waits bounded by WAIT_S); None if the client hung up."""
    sock.settimeout(WAIT_S)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        head += chunk
    return head


class _DripHandler(socketserver.BaseRequestHandler):
    server: DripServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        head = read_request_head(sock)
        if head is None:
            return
        body = self.server.body
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nAccept-Ranges: none\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        if head.startswith(b"HEAD "):
            return
        for at in range(0, len(body), DRIP_BYTES):
            if self.server.stopped.wait(DRIP_EVERY_S):
                return
            try:
                sock.sendall(body[at : at + DRIP_BYTES])
            except OSError:  # the client (or the guard) hung up
                return
            with self.server.lock:
                self.server.sent += len(body[at : at + DRIP_BYTES])


@contextmanager
def drip_server(body: bytes) -> Iterator[DripServer]:
    """A :class:`DripServer` in a thread of its own, stopped (and its connections ended) on exit."""
    server = DripServer(body)
    with socket_server_running(server):
        try:
            yield server
        finally:
            server.stopped.set()  # the drips end before the server waits for its threads


@contextmanager
def socket_server_running(server: socketserver.BaseServer) -> Iterator[None]:
    """``server`` answering in a thread of its own until the block ends; then shut down and closed."""
    thread = threading.Thread(target=server.serve_forever, name=f"{type(server).__name__}-thread", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT_S)
