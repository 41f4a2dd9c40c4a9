"""The bot as a service on the loopback Discord stand-in (tests/discord_standin): a steady stream of /recommend
requests with 1 and 2 workers, and the production start-up with a full-size index (issue 16 point 3).

Every configuration (workers x TensorFlow intra-op threads per forward pass) runs in its own child process, because
TensorFlow fixes its thread pool when it starts: the child calls ``use_model_threads`` before anything imports
TensorFlow, as ``bot.__main__`` does. Four are measured by default, 1x2, 2x1, 2x2 (oversubscribed) and 1x1; the
first is the baseline of the ratios. In each child, the bot (``make_bot`` with the production loader: the index
memory-mapped, the model warmed up) runs against the stand-in on the same event loop, and:

- the forward pass alone: ``embedder.embed`` of 10 s of audio, one at a time, the median of 5;
- the single-request time: ``--calibrate`` requests one after the other, dispatch to the answer with embeds
  reaching the stand-in, the median (the baseline's sets the arrival rates of every configuration);
- a steady stream for each of ``--rates``: ``--requests`` open-loop arrivals at a fixed interval, the rate a
  multiple of the baseline's single-request capacity (1 / its single-request time): 0.5 and 0.9 leave the baseline
  idle part of the time, 1.5 saturates it and 3 saturates any configuration up to 3 times as fast (answers per
  minute at the highest rate are each configuration's maximum). Every configuration gets the same arrival times,
  so the figures compare at equal load. Each request is a distinct user (the one-request-per-user limit never
  bites) with ``cooldown_s = 0`` and ``max_waiting = --requests`` (bounded; nothing is refused). The clips are
  10-s 44.1 kHz stereo WAVs as users post them, 32 different ones in turn, each request a new attachment.
  Reported: answers per minute (answers / first dispatch to last answer), p50 and p95 of the answer time
  (dispatch to the answer with embeds), the latest acknowledgement (Discord's limit is 3 s), and the CPU used (the
  process and its children, as a share of all cores; the stand-in shares the process, so its work counts too) next
  to the whole machine's (the rest is other processes: the machine is shared, and their load shows there).

Each configuration runs ``--rounds`` times (2 by default), the configurations in turn and the order reversed every
round, so that a burst of load from elsewhere does not fall on one configuration only; the rounds are pooled (answer
times together, answers per minute over the summed time) and each round's answers per minute is shown too. The
recommended default for ``bot.workers`` and ``embedder.threads`` is the baseline's unless another configuration
answers at least 5% more per minute at the highest rate with a p95 at the highest rate under 1x no more than 10% above
the baseline's; of those, the one that answers most (the tables and this rule: bench/service_report.py).

Start-up: a child runs the production entry point, ``bot.__main__.main(["--config", ..., "run"])`` (``_run``:
model threads, ``_prepare`` = set-up checks, ``_serve``), pointed at a stand-in in this process, with a
2,000,000-segment IVF index (the default structure at full size; memory-mapped) and VGGish files of random weights
(the official layout and shapes, so the same cost as Google's). Timed from the child's start: the index and model
loaded (the bot's "ready:" log line, end of ``setup_hook``), IDENTIFY reaching the stand-in (which answers READY
at once), and ``on_ready`` (after discord.py's ``guild_ready_timeout``, 2 s by default and kept here). Then it answers
``--startup-requests`` requests one at a time. Resident memory from /proc/PID/status after READY and after the
answers: VmRSS, RssAnon (heap: TensorFlow, the model, faiss's codes), RssFile (mapped files: the index pages
touched, libraries) and VmHWM (the peak). It starts twice on the same data directory: the first start verifies the
model files once (``setup-state.json``), the second is a restart. With ``--cold``, a third start follows the eviction
of every page cached from the index, the model files, the data directory, this Python's environment (TensorFlow's
libraries among them) and its standard library (``bench/common.py``, ``evict_page_cache``): the start after a reboot.

The index is built directly from ``SyntheticAudioSet`` segments with ``build_index`` (backend "ivf"), in a child,
rather than through an AudioSet-shaped tarball and ``musrec setup``: that skips generating and reading a 2.4 GB
tarball (bench/fullsize_bench.py measures that path). It is cached in ``--workdir`` and reused when its manifest
says it has ``--segments`` segments in IVF form (about 4 min to build at 2M; 3.5 GB of disk). The stream children
search the same index. Children get HOME and XDG_* under the working directory; traffic is loopback only.

    python bench/bot_service_bench.py                                   # 2M: about 15 min (+4 to build)
    python bench/bot_service_bench.py --segments 100000 --requests 20 --rounds 1   # a quick try
    python bench/bot_service_bench.py --configs 1x2 2x1 --rates 0.9 1.5 --skip-startup
    python bench/bot_service_bench.py --skip-stream --cold              # start-up, warm and after a reboot
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import evict_page_cache
from service_report import pool, recommend, report_startup, report_streams

from musrec.cores import usable_cores

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the Discord stand-in
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's banner

FULL_COUNT = 2_000_000
CLIP_S = 10.0  # as long as an AudioSet segment: one query window
CLIP_RATE = 44_100  # what users post: 44.1 kHz stereo, resampled by the bot
POOL = 32  # different clips, used in turn
FORWARD_REPEATS = 5
MODEL_RATE = 16_000
CHUNK = 20_000  # synthetic segments generated at a time
DEFAULT_WORKDIR = Path("/tmp/musrec-service-bench")
MIB = 1024  # /proc/PID/status gives kB


# ---- data -------------------------------------------------------------------------------------------------------


def clip_wav(i: int) -> bytes:
    """A 10-s 44.1 kHz stereo 16-bit WAV, different for each ``i``: a run of notes, a sweep, a little noise."""
    import io

    rng = np.random.default_rng((16, i))
    t = np.arange(int(CLIP_S * CLIP_RATE)) / CLIP_RATE
    base = 110.0 * 2 ** (i % 24 / 12)
    notes = base * 2 ** (np.floor(t * (1 + i % 5)) % 12 / 12)
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(notes) / CLIP_RATE)
    x += 0.1 * np.sin(2 * np.pi * (200 + 40 * i + 150 * t) * t) + 0.02 * rng.standard_normal(len(t))
    pcm = (np.clip(np.stack([x, 0.8 * x], axis=1), -1, 1) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(CLIP_RATE)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


def index_ready(path: Path, segments: int) -> bool:
    from musrec.index.layout import Manifest, problem

    if problem(path) is not None:
        return False
    manifest = Manifest.read(path)
    return manifest.count == segments and manifest.ann == "ivf"


def build_worker(segments: int, out: Path) -> dict[str, Any]:
    from musrec.audioset.labels import default_labels
    from musrec.audioset.synthetic import SyntheticAudioSet
    from musrec.index.build import BuildOptions, build_index

    manifest = build_index(
        SyntheticAudioSet().segments(segments, chunk=CHUNK),
        out,
        labels=default_labels(),
        options=BuildOptions(backend="ivf"),
        force=True,
    )
    return {"build_s": manifest.build_seconds, "nprobe": manifest.nprobe, "lists": manifest.ivf_lists}


def write_models(directory: Path) -> tuple[Path, Path]:
    from musrec.vggish.checkpoint import write_random_checkpoint, write_random_pca_params

    directory.mkdir(parents=True, exist_ok=True)
    checkpoint, pca = directory / "vggish_model.ckpt", directory / "vggish_pca_params.npz"
    if not pca.is_file():  # written last: its presence means both are complete
        write_random_checkpoint(checkpoint, seed=0)
        write_random_pca_params(pca, seed=0)
    return checkpoint, pca


def write_config(
    path: Path,
    *,
    data_dir: Path,
    index: Path,
    models: tuple[Path, Path],
    workers: int,
    threads: int,
    max_waiting: int,
) -> Path:
    """Defaults everywhere but the paths, the pool sizes, no cooldown, the stand-in's CDN and no sha512 checks."""
    path.write_text(
        f"[data]\ndir = {str(data_dir)!r}\n\n"
        f"[index]\npath = {str(index)!r}\n\n"
        f"[embedder]\ncheckpoint = {str(models[0])!r}\npca_params = {str(models[1])!r}\nthreads = {threads}\n\n"
        f"[bot]\nworkers = {workers}\nmax_waiting = {max_waiting}\ncooldown_s = 0.0\n"
        'attachment_hosts = ["127.0.0.1"]\n\n'
        '[setup]\ncheckpoint_sha512 = ""\npca_sha512 = ""\n',
        encoding="utf-8",
    )
    return path


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, RssShmem and VmHWM of a process, in MiB."""
    keys = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")
    status: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in keys:
            status[key] = int(line.split()[1]) // MIB
    return status


# ---- on the stand-in ------------------------------------------------------------------------------------------


def answered_at(handle: Any) -> float | None:
    """When the answer with embeds reached the stand-in (an edit of the deferral or a follow-up), or None."""
    calls = sorted(handle.edits + handle.followups, key=lambda c: c.at)
    return next((c.at for c in calls if c.status < 300 and (c.json or {}).get("embeds")), None)


def settled(handle: Any) -> bool:
    return any(m.embeds or m.ephemeral for m in handle.messages)


@dataclass
class Users:
    """Distinct user ids, and the clips in turn."""

    pool: list[bytes]
    next_id: int = 80_000
    sent: int = 0

    async def send(self, standin: Any) -> Any:
        clip = self.pool[self.sent % len(self.pool)]
        attachment = standin.add_attachment(f"clip{self.sent}.wav", clip, "audio/wav")
        self.sent += 1
        self.next_id += 1
        return await standin.dispatch_interaction("recommend", {"clip": attachment}, user_id=self.next_id)


@dataclass
class Stream:
    """What a burst of requests got: answer times, refusals, acknowledgements, CPU use."""

    factor: float
    interval_s: float
    requests: int
    answer_s: list[float] = field(default_factory=list)
    refused: int = 0
    ack_max_s: float = 0.0
    elapsed_s: float = 0.0
    cpu_share: float = 0.0
    machine_share: float = 0.0
    late_dispatch_s: float = 0.0


def machine_busy() -> tuple[float, float]:
    """Busy and total jiffies of all cores since boot (/proc/stat): other processes' load shows in the difference."""
    values = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def cpu_seconds(t: os.times_result) -> float:
    """CPU time of this process and its finished children (ffmpeg decodes the clips in children)."""
    return t.user + t.system + t.children_user + t.children_system


