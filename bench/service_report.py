"""The tables and the recommendation of bench/bot_service_bench.py, from the children's results (JSON-shaped)."""

from __future__ import annotations

from typing import Any

import numpy as np

from musrec.cores import usable_cores

ACK_LIMIT_S = 3.0  # Discord's deadline for acknowledging an interaction


def q(values: list[float], p: float) -> float:
    return float(np.quantile(values, p)) if values else float("nan")


def per_minute(stream: dict[str, Any]) -> float:
    return 60.0 * len(stream["answer_s"]) / stream["elapsed_s"] if stream["elapsed_s"] else float("nan")


def pool(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's rounds as one: answer times together, answers per minute over the summed time."""
    first = rounds[0]
    streams = []
    for i, s in enumerate(first["streams"]):
        each = [r["streams"][i] for r in rounds]
        streams.append(
            {
                "factor": s["factor"],
                "interval_s": s["interval_s"],
                "requests": sum(e["requests"] for e in each),
                "answer_s": [a for e in each for a in e["answer_s"]],
                "refused": sum(e["refused"] for e in each),
                "ack_max_s": max(e["ack_max_s"] for e in each),
                "elapsed_s": sum(e["elapsed_s"] for e in each),
                "cpu_share": float(np.mean([e["cpu_share"] for e in each])),
                "machine_share": float(np.mean([e["machine_share"] for e in each])),
                "late_dispatch_s": max(e["late_dispatch_s"] for e in each),
                "rounds_per_minute": [per_minute(e) for e in each],
            }
        )
    return {
        "workers": first["workers"],
        "threads": first["threads"],
        "ready_s": float(np.median([r["ready_s"] for r in rounds])),
        "forward_s": float(np.median([r["forward_s"] for r in rounds])),
        "single_median_s": float(np.median([a for r in rounds for a in r["single_s"]])),
        "base_s": first["base_s"],
        "streams": streams,
        "memory_mib": {"VmHWM": max(r["memory_mib"].get("VmHWM", 0) for r in rounds)},
        "standin_errors": [e for r in rounds for e in r["standin_errors"]],
        "unexpected": [c for r in rounds for c in r["unexpected"]],
    }


def report_streams(runs: list[dict[str, Any]], *, segments: int, rounds: int, clip_s: float) -> None:
    base = runs[0]
    cores = usable_cores()
    requests = base["streams"][0]["requests"] // rounds if base["streams"] else 0
    print(
        f"\nsteady stream: /recommend with a {clip_s:.0f}-s 44.1 kHz stereo WAV, open-loop arrivals at a fixed "
        f"interval, {requests} requests per rate and round, {rounds} round(s) (configurations in turn, the order "
        f"reversed each round), pooled; {segments:,}-segment IVF index; {cores} cores"
    )
    print(
        f"baseline {base['workers']}x{base['threads']}: single request {base['base_s']:.2f} s (first round) "
        f"-> capacity {60 / base['base_s']:.1f} answers/min; rates are multiples of it"
    )
    print(
        "fwd: forward pass alone (10 s of audio); single: one request at a time; ans/min: answers / (first dispatch to "
        "last answer), per round in brackets; x base: ans/min over the baseline's at that rate; p50/fwd: answer time "
        "over the forward pass; cpu: this process and its children, machine: all processes (both as a share of all "
        "cores)"
    )
    print(
        f"{'workers x threads':<18}{'fwd s':>6}{'single s':>9}{'ready s':>8}{'VmHWM MiB':>10}  "
        f"{'rate':>5}{'arrive/min':>11}{'answered':>9}{'ans/min':>8} {'(rounds)':<14}{'x base':>6}"
        f"{'p50 s':>7}{'p95 s':>7}{'p50/fwd':>8}{'p95/fwd':>8}{'ack max':>8}{'cpu':>5}{'machine':>8}"
    )
    for r in runs:
        head = (
            f"{r['workers']}x{r['threads']:<16}{r['forward_s']:>6.2f}{r['single_median_s']:>9.2f}"
            f"{r['ready_s']:>8.1f}{r['memory_mib'].get('VmHWM', 0):>10,}  "
        )
        for i, s in enumerate(r["streams"]):
            b = base["streams"][i] if i < len(base["streams"]) else s
            p50, p95 = q(s["answer_s"], 0.5), q(s["answer_s"], 0.95)
            spread = "(" + " ".join(f"{v:.0f}" for v in s["rounds_per_minute"]) + ")"
            print(
                (head if i == 0 else " " * len(head))
                + f"{s['factor']:>5.2f}{60 / s['interval_s']:>11.1f}{len(s['answer_s']):>5}/{s['requests']:<3}"
                f"{per_minute(s):>8.1f} {spread:<14}{per_minute(s) / per_minute(b):>6.2f}{p50:>7.2f}{p95:>7.2f}"
                f"{p50 / r['forward_s']:>8.1f}{p95 / r['forward_s']:>8.1f}{s['ack_max_s']:>8.2f}"
                f"{100 * s['cpu_share']:>4.0f}%{100 * s['machine_share']:>7.0f}%"
            )
    for r in runs:
        problems = [f"{s['refused']} unanswered at rate {s['factor']}" for s in r["streams"] if s["refused"]]
        problems += [
            f"a dispatch {s['late_dispatch_s']:.2f} s late" for s in r["streams"] if s["late_dispatch_s"] > 0.5
        ]
        problems += [
            f"acknowledged after {s['ack_max_s']:.1f} s" for s in r["streams"] if s["ack_max_s"] >= ACK_LIMIT_S
        ]
        problems += r["standin_errors"] + [f"stand-in: unexpected {c}" for c in r["unexpected"]]
        if problems:
            print(f"{r['workers']}x{r['threads']}: " + "; ".join(problems))


MORE_ANSWERS = 1.05  # a configuration replaces the baseline only with this many times its answers when saturated
P95_SLACK = 1.10  # ... and a p95 at the highest unsaturated rate at most this many times the baseline's


def recommend(runs: list[dict[str, Any]]) -> None:
    """The default for bot.workers (and threads): the baseline (the first configuration, normally today's default)
    unless another answers clearly more when saturated without a worse p95 below saturation; the most answers win."""
    if not runs or not runs[0]["streams"]:
        return
    cores = usable_cores()
    base = runs[0]
    factors = [s["factor"] for s in base["streams"]]
    top = factors.index(max(factors))
    below = [f for f in factors if f < 1.0]
    loaded = factors.index(max(below)) if below else None

    def saturated(r: dict[str, Any]) -> float:
        return per_minute(r["streams"][top])

    def p95(r: dict[str, Any]) -> float:
        return q(r["streams"][loaded]["answer_s"], 0.95) if loaded is not None else 0.0

    better = [
        r for r in runs[1:] if saturated(r) >= MORE_ANSWERS * saturated(base) and p95(r) <= P95_SLACK * p95(base) + 1e-9
    ]
    pick = max(better, key=saturated) if better else base
    auto = max(1, cores // pick["workers"])
    threads = "0 (auto: cores // workers)" if pick["threads"] == auto else str(pick["threads"])
    at = f"at {factors[top]:g}x" + (f", p95 at {factors[loaded]:g}x" if loaded is not None else "")

    def figures(r: dict[str, Any]) -> str:
        return f"{r['workers']}x{r['threads']} {saturated(r):.0f}/min" + (
            f" p95 {p95(r):.2f} s" if loaded is not None else ""
        )

    print(
        f"\nrecommended default: bot.workers = {pick['workers']}, embedder.threads = {threads}\n"
        f"  measured ({at}): " + ", ".join(figures(r) for r in runs) + "\n"
        f"  rule: another configuration replaces the baseline {base['workers']}x{base['threads']} only with "
        f"{MORE_ANSWERS:.2f}x its answers/min when saturated and a p95 below saturation within {P95_SLACK:.2f}x its "
        "own; of those, the most answers/min. "
        + (
            f"{pick['workers']}x{pick['threads']} does ({saturated(pick) / saturated(base):.2f}x the answers)."
            if pick is not base
            else "None does."
        )
    )


def report_startup(starts: list[dict[str, Any]], manifest: dict[str, Any], *, requests: int, workers: int) -> None:
    print(
        f"\nproduction start-up (bot.__main__ run, bot.workers = {workers} (the default), threads auto, "
        "guild_ready_timeout 2 s): "
        f"{manifest['count']:,}-segment {manifest['ann']} index ({manifest['ivf_lists']} lists, nprobe "
        f"{manifest['nprobe']}), memory-mapped; index files {manifest['files_mib']:,} MiB on disk"
    )
    print(
        f"{'start':<10}{'loaded s':>9}{'IDENTIFY s':>11}{'on_ready s':>11}{'answers p50 s':>14}  "
        f"{'memory MiB':<13}{'VmRSS':>7}{'RssAnon':>8}{'RssFile':>8}{'VmHWM':>7}"
    )
    for name, s in zip(("first", "restart", "cold"), starts, strict=False):
        for i, (when, m) in enumerate(
            (("after READY", s["after_ready_mib"]), ("after answers", s["after_answers_mib"]))
        ):
            head = (
                f"{name:<10}{s['loaded_s'] or float('nan'):>9.1f}{s['identify_s'] or float('nan'):>11.1f}"
                f"{s['ready_s']:>11.1f}{q(s['answer_s'], 0.5):>14.2f}  "
                if i == 0
                else " " * 55
            )
            print(
                f"{head}{when:<13}{m.get('VmRSS', 0):>7,}{m.get('RssAnon', 0):>8,}{m.get('RssFile', 0):>8,}"
                f"{m.get('VmHWM', 0):>7,}"
            )
        problems = s["standin_errors"] + [f"stand-in: unexpected {c}" for c in s["unexpected"]]
        if s["exit_code"] != 0 or s["identifies"] != 1 or len(s["answer_s"]) != requests:
            problems.append(
                f"exit {s['exit_code']}, {s['identifies']} IDENTIFY, {len(s['answer_s'])}/{requests} answered"
            )
        if problems:
            print(f"{name}: " + "; ".join(problems))
