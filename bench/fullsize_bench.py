"""The real first run at full size, from nothing to an answer: ``musrec setup --from DIR``, then the first queries.

In a working directory (default: a temporary one under /tmp) it generates, once, an AudioSet-shaped
``features.tar.gz`` of 2 million synthetic segments in the release's exact layout and schema (bench/fullsize_data.py),
a VGGish checkpoint of random weights with its PCA file, and a config with defaults everywhere but a data directory
that is fresh for every run and no sha512 checks (the model files are not Google's). Then it runs, as subprocesses,
what a user runs, and measures the wall time and peak memory of each:

    musrec --config CONFIG setup --from WORKDIR/from
    musrec --config CONFIG recommend audioset:VIDEO_ID --json
    musrec --config CONFIG recommend query.wav --json

Setup's stages are timed from its output lines (models, features check, ingest, structure), and in the same run the
tarball is read three more ways, each in its own process, for the ratios: raw gunzip + untar (the floor),
``read_segments`` (musrec's reader) and the per-record ``tf.data`` reader that musrec used before (``--no-before``
skips it; ``--no-reads`` skips all three). Peak memory is each child's ru_maxrss (from wait4: it counts
memory-mapped file pages the child touched) and its peak anonymous memory, sampled from /proc. Timings on a shared
2-core machine are noisy.

``--memory-limit 2G`` runs setup and each query in a memory cgroup of that size with no swap (as root; cgroup v1,
or v2 with delegation), as on a small server: the cgroup's own peak usage (anonymous memory and page cache, the file
pages the build writes and reads included) is reported beside the RSS, and so is every step of the build (from its
``build step`` log lines): when it started, and the peak RSS and cgroup usage sampled during it. A cgroup is
charged for a file page by the first process that reads it: before each such child the page cache of the Python
environment is emptied, so that the child's libraries (TensorFlow's alone are about 500 MiB) count against its
limit, as on a server of its own. Pages that another running process maps cannot be emptied: on a shared machine,
put a private copy of the environment's site-packages first on PYTHONPATH.

    python bench/fullsize_bench.py                                   # 2M segments: about 15 min, 8 GB of disk
    python bench/fullsize_bench.py --count 100000 --workdir /tmp/fsb # a quick try; the tarball is cached there
    python bench/fullsize_bench.py --workdir /tmp/fsb --memory-limit 2G --no-reads   # a 2 GiB server
    python bench/fullsize_bench.py --workdir /tmp/fsb --clean        # delete the generated data afterwards
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import MemoryCgroup, evict_page_cache
from fullsize_data import (
    FULL_COUNT,
    GENERATOR_VERSION,
    GZIP_LEVEL,
    generate,
    write_config,
    write_models,
    write_query_wav,
)

GOAL_S = 30 * 60
GOAL_MIB = 12 * 1024
BUILD_GOAL_S = 10 * 60  # the build inside the memory limit (issue 24)
_STEP = re.compile(r"build step (\w+)")


# ---- running children -------------------------------------------------------------------------------------


@dataclass
class Child:
    """A finished subprocess: exit code, wall time, peak memory and its output lines with arrival times."""

    returncode: int
    wall_s: float
    maxrss_mib: int
    anon_mib: int
    stdout: list[tuple[float, str]] = field(default_factory=list)
    stderr: list[tuple[float, str]] = field(default_factory=list)
    cgroup_peak_mib: int = 0  # with a memory limit: the cgroup's peak usage, page cache included
    oom_kills: int = 0
    # build step -> [started at s, peak RSS MiB, peak cgroup usage MiB] sampled while it ran
    steps: dict[str, list[float]] = field(default_factory=dict)

    def first(self, prefix: str) -> tuple[float, str] | None:
        """The first output line starting with ``prefix``, and when it came."""
        return next(((t, line) for t, line in self.stdout if line.startswith(prefix)), None)


def run_child(cmd: list[str], *, log: Path, memory_limit: int = 0) -> Child:
    """Run ``cmd``, timestamping its lines as they come and logging them; peak RSS from wait4, anon from /proc.

    With ``memory_limit``, in a memory cgroup of its own of that size (SystemExit where none can be made)."""
    group = MemoryCgroup.create(memory_limit, "musrec-bench") if memory_limit else None
    if memory_limit and group is None:
        raise SystemExit("--memory-limit needs a memory cgroup: run as root on cgroup v1, or v2 with delegation")
    if group is not None:
        evict_page_cache([Path(p) for p in sys.path if p and Path(p).is_dir()])
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        preexec_fn=group.preexec if group is not None else None,
    )
    anon = [0]
    done = threading.Event()
    steps: dict[str, list[float]] = {}
    step = [""]

    def sample() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while not done.wait(0.2):
            try:
                rss = 0
                for line in status.read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        anon[0] = max(anon[0], int(line.split()[1]) // 1024)
                    elif line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) // 1024
                used = group.usage() >> 20 if group is not None else 0
            except (OSError, ValueError):
                continue
            if step[0] in steps:
                at = steps[step[0]]
                at[1], at[2] = max(at[1], rss), max(at[2], used)

    err: list[tuple[float, str]] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append((time.monotonic() - started, line))
            found = _STEP.search(line)
            if found:
                step[0] = found.group(1)
                steps[step[0]] = [err[-1][0], 0, 0]

    threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
    for t in threads:
        t.start()
    out: list[tuple[float, str]] = []
    assert proc.stdout is not None
    with log.open("w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        for line in proc.stdout:
            out.append((time.monotonic() - started, line))
            f.write(f"[{out[-1][0]:8.1f}] {line}")
            f.flush()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        done.set()
        for t in threads:
            t.join()
        for at, line in err:
            f.write(f"[{at:8.1f}] stderr: {line}")
    child = Child(proc.returncode, wall, usage.ru_maxrss // 1024, anon[0], out, err, steps=steps)
    if group is not None:
        child.cgroup_peak_mib, child.oom_kills = group.peak() >> 20, group.oom_kills()
        group.remove()
    return child


def worker(*args: str, log: Path) -> tuple[Child, dict[str, Any]]:
    """Run one of this file's workers in its own process; its result is the JSON on its last output line."""
    child = run_child([sys.executable, __file__, *args], log=log)
    if child.returncode != 0:
        tail = "".join(line for _, line in child.stderr[-5:]) or "no output"
        raise SystemExit(f"{args[0]} failed (see {log}):\n{tail}")
    return child, json.loads(child.stdout[-1][1])