async def send_stream(standin: Any, users: Users, *, count: int, interval_s: float, timeout_s: float) -> Stream:
    """``count`` requests at a fixed interval (open loop: arrivals never wait for answers), then wait for all."""
    result = Stream(0.0, interval_s, count)
    cpu_before, machine_before, started = os.times(), machine_busy(), time.monotonic()
    handles = []
    for i in range(count):
        delay = started + i * interval_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        result.late_dispatch_s = max(result.late_dispatch_s, -delay)
        handles.append(await users.send(standin))
    await standin.wait_until(lambda: all(settled(h) for h in handles), timeout=timeout_s, what="every answer")
    cpu_after, machine_after = os.times(), machine_busy()
    answers = [answered_at(h) for h in handles]
    done = [(h, at) for h, at in zip(handles, answers, strict=True) if at is not None]
    result.answer_s = [at - h.dispatched_at for h, at in done]
    result.refused = count - len(done)
    acks = [h.response.at - h.dispatched_at for h in handles if h.response is not None and h.response.status < 300]
    result.ack_max_s = max(acks, default=float("inf")) if len(acks) == count else float("inf")
    if done:
        result.elapsed_s = max(at for _, at in done) - handles[0].dispatched_at
    wall = cpu_after.elapsed - cpu_before.elapsed
    cpu = cpu_seconds(cpu_after) - cpu_seconds(cpu_before)
    result.cpu_share = cpu / wall / usable_cores() if wall > 0 else float("nan")
    busy, total = (after - before for after, before in zip(machine_after, machine_before, strict=True))
    result.machine_share = busy / total if total > 0 else float("nan")
    return result


