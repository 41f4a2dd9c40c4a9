"""`musrec serve` under load: throughput and latency with 1 and 2 workers, against the model alone in the same run.

The server runs in a process of its own (``run_server``, what ``musrec serve`` calls), the clients here, all on
127.0.0.1 with a bounded number of requests. The baseline is the cost of the same clip to the model alone
(``LocalEmbedder.embed`` in this process, one call at a time), measured right before each server's loads: per
worker, a server can at best match it. Two loads:

- steady: as many clients as the server admits (workers + queue), each sending its next clip when the last is
  answered, so nothing is refused: throughput and p50/p95 latency.
- burst: every request at once (50 by default): how many are answered, how many are told 503 (busy), the latency
  of those answered.

For each, how much the server process's peak memory grew over its resident size before the load.
Uses a random-weight checkpoint in the official layout (the real weights have the same shapes, so the same cost).

    python bench/server_load_bench.py                     # 10-s clips, 50 requests per load
    python bench/server_load_bench.py --clip-seconds 3 --requests 100
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

LOOPBACK = "127.0.0.1"
MAX_REQUESTS = 1000  # loopback only, and bounded
QUEUE = 8  # requests waiting for a worker, beyond those being embedded
TIMEOUT_S = 600.0
START_TIMEOUT_S = 300.0  # TensorFlow's import and the checkpoint's load
MIB = 1 << 20
BASELINE_REPEATS = 15
SERVER = """
import logging, sys
from pathlib import Path
from musrec.embedding.local import LocalEmbedder
from musrec.embedding.server import run_server

logging.basicConfig(level=logging.ERROR)
checkpoint, pca, workers, queue, port = sys.argv[1:]
embedder = LocalEmbedder(Path(checkpoint), Path(pca))
run_server(embedder, port=int(port), concurrency=int(workers), max_pending=int(queue))
"""


@dataclass(frozen=True)
class Result:
    status: int | None  # None: the connection was dropped
    latency_s: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=50, help=f"per load, at most {MAX_REQUESTS}")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be 1-{MAX_REQUESTS}")
    logging.basicConfig(level=logging.ERROR)

    from musrec.audio.wav import to_wav_bytes
    from musrec.embedding.local import LocalEmbedder
    from musrec.vggish.checkpoint import write_random_checkpoint, write_random_pca_params

    rng = np.random.default_rng(0)
    clip = np.round(rng.uniform(-0.3, 0.3, round(args.clip_seconds * 16000)) * 32768) / 32768
    payload = to_wav_bytes(clip)
    with tempfile.TemporaryDirectory(prefix="musrec-server-bench-") as tmp_name:
        checkpoint = write_random_checkpoint(Path(tmp_name) / "vggish_model.ckpt")
        pca = write_random_pca_params(Path(tmp_name) / "vggish_pca_params.npz")
        embedder = LocalEmbedder(checkpoint, pca)
        embedder.warm_up()
        size_kib = len(payload) / 1024
        print(f"clip: {args.clip_seconds:g} s, a {size_kib:.0f}-KiB 16 kHz mono WAV; {args.requests} requests a load")
        print(f"{'load':<32}{'200':>5}{'503':>5}{'drop':>5}{'clips/s':>9}{'x base':>8}{'p50 ms':>8}{'p95 ms':>8}"
              f"{'p50 x':>7}{'peak +MiB':>10}")  # fmt: skip
        for workers in args.workers:
            with _server(checkpoint, pca, workers=workers) as (url, pid):
                # Measured again for each server, right before its loads: other work on the machine moves it.
                baseline_s = _baseline(embedder, clip)
                print(f"baseline: the model alone, {baseline_s * 1000:.0f} ms a clip ({1 / baseline_s:.1f} clips/s)")
                admitted = workers + QUEUE
                for load, at_once in (("steady", admitted), ("burst", args.requests)):
                    start_rss = _peak_reset(pid)
                    started = time.perf_counter()
                    results = asyncio.run(_load(url, payload, requests=args.requests, at_once=at_once))
                    wall_s = time.perf_counter() - started
                    grew = _peak(pid) - start_rss
                    _report(f"{load}, {workers} worker(s), {at_once} at once", results, wall_s, baseline_s, grew)
    print("\nclips/s counts answered clips (200) over the whole load; x base is that over the model alone.")
    print("p50 x is the median latency of answered clips over the model's time for one.")
    return 0


def _baseline(embedder: Any, clip: np.ndarray) -> float:
    """The median time the model alone takes for ``clip``, in this process, one call at a time."""
    times = []
    for _ in range(BASELINE_REPEATS):
        started = time.perf_counter()
        embedder.embed(clip)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _report(name: str, results: list[Result], wall_s: float, baseline_s: float, grew: int) -> None:
    counts = Counter(r.status for r in results)
    answered = sorted(r.latency_s for r in results if r.status == 200)
    rate = len(answered) / wall_s
    p50 = statistics.median(answered) if answered else float("nan")
    p95 = answered[min(len(answered) - 1, round(0.95 * (len(answered) - 1)))] if answered else float("nan")
    dropped = counts[None]
    print(
        f"{name:<22}{counts[200]:>5}{counts[503]:>5}{dropped:>5}{rate:>9.2f}{rate * baseline_s:>8.2f}"
        f"{p50 * 1000:>8.0f}{p95 * 1000:>8.0f}{p50 / baseline_s:>7.1f}{grew / MIB:>10.0f}"
    )
    other = {s: n for s, n in counts.items() if s not in (200, 503, None)}
    if other:
        print(f"  unexpected answers: {other}")


async def _load(url: str, payload: bytes, *, requests: int, at_once: int) -> list[Result]:
    """``requests`` uploads, ``at_once`` in flight: each client sends its next one when the last is answered."""
    pending = iter(range(requests))
    results: list[Result] = []
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            for _ in pending:
                data = aiohttp.FormData()
                data.add_field("audio", payload, filename="clip.wav", content_type="audio/wav")
                started = time.perf_counter()
                try:
                    async with session.post(url + "/model/predict", data=data) as response:
                        await response.read()
                        status: int | None = response.status
                except (aiohttp.ClientError, TimeoutError):
                    status = None
                results.append(Result(status, time.perf_counter() - started))

        await asyncio.gather(*(client() for _ in range(min(at_once, requests))))
    return results


class _server:
    """``run_server`` in a child process on a free loopback port: ``with _server(...) as (url, pid)``."""

    def __init__(self, checkpoint: Path, pca: Path, *, workers: int) -> None:
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            port = probe.getsockname()[1]
        self.url = f"http://{LOOPBACK}:{port}"
        args = [str(checkpoint), str(pca), str(workers), str(QUEUE), str(port)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, *args], env=env, stderr=subprocess.DEVNULL)

    def __enter__(self) -> tuple[str, int]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not asyncio.run(_healthy(self.url)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        return self.url, self.proc.pid

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _healthy(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url + "/health") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _peak_reset(pid: int) -> int:
    """Reset a process's peak resident set to its current one (Linux 4.0+); the current, in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_kib(pid, "VmRSS") * 1024


def _peak(pid: int) -> int:
    return _status_kib(pid, "VmHWM") * 1024


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


if __name__ == "__main__":
    raise SystemExit(main())