# ---- reading the tarball three ways ---------------------------------------------------------------------------


def read_raw(tarball: Path) -> dict[str, Any]:
    """The floor: gunzip and untar every member into memory, nothing else."""
    started = time.perf_counter()
    members = size = 0
    with tarfile.open(tarball, mode="r|*") as tar:
        for member in tar:
            src = tar.extractfile(member) if member.isfile() else None
            if src is None:
                continue
            while chunk := src.read(1 << 20):
                size += len(chunk)
            members += 1
    return {"seconds": round(time.perf_counter() - started, 1), "members": members, "tfrecord_bytes": size}


def read_musrec(tarball: Path) -> dict[str, Any]:
    """musrec's reader, as a build calls it (all splits, default filter)."""
    from musrec.audioset.labels import default_labels
    from musrec.audioset.records import IngestReport, SegmentFilter, read_segments
    from musrec.vggish.tfutil import import_tensorflow

    import_tensorflow()  # as the previous reader's timing, without the import
    started = time.perf_counter()
    report = IngestReport()
    kept = sum(1 for _ in read_segments([tarball], labels=default_labels(), filt=SegmentFilter(), report=report))
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 1), "records": report.records, "kept": kept, "corrupt": report.corrupt_records}


def read_before(tarball: Path) -> dict[str, Any]:
    """The reader musrec had before: a tf.data pipeline per file, one record at a time through its Python iterator,
    TensorFlow's SequenceExample parse per record. Kept here only as the baseline of the ratio."""
    import numpy as np
    from google.protobuf.message import DecodeError

    from musrec.audioset.records import IngestReport, iter_record_files
    from musrec.config import SPLITS
    from musrec.vggish.tfutil import import_tensorflow

    tf = import_tensorflow()
    started = time.perf_counter()
    report = IngestReport()
    records = parsed = 0
    for rf in iter_record_files([tarball], splits=frozenset(SPLITS), report=report):
        dataset = iter(tf.data.TFRecordDataset(str(rf.path)).as_numpy_iterator())
        while True:
            try:
                raw = next(dataset)
            except (StopIteration, tf.errors.DataLossError):
                break
            records += 1
            try:
                example = tf.train.SequenceExample.FromString(raw)
                ctx = example.context.feature
                ctx["video_id"].bytes_list.value[0].decode("utf-8")
                float(ctx["start_time_seconds"].float_list.value[0])
                float(ctx["end_time_seconds"].float_list.value[0])
                tuple(int(i) for i in ctx["labels"].int64_list.value)
                frames = example.feature_lists.feature_list["audio_embedding"].feature
                blobs = [f.bytes_list.value[0] for f in frames]
            except (DecodeError, IndexError, KeyError, UnicodeDecodeError):
                continue
            np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), 128)
            parsed += 1
    return {"seconds": round(time.perf_counter() - started, 1), "records": records, "parsed": parsed}