# ---- a configuration in its own process ---------------------------------------------------------------------


def stream_worker(config_path: Path, *, rates: list[float], requests: int, calibrate: int, base_s: float) -> Any:
    """One configuration: TensorFlow's threads set first, then the bot on the stand-in, then the measurements."""
    from musrec.config import load_config
    from musrec.configured import use_model_threads

    config = load_config(config_path, environ={})
    threads = use_model_threads(config, config.bot.workers)  # before anything imports TensorFlow
    from discord_standin import run

    from bot.client import make_bot

    pool = [clip_wav(i) for i in range(POOL)]
    rng = np.random.default_rng(3)
    model_clip = (0.3 * rng.standard_normal(int(CLIP_S * MODEL_RATE))).clip(-1, 1)

    async def scenario(standin: Any) -> dict[str, Any]:
        started = time.monotonic()
        bot = make_bot(config, guild_ready_timeout=0.05)  # the production loader: Musrec.from_config, warm_up
        async with standin.running(bot, timeout=600.0):
            ready_s = time.monotonic() - started
            embedder = bot.musrec.embedder

            def forward() -> list[float]:
                embedder.embed(model_clip, MODEL_RATE)
                times = []
                for _ in range(FORWARD_REPEATS):
                    t0 = time.perf_counter()
                    embedder.embed(model_clip, MODEL_RATE)
                    times.append(time.perf_counter() - t0)
                return times

            forward_s = await asyncio.to_thread(forward)
            users = Users(pool)
            await send_stream(standin, users, count=1, interval_s=0.0, timeout_s=600.0)  # first request, not counted
            single: list[float] = []
            for _ in range(calibrate):
                one = await send_stream(standin, users, count=1, interval_s=0.0, timeout_s=600.0)
                single.extend(one.answer_s)
            single_s = float(np.median(single))
            base = base_s or single_s
            streams = []
            for factor in rates:
                interval = base / factor
                timeout = 120.0 + 4 * requests * single_s
                s = await send_stream(standin, users, count=requests, interval_s=interval, timeout_s=timeout)
                s.factor = factor
                streams.append(s)
            memory = proc_status()
        return {
            "workers": config.bot.workers,
            "threads": threads,
            "ready_s": ready_s,
            "forward_s": float(np.median(forward_s)),
            "single_s": single,
            "single_median_s": single_s,
            "base_s": base,
            "streams": [
                {
                    "factor": s.factor,
                    "interval_s": s.interval_s,
                    "requests": s.requests,
                    "answer_s": s.answer_s,
                    "refused": s.refused,
                    "ack_max_s": s.ack_max_s,
                    "elapsed_s": s.elapsed_s,
                    "cpu_share": s.cpu_share,
                    "machine_share": s.machine_share,
                    "late_dispatch_s": s.late_dispatch_s,
                }
                for s in streams
            ],
            "memory_mib": memory,
            "standin_errors": [repr(e) for e in standin.errors],
            "unexpected": [repr(c) for c in standin.unexpected],
        }

    return run(scenario, timeout=4 * 3600.0)


