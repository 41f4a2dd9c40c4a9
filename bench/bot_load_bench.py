"""The bot under load: many users send /recommend at once on the loopback Discord stand-in (tests/discord_standin).

For each number of workers, every user sends a 10-s clip at the same moment and every request is admitted
(``max_waiting`` = users - workers), so that all are answered. Measured:

- acknowledgement: from the dispatch of each interaction to its callback reaching "Discord" (target: within
  Discord's 3 s; the stand-in also refuses a late one, counted as not acknowledged);
- the event loop's lag: a task that sleeps 10 ms at a time and records how late it wakes (target: p99 < 100 ms);
  the stand-in shares the loop, so its own work counts too (an upper bound on the bot's);
- answers per minute, from the first dispatch to the last answer.

The model is VGGish with random weights (the real weights have the same shapes, so the same cost), the index a
synthetic one. Loopback only, a bounded number of requests.

    python bench/bot_load_bench.py                    # 50 users, 1 and 2 workers
    python bench/bot_load_bench.py --users 20 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from common import random_embedder, scratch_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the Discord stand-in
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's banner

ACK_TARGET_S = 3.0  # Discord's deadline for acknowledging an interaction
LAG_TARGET_S = 0.100  # p99 of the event loop's lag
LAG_PERIOD_S = 0.010
RATE = 16000
CLIP_S = 10.0


@dataclass
class Figures:
    workers: int
    users: int
    acknowledged: int
    answered: int
    ack_s: list[float]
    lag_s: list[float]
    elapsed_s: float

    @property
    def per_minute(self) -> float:
        return 60.0 * self.answered / self.elapsed_s


def clips(users: int) -> list[bytes]:
    from musrec.audio.wav import to_wav_bytes

    t = np.arange(int(CLIP_S * RATE)) / RATE
    return [to_wav_bytes(0.3 * np.sin(2 * np.pi * (150 + 17 * i) * t) * (0.6 + 0.4 * np.sin(t))) for i in range(users)]


async def measure(
    standin: Any, *, config: Any, index_path: Path, embedder: Any, workers: int, data: list[bytes]
) -> Figures:
    from bot.client import make_bot
    from musrec.index.search import Index
    from musrec.pipeline import Musrec

    users = len(data)
    config = replace(
        config,
        bot=replace(
            config.bot,
            attachment_hosts=(standin.cdn_hostname,),
            cooldown_s=0.0,
            workers=workers,
            max_waiting=users - workers,
        ),
    )
    bot = make_bot(
        config,
        musrec_factory=lambda: Musrec(config=config, index=Index(index_path), embedder=embedder),
        guild_ready_timeout=0.05,
    )
    loop = asyncio.get_running_loop()
    lags: list[float] = []

    async def lag() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_PERIOD_S)
            lags.append(max(0.0, loop.time() - before - LAG_PERIOD_S))

    async with standin.running(bot, timeout=120.0):
        attachments = [standin.add_attachment(f"u{i}.wav", clip, "audio/wav") for i, clip in enumerate(data)]
        sampler = asyncio.create_task(lag())
        started = time.monotonic()
        handles = await asyncio.gather(
            *(
                standin.dispatch_interaction("recommend", {"clip": a}, user_id=70_000 + i)
                for i, a in enumerate(attachments)
            )
        )

        def settled(h: Any) -> bool:
            return any(m.embeds or m.ephemeral for m in h.messages)

        await standin.wait_until(lambda: all(settled(h) for h in handles), timeout=3600.0, what="every answer")
        elapsed = time.monotonic() - started
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    acks = [h.response.at - h.dispatched_at for h in handles if h.response is not None and h.response.status < 300]
    answered = sum(1 for h in handles if h.original is not None and h.original.embeds and not h.original.deleted)
    return Figures(workers, users, len(acks), answered, acks, lags, elapsed)


def quantile(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) if values else float("nan")


def report(runs: list[Figures], *, segments: int) -> None:
    cores = os.cpu_count()
    print(
        f"bot load: {runs[0].users} users send /recommend with a {CLIP_S:.0f}-s clip at once; loopback Discord "
        f"stand-in; VGGish (random weights); {segments:,}-segment index; {cores} cores"
    )
    header = f"{'':<34}{'target':>14}" + "".join(f"{f'{r.workers} worker' + 's' * (r.workers > 1):>16}" for r in runs)
    print(header)

    def row(name: str, target: str, cells: list[str]) -> None:
        print(f"{name:<34}{target:>14}" + "".join(f"{c:>16}" for c in cells))

    ms = 1000.0
    row("acknowledged", "all", [f"{r.acknowledged}/{r.users}" for r in runs])
    row("ack p50 (ms)", "", [f"{quantile(r.ack_s, 0.5) * ms:.1f}" for r in runs])
    row("ack p99 (ms)", "", [f"{quantile(r.ack_s, 0.99) * ms:.1f}" for r in runs])
    row("ack max (ms)", f"< {ACK_TARGET_S * ms:.0f}", [f"{max(r.ack_s, default=float('nan')) * ms:.1f}" for r in runs])
    row("loop lag p50 (ms)", "", [f"{quantile(r.lag_s, 0.5) * ms:.2f}" for r in runs])
    row("loop lag p99 (ms)", f"< {LAG_TARGET_S * ms:.0f}", [f"{quantile(r.lag_s, 0.99) * ms:.2f}" for r in runs])
    row("loop lag max (ms)", "", [f"{max(r.lag_s, default=float('nan')) * ms:.2f}" for r in runs])
    row("answered", "all", [f"{r.answered}/{r.users}" for r in runs])
    row("answers per minute", "", [f"{r.per_minute:.1f}" for r in runs])
    row("all answered after (s)", "", [f"{r.elapsed_s:.1f}" for r in runs])
    for r in runs:
        met = (
            r.acknowledged == r.users
            and max(r.ack_s, default=float("inf")) < ACK_TARGET_S
            and quantile(r.lag_s, 0.99) < LAG_TARGET_S
        )
        speedup = r.per_minute / runs[0].per_minute
        print(f"{r.workers} worker(s): targets {'met' if met else 'MISSED'}; {speedup:.2f} x the answers of the first")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--segments", type=int, default=20_000)
    args = parser.parse_args()
    if not 1 <= args.users <= 500:
        parser.error("--users: 1-500 (the requests are bounded)")

    from discord_standin import run

    from musrec.audioset.labels import default_labels
    from musrec.audioset.synthetic import SyntheticAudioSet
    from musrec.config import load_config
    from musrec.index.build import BuildOptions, build_index

    with tempfile.TemporaryDirectory(prefix="musrec-botload-") as tmp_name:
        tmp = Path(tmp_name)
        embedder = random_embedder(tmp)
        build_index(
            SyntheticAudioSet().segments(args.segments),
            tmp / "index",
            labels=default_labels(),
            options=BuildOptions(trees=50),
        )
        config = scratch_config(load_config(None, environ={}), tmp)
        data = clips(args.users)
        runs = []
        for workers in args.workers:

            async def scenario(standin: Any, workers: int = workers) -> Figures:
                return await measure(
                    standin, config=config, index_path=tmp / "index", embedder=embedder, workers=workers, data=data
                )

            runs.append(run(scenario, timeout=3600.0))
    report(runs, segments=args.segments)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