# ---- the run --------------------------------------------------------------------------------------------------


def setup_stages(child: Child) -> dict[str, float]:
    """Setup's stages, from when its lines arrived: models, labels, features check, ingest, structure."""
    pca = child.first("pca params:")
    features = child.first("features:")
    built = child.first("index: built")
    trained = next(((t, line) for t, line in child.stderr if "lists trained on" in line), None)
    if not (pca and features and built):
        return {}
    stages = {"models": pca[0], "features check": features[0] - pca[0]}
    if trained is not None:
        train_s = float(trained[1].rsplit(" in ", 1)[1].split()[0])
        # The structure starts with training: ingest also counts choosing the training sample, a small part.
        ingest_end = trained[0] - train_s
        stages["ingest"] = ingest_end - features[0]
        stages["structure"] = built[0] - ingest_end
    else:
        stages["ingest + structure"] = built[0] - features[0]
    stages["rest"] = child.wall_s - built[0]
    return stages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="where data is generated and cached (default: a new /tmp dir)")
    parser.add_argument("--count", type=int, default=FULL_COUNT, help="segments in the tarball (default 2,000,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-before", action="store_true", help="skip timing the previous reader")
    parser.add_argument("--no-reads", action="store_true", help="skip the three ways of reading the tarball")
    parser.add_argument(
        "--memory-limit", type=_size, default=0, metavar="SIZE", help="run setup and the queries in a memory cgroup "
        "of this size (2G, 1536M), no swap, as on a small server"
    )  # fmt: skip
    parser.add_argument("--clean", action="store_true", help="delete the working directory at the end")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        jobs = {"generate": lambda: generate(Path(rest[0]), int(rest[1]), int(rest[2])),
                "models": lambda: write_models(Path(rest[0])),
                "raw": lambda: read_raw(Path(rest[0])),
                "musrec": lambda: read_musrec(Path(rest[0])),
                "before": lambda: read_before(Path(rest[0]))}  # fmt: skip
        print(json.dumps(jobs[kind]()))
        return 0

    home = Path.home().resolve()
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="musrec-fullsize-"))).resolve()
    if workdir == home or home / ".local" in (workdir, *workdir.parents):
        raise SystemExit(f"{workdir}: pick a scratch directory, not the home or its data directories")
    source, logs = workdir / "from", workdir / "logs"
    source.mkdir(parents=True, exist_ok=True)
    logs.mkdir(exist_ok=True)
    tarball, stamp = source / "features.tar.gz", source / "features.json"
    params = {"count": args.count, "seed": args.seed, "gzip": GZIP_LEVEL, "version": GENERATOR_VERSION}
    print(f"working directory {workdir} ({shutil.disk_usage(workdir).free / 2**30:.0f} GiB free)", flush=True)

    cached = json.loads(stamp.read_text()) if stamp.is_file() and tarball.is_file() else {}
    if cached.get("params") == params:
        gen_child, facts = None, cached
        print(f"reusing {tarball} ({facts['records']:,} segments, generated in {facts['generate_s']} s)", flush=True)
    else:
        stamp.unlink(missing_ok=True)
        print(f"generating {args.count:,} segments into {tarball} ...", flush=True)
        gen_child, facts = worker("--worker", "generate", str(tarball), str(args.count), str(args.seed),
                                  log=logs / "generate.log")  # fmt: skip
        facts = {"params": params, **facts, "generate_peak_mib": gen_child.maxrss_mib}
        stamp.write_text(json.dumps(facts, indent=2))
    worker("--worker", "models", str(source), log=logs / "models.log")

    data = workdir / "data"
    shutil.rmtree(data, ignore_errors=True)  # every run starts from nothing
    config = workdir / "config.toml"
    write_config(config, data)
    wav = workdir / "query.wav"
    write_query_wav(wav)
    musrec = [sys.executable, "-m", "musrec.cli", "--config", str(config)]

    print("musrec setup --from ...", flush=True)
    limit = args.memory_limit
    setup = run_child([*musrec, "-v", "setup", "--from", str(source)], log=logs / "setup.log", memory_limit=limit)
    if setup.returncode != 0:
        killed = f", {setup.oom_kills} killed for lack of memory" if setup.oom_kills else ""
        print_steps(setup)
        raise SystemExit(f"setup failed (exit {setup.returncode}{killed}), see {logs / 'setup.log'}")
    query = facts["query"]
    print("first answers ...", flush=True)
    by_segment = run_child(
        [*musrec, "recommend", f"audioset:{query['video_id']}", "--json"], log=logs / "rec1.log", memory_limit=limit
    )
    by_file = run_child([*musrec, "recommend", str(wav), "--json"], log=logs / "rec2.log", memory_limit=limit)
    for name, child in (("recommend audioset:", by_segment), ("recommend file", by_file)):
        if child.returncode != 0:
            raise SystemExit(f"{name} failed (exit {child.returncode}), see {logs}")

    print("reading the tarball: raw, musrec, before ...", flush=True)
    reads = {
        kind: worker("--worker", kind, str(tarball), log=logs / f"read-{kind}.log")
        for kind in ("raw", "musrec", "before")
        if not args.no_reads and (kind != "before" or not args.no_before)
    }
    run = Run(facts, gen_child, setup, by_segment, by_file, reads, data / "index", limit)
    results = {"params": params, **report(run)}
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {workdir / 'results.json'}, logs: {logs}")
    if args.clean:
        shutil.rmtree(workdir)
        print(f"deleted {workdir}")
    return 0