# ---- the production start-up --------------------------------------------------------------------------------


def launch_bot(config_path: Path) -> int:
    """The production entry point aimed at the stand-in; prints a line when discord.py calls ``on_ready``."""
    import discord
    import yarl

    from bot.__main__ import main
    from bot.client import MusrecBot

    discord.http.Route.BASE = os.environ["BENCH_DISCORD_API"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["BENCH_DISCORD_GATEWAY"])

    async def on_ready(self: MusrecBot) -> None:
        print("ON_READY", flush=True)

    MusrecBot.on_ready = on_ready  # type: ignore[attr-defined]
    return main(["--config", str(config_path), "run"])


async def start_once(config_path: Path, *, env: dict[str, str], requests: int, log: Path) -> dict[str, Any]:
    from discord_standin import StandIn

    async with StandIn(patch_discord=False) as standin:
        env = {
            **env,
            "MUSREC_DISCORD_TOKEN": standin.token,
            "BENCH_DISCORD_API": standin.api_url,
            "BENCH_DISCORD_GATEWAY": standin.gateway_url,
        }
        started = time.monotonic()
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "_bot",
            str(config_path),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        lines: list[tuple[float, str, str]] = []
        on_ready = asyncio.Event()

        async def read(stream: asyncio.StreamReader, name: str) -> None:
            while line := await stream.readline():
                text = line.decode(errors="replace").rstrip("\n")
                lines.append((time.monotonic() - started, name, text))
                if text == "ON_READY":
                    on_ready.set()

        assert child.stdout is not None and child.stderr is not None
        readers = [asyncio.create_task(read(child.stdout, "out")), asyncio.create_task(read(child.stderr, "err"))]
        identify = asyncio.create_task(watch_identify(standin, started))
        try:
            exited = asyncio.create_task(child.wait())
            ready = asyncio.create_task(on_ready.wait())
            await asyncio.wait([exited, ready], timeout=1800.0, return_when=asyncio.FIRST_COMPLETED)
            if not on_ready.is_set():
                raise SystemExit(f"the bot did not become ready (see {log})")
            ready_s = time.monotonic() - started
            identify_s = identify.result() if identify.done() else None
            after_ready = proc_status(child.pid)
            users = Users([clip_wav(i) for i in range(requests)])
            answers: list[float] = []
            for _ in range(requests):
                one = await send_stream(standin, users, count=1, interval_s=0.0, timeout_s=600.0)
                answers.extend(one.answer_s)
            after_answers = proc_status(child.pid)
            child.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(exited, timeout=120.0)
        finally:
            identify.cancel()
            if child.returncode is None:
                child.kill()
                await child.wait()
            await asyncio.gather(*readers)
            with log.open("w") as f:
                f.write("".join(f"[{at:8.2f}] {name}: {text}\n" for at, name, text in lines))
        loaded = next((at for at, _, text in lines if " bot.client: ready: " in text), None)
        return {
            "loaded_s": loaded,
            "identify_s": identify_s,
            "ready_s": ready_s,
            "identifies": standin.gateway.identifies,
            "answer_s": answers,
            "after_ready_mib": after_ready,
            "after_answers_mib": after_answers,
            "exit_code": code,
            "standin_errors": [repr(e) for e in standin.errors],
            "unexpected": [repr(c) for c in standin.unexpected],
        }


async def watch_identify(standin: Any, started: float) -> float:
    await standin.wait_until(lambda: standin.gateway.identifies > 0, timeout=1800.0, what="IDENTIFY")
    return time.monotonic() - started


# ---- the parent -----------------------------------------------------------------------------------------------


def child_env(workdir: Path) -> dict[str, str]:
    """This environment without MUSREC_* or proxies, with HOME and XDG_* under the working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSREC_") and not k.lower().endswith("_proxy")}
    home = workdir / "home"
    for name in ("HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        path = home / name.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def child(args: list[str], *, env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run a worker of this file in its own process; its result is the JSON on its last line of output."""
    with log.open("w") as err:
        done = subprocess.run(
            [sys.executable, __file__, *args], env=env, stdout=subprocess.PIPE, stderr=err, text=True, check=False
        )
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-8:])
        raise SystemExit(f"{args[0]} failed with {done.returncode} (see {log}):\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def parse_config(text: str) -> tuple[int, int]:
    workers, _, threads = text.partition("x")
    if not (workers.isdigit() and threads.isdigit() and int(workers) >= 1 and int(threads) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r}: WORKERSxTHREADS, e.g. 2x1")
    return int(workers), int(threads)


def main() -> int:
    from musrec.config import BotConfig

    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):  # the children
        return worker_main(sys.argv[1], sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=parse_config, nargs="+", default=[(1, 2), (2, 1), (2, 2), (1, 1)])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.9, 1.5, 3.0])
    parser.add_argument("--requests", type=int, default=60, help="requests per rate (default 60)")
    parser.add_argument("--rounds", type=int, default=2, help="each configuration this many times (default 2)")
    parser.add_argument("--calibrate", type=int, default=5, help="single requests timed one at a time (default 5)")
    parser.add_argument("--segments", type=int, default=FULL_COUNT)
    parser.add_argument("--startup-requests", type=int, default=5)
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--cold", action="store_true", help="a third start with the page cache emptied first")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="cache of the index and model files")
    args = parser.parse_args()
    if len(set(args.configs)) != len(args.configs) or not 1 <= args.rounds <= 10:
        parser.error("--configs: each once; --rounds: 1-10")
    if not 1 <= args.requests <= 500 or not 1 <= args.calibrate <= 50 or not 1 <= args.startup_requests <= 50:
        parser.error("--requests 1-500, --calibrate and --startup-requests 1-50 (the requests are bounded)")
    if not all(0 < r <= 10 for r in args.rates):
        parser.error("--rates: multiples of the baseline's capacity, in (0, 10]")

    workdir = args.workdir.resolve()
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = child_env(workdir)
    timings: dict[str, float] = {}
    results: dict[str, Any] = {}

    t0 = time.monotonic()
    index = workdir / f"index-{args.segments}"
    if index_ready(index, args.segments):
        print(f"reusing the index {index}")
    else:
        print(f"building a {args.segments:,}-segment IVF index in {index} ...", flush=True)
        results["build"] = child(["_build", str(args.segments), str(index)], env=env, log=logs / "build.log")
    models = write_models(workdir / "models")
    from musrec.index.layout import Manifest

    manifest = json.loads(Manifest.read(index).to_json())
    manifest["files_mib"] = round(sum(p.stat().st_size for p in index.iterdir() if p.is_file()) / 2**20)
    timings["index"] = time.monotonic() - t0

    runs: list[dict[str, Any]] = []
    if not args.skip_stream:
        t0 = time.monotonic()
        base_s = 0.0
        rounds: dict[tuple[int, int], list[dict[str, Any]]] = {c: [] for c in args.configs}
        for turn in range(args.rounds):
            order = args.configs if turn % 2 == 0 else args.configs[::-1]  # neither end always first
            for workers, threads in order:
                name = f"{workers}x{threads}"
                print(f"stream: {name}, round {turn + 1} ...", flush=True)
                config = write_config(
                    workdir / f"stream-{name}.toml",
                    data_dir=workdir / "runs" / f"stream-{name}",
                    index=index,
                    models=models,
                    workers=workers,
                    threads=threads,
                    max_waiting=args.requests,
                )
                run = child(
                    ["_stream", str(config), "--requests", str(args.requests), "--calibrate", str(args.calibrate)]
                    + ["--base-s", str(base_s), "--rates", *map(str, args.rates)],
                    env=env,
                    log=logs / f"stream-{name}-{turn + 1}.log",
                )
                base_s = base_s or run["single_median_s"]
                rounds[(workers, threads)].append(run)
        runs = [pool(rounds[c]) for c in args.configs]
        results["stream_rounds"] = [r for c in args.configs for r in rounds[c]]
        timings["stream"] = time.monotonic() - t0
        results["stream"] = runs

    starts: list[dict[str, Any]] = []
    if not args.skip_startup:
        t0 = time.monotonic()
        data_dir = workdir / "runs" / "startup"
        if data_dir.exists():
            import shutil

            shutil.rmtree(data_dir)
        config = write_config(
            workdir / "startup.toml",
            data_dir=data_dir,
            index=index,
            models=models,
            workers=BotConfig().workers,  # the default deployment
            threads=0,
            max_waiting=8,
        )
        for name in ("first", "restart", "cold")[: 3 if args.cold else 2]:
            if name == "cold":
                import sysconfig

                cached = [index, *models, data_dir, Path(sys.prefix), Path(sysconfig.get_paths()["stdlib"])]
                files, size = evict_page_cache(cached)
                print(f"start-up: evicted {files:,} files ({size / 2**20:,.0f} MiB) from the page cache", flush=True)
            print(f"start-up: {name} ...", flush=True)
            starts.append(
                asyncio.run(
                    start_once(config, env=env, requests=args.startup_requests, log=logs / f"startup-{name}.log")
                )
            )
        timings["startup"] = time.monotonic() - t0
        results["startup"] = starts

    results["timings_s"] = timings
    (workdir / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    if runs:
        report_streams(runs, segments=args.segments, rounds=args.rounds, clip_s=CLIP_S)
    if starts:
        report_startup(starts, manifest, requests=args.startup_requests, workers=BotConfig().workers)
    if runs:
        recommend(runs)
    print(
        "\ntime taken: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
        + f"; results {workdir / 'results.json'}, logs {logs}"
    )
    return 0


def worker_main(kind: str, argv: list[str]) -> int:
    if kind == "_bot":
        return launch_bot(Path(argv[0]))
    if kind == "_build":
        print(json.dumps(build_worker(int(argv[0]), Path(argv[1]))))
        return 0
    if kind == "_stream":
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("discord").setLevel(logging.WARNING)
        parser = argparse.ArgumentParser()
        parser.add_argument("config", type=Path)
        parser.add_argument("--rates", type=float, nargs="+")
        parser.add_argument("--requests", type=int)
        parser.add_argument("--calibrate", type=int)
        parser.add_argument("--base-s", type=float)
        a = parser.parse_args(argv)
        result = stream_worker(a.config, rates=a.rates, requests=a.requests, calibrate=a.calibrate, base_s=a.base_s)
        print(json.dumps(result))
        return 0
    raise SystemExit(f"unknown worker {kind}")


if __name__ == "__main__":
    raise SystemExit(main())