@dataclass(frozen=True)
class Run:
    facts: dict[str, Any]  # the tarball's (features.json)
    generated: Child | None  # None when the tarball was cached
    setup: Child
    by_segment: Child
    by_file: Child
    reads: dict[str, tuple[Child, dict[str, Any]]]
    index: Path
    memory_limit: int = 0


def _size(text: str) -> int:
    """``2G``, ``1536M``, ``2147483648``: bytes (binary units)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 2G or 1536M)") from None


def print_steps(child: Child) -> None:
    """Each build step: when it started, how long it ran, its peak RSS and cgroup usage."""
    if not child.steps:
        return
    names = list(child.steps)
    ends = [child.steps[n][0] for n in names[1:]] + [child.wall_s]
    print(f"\n{'build step':<12} {'from s':>8} {'for s':>8} {'peak RSS MiB':>13} {'cgroup MiB':>11}")
    for name, end in zip(names, ends, strict=True):
        at, rss, used = child.steps[name]
        print(f"{name:<12} {at:>8.1f} {end - at:>8.1f} {rss:>13,.0f} {used:>11,.0f}")


def report(run: Run) -> dict[str, Any]:
    """Print the table, the totals against the goals and the reading ratios; return them for results.json."""
    from musrec.index.layout import Manifest

    facts, setup, by_segment, by_file = run.facts, run.setup, run.by_segment, run.by_file
    built = Manifest.read(run.index)
    manifest = json.loads(built.to_json())
    records = facts["records"]
    stages = setup_stages(setup)
    print()
    print(f"tarball: {records:,} segments ({facts['short']:,} shorter than 10 s), {facts['bytes'] / 2**30:.2f} GiB, "
          f"files {facts['files']}")  # fmt: skip
    print(f"index:   {manifest['count']:,} segments, {manifest['representation']} {manifest['dimension']}-d, "
          f"{built.structure()}, "
          f"recall@10 {manifest['recall_at_10']} held out; build_seconds {manifest['build_seconds']}")  # fmt: skip
    rows: list[tuple[str, float, str, str, str]] = []

    def row(name: str, seconds: float, child: Child | None, note: str = "") -> None:
        peak = f"{child.maxrss_mib:,}" if child else ""
        anon = f"{child.anon_mib:,}" if child else ""
        rows.append((name, seconds, peak, anon, note))

    if run.generated is not None:
        gen = run.generated
        row("generate tarball (not counted)", gen.wall_s, gen, f"{records / gen.wall_s:,.0f} rec/s")
    else:
        rows.append(("generate tarball (cached, not counted)", facts["generate_s"], "", "", ""))
    row(
        "musrec setup --from (total)",
        setup.wall_s,
        setup,
        f"cgroup peak {setup.cgroup_peak_mib:,} MiB" if run.memory_limit else "",
    )
    for name, seconds in stages.items():
        note = f"{manifest['count'] / seconds:,.0f} rec/s" if name == "ingest" else ""
        if name == "features check":
            note = f"{facts['bytes'] / seconds / 2**20:,.0f} MiB/s of .tar.gz read through"
        row(f"  {name}", seconds, None, note)
    for name, child in (("recommend audioset:ID", by_segment), ("recommend query.wav", by_file)):
        row(
            f"first answer: {name}",
            child.wall_s,
            child,
            f"cgroup peak {child.cgroup_peak_mib:,} MiB" if run.memory_limit else "",
        )
    print()
    print(f"{'stage':<40} {'wall s':>8} {'peak RSS MiB':>13} {'peak anon MiB':>14}  note")
    for name, seconds, peak, anon, note in rows:
        print(f"{name:<40} {seconds:>8.1f} {peak:>13} {anon:>14}  {note}")

    total_s = setup.wall_s + by_segment.wall_s + by_file.wall_s
    peak_mib = max(setup.maxrss_mib, by_segment.maxrss_mib, by_file.maxrss_mib)
    print()
    print(f"first run (setup + both first answers): {total_s / 60:.1f} min (goal <= {GOAL_S // 60} min: "
          f"{'met' if total_s <= GOAL_S else 'MISSED'}), peak RSS {peak_mib / 1024:.2f} GiB of one process "
          f"(goal <= {GOAL_MIB // 1024} GiB: {'met' if peak_mib <= GOAL_MIB else 'MISSED'})")  # fmt: skip
    print_steps(setup)
    build_s = float(manifest["build_seconds"])
    if run.memory_limit:
        cgroup_peak = max(setup.cgroup_peak_mib, by_segment.cgroup_peak_mib, by_file.cgroup_peak_mib)
        print(f"\nunder a {run.memory_limit / 2**30:.2f} GiB memory cgroup: the build took {build_s / 60:.1f} min "
              f"(goal <= {BUILD_GOAL_S // 60} min: {'met' if build_s <= BUILD_GOAL_S else 'MISSED'}), recall@10 "
              f"{manifest['recall_at_10']} (target {manifest['target_recall']}); peak RSS {peak_mib:,} MiB, the "
              f"cgroup's peak usage {cgroup_peak:,} MiB (page cache included), out-of-memory kills "
              f"{setup.oom_kills + by_segment.oom_kills + by_file.oom_kills}")  # fmt: skip
    print()
    if not run.reads:
        return _results(run, manifest, stages, total_s, peak_mib)

    print("reading the same tarball, each in its own process:")
    raw, (mine_child, mine) = run.reads["raw"][1], run.reads["musrec"]
    print(
        f"  raw gunzip + untar         {raw['seconds']:>7.1f} s  {records / raw['seconds']:>9,.0f} rec/s  "
        f"({facts['bytes'] / raw['seconds'] / 2**20:,.0f} MiB/s of .tar.gz, "
        f"{raw['tfrecord_bytes'] / raw['seconds'] / 2**20:,.0f} MiB/s out)"
    )
    mine_rate = mine["records"] / mine["seconds"]
    print(
        f"  musrec read_segments       {mine['seconds']:>7.1f} s  {mine_rate:>9,.0f} rec/s  "
        f"({raw['seconds'] / mine['seconds']:.2f}x the raw read's speed; peak RSS {mine_child.maxrss_mib:,} MiB)"
    )
    if "before" in run.reads:
        before_child, before = run.reads["before"]
        rate = before["records"] / before["seconds"]
        print(
            f"  previous reader (tf.data)  {before['seconds']:>7.1f} s  {rate:>9,.0f} rec/s  "
            f"(musrec's reader is {mine_rate / rate:.1f}x faster; peak RSS {before_child.maxrss_mib:,} MiB)"
        )
    if "ingest" in stages:
        print(f"  setup's ingest (read, parse, store)   {manifest['count'] / stages['ingest']:>9,.0f} rec/s")
    return _results(run, manifest, stages, total_s, peak_mib)


def _results(
    run: Run, manifest: dict[str, Any], stages: dict[str, float], total_s: float, peak_mib: int
) -> dict[str, Any]:
    facts, setup, by_segment, by_file = run.facts, run.setup, run.by_segment, run.by_file
    return {
        "tarball": {k: v for k, v in facts.items() if k != "params"},
        "manifest": manifest,
        "setup": {
            "wall_s": setup.wall_s,
            "maxrss_mib": setup.maxrss_mib,
            "anon_mib": setup.anon_mib,
            "cgroup_peak_mib": setup.cgroup_peak_mib,
            "oom_kills": setup.oom_kills,
            "steps": setup.steps,
            **stages,
        },
        "memory_limit": run.memory_limit,
        "recommend_segment": {
            "wall_s": by_segment.wall_s,
            "maxrss_mib": by_segment.maxrss_mib,
            "cgroup_peak_mib": by_segment.cgroup_peak_mib,
        },
        "recommend_file": {
            "wall_s": by_file.wall_s,
            "maxrss_mib": by_file.maxrss_mib,
            "cgroup_peak_mib": by_file.cgroup_peak_mib,
        },
        "first_run_s": total_s,
        "first_run_peak_mib": peak_mib,
        "read": {kind: result for kind, (_, result) in run.reads.items()},
    }


if __name__ == "__main__":
    raise SystemExit(main())
