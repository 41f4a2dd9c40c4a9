"""Issue 24: the full index on a small server.

A build stays within the memory it estimates (run in a memory cgroup of exactly that size, where one can be made),
refuses before reading a feature when the machine gives less, and after a build was killed the next one says so
instead of starting again. The IVF lists are written to disk as they are encoded, in exactly the file faiss writes.
The 2M figures are bench/fullsize_bench.py's (``--memory-limit 2G``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from setup_fixtures import SetupFiles, setup_files

from musrec.audioset.records import SPLITS
from musrec.audioset.synthetic import SyntheticAudioSet, SyntheticSpec
from musrec.audioset.tfrecord import encode, frame_rows, write_tfrecord
from musrec.config import load_config
from musrec.errors import DataError
from musrec.index.layout import MANIFEST, debris
from musrec.index.memory import STATE_FILE, MemoryLimit, estimate, segments_in_sources, too_small
from musrec.index.search import Index
from musrec.setup.provision import ensure_ready

ROOT = Path(__file__).resolve().parents[1]
SMALL = 20_000  # segments: a build of seconds whose every step runs (IVF trains, assigns, writes, tunes)


def _bench_common() -> Any:
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "bench" / "common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MemoryCgroup = _bench_common().MemoryCgroup


def write_features(root: Path, count: int, *, shards: int = 8) -> Path:
    """``count`` AudioSet-shaped segments as the release lays them out (unbal_train, TFRecords)."""
    base = root / "audioset_v1_embeddings" / "unbal_train"
    base.mkdir(parents=True)
    gen = SyntheticAudioSet(SyntheticSpec(seed=3))
    per = -(-count // shards)
    for s, lo in enumerate(range(0, count, per)):
        n = min(per, count - lo)
        rows, cluster = gen.rows(lo, n)
        frames = frame_rows(rows)
        records = [
            encode(f"v{s:02d}{lo + i:09d}", 0.0, 10.0, gen.cluster_labels[int(cluster[i])], frames[i]) for i in range(n)
        ]
        write_tfrecord(base / f"{s:02d}.tfrecord", records)
    return root / "audioset_v1_embeddings"


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_features(tmp_path_factory.mktemp("features"), SMALL)


def musrec(
    *args: str, group: Any = None, wait: bool = True, oom_first: bool = False
) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    """The command line, as a user runs it, in ``group`` (a memory cgroup) if given; ``oom_first``: the process the
    kernel kills first when that cgroup runs out of memory (oom_score_adj 1000)."""
    cmd = [sys.executable, "-m", "musrec.cli", *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def preexec() -> None:
        if group is not None:
            group.preexec()
        if oom_first:
            Path("/proc/self/oom_score_adj").write_text("1000")

    kwargs: dict[str, Any] = {"text": True, "env": env, "preexec_fn": preexec}
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    return subprocess.run(cmd, capture_output=True, **kwargs)


@pytest.fixture
def cgroup() -> Any:
    """A factory of memory cgroups (removed afterwards); the test is skipped where none can be made."""
    made: list[Any] = []

    def make(limit: int) -> Any:
        group = MemoryCgroup.create(limit, "musrec-test")
        if group is None:
            pytest.skip("no memory cgroup can be made here (needs root and a writable memory hierarchy)")
        made.append(group)
        return group

    yield make
    for group in made:
        group.remove()


def needed(count: int, backend: str, *, exact_matrix: bool = True) -> int:
    """What the build estimates it needs (``exact_matrix`` False: where it cannot hold the float matrix)."""
    limit = None if exact_matrix else MemoryLimit(0, "none")
    return estimate(
        count, representation="flatten", backend=backend, ivf_lists=0, trees=50, queries=200, limit=limit
    ).peak


# ---- the build fits the memory it says it needs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "count"),
    [("ivf", SMALL), ("annoy", SMALL), pytest.param("ivf", 300_000, marks=pytest.mark.slow)],
)
def test_a_build_fits_in_the_memory_it_estimates(
    tmp_path: Path, features: Path, cgroup: Any, backend: str, count: int
) -> None:
    source = features if count == SMALL else write_features(tmp_path / "big", count)
    # What the build estimates before it reads: from the size of the files, at least the segments they hold.
    estimated = segments_in_sources([source], frozenset(SPLITS))
    assert estimated >= count
    limit = needed(estimated, backend)
    group = cgroup(limit)
    out = tmp_path / "idx"
    done = musrec("index", "build", str(source), "--out", str(out), "--backend", backend, "--no-progress", group=group)
    assert done.returncode == 0, done.stderr
    assert group.oom_kills() == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert (manifest["count"], manifest["ann"]) == (count, backend)
    assert manifest["recall_at_10"] >= manifest["target_recall"]
    assert not debris(out) and not (out / STATE_FILE).exists()
    index = Index(out, backend=backend)
    ids, _ = index.search(index.item_vector(7), 5)
    assert 7 in ids.tolist()  # held out or not, every segment is found


def test_the_limit_is_read_from_the_memory_cgroup(cgroup: Any) -> None:
    group = cgroup(1536 << 20)
    code = "from musrec.index.memory import memory_limit; print(memory_limit())"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=group.preexec, check=True
    )
    assert done.stdout.strip() in ("1.5 GiB (cgroup v1 memory.limit_in_bytes)", "1.5 GiB (cgroup v2 memory.max)")


# ---- too small: refused before a feature is read ------------------------------------------------------------


def test_a_machine_too_small_is_told_so_before_the_features_are_read(
    tmp_path: Path, features: Path, cgroup: Any
) -> None:
    # A file that is not a TFRecord sits among the features: reading them would stop at it. The refusal comes first.
    (features.parent / "broken").mkdir(exist_ok=True)
    broken = features.parent / "broken" / "junk.tfrecord"
    broken.write_bytes(b"not a record at all")
    limit = needed(SMALL, "ivf") - (64 << 20)
    group = cgroup(limit)
    out = tmp_path / "idx"
    done = musrec("index", "build", str(features.parent), "--out", str(out), "--no-progress", group=group)
    broken.unlink()
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("musrec: error: not enough memory to build an index of ")
    assert "segments need about" in lines[0] and "this machine gives" in lines[0] and "cgroup v" in lines[0]
    assert "`--splits eval bal_train`" in lines[0] and "`musrec setup --from DIR`" in lines[0]
    assert "more memory" in lines[0]
    assert not out.exists() and not debris(out)
    assert group.oom_kills() == 0


def test_the_refusal_gives_the_figures_and_the_choices() -> None:
    need = estimate(2_082_531, representation="flatten", backend="auto", ivf_lists=0, trees=50, queries=200)
    assert need.ann == "ivf" and need.peak < 2 << 30  # the full AudioSet is estimated to fit a 2 GiB server
    assert too_small(need, MemoryLimit(2 << 30, "cgroup v1 memory.limit_in_bytes"), what="x") is None
    line = too_small(need, MemoryLimit(1 << 30, "cgroup v1 memory.limit_in_bytes"), what="the index at /srv/idx")
    assert line is not None and "\n" not in line
    assert line.startswith("not enough memory to build the index at /srv/idx: about 2,082,531 segments need about ")
    assert "this machine gives 1.0 GiB (cgroup v1 memory.limit_in_bytes)" in line
    assert "`--splits eval bal_train`: 42,531 at most" in line
    # Where the full set is refused, the small splits can fit: the advice is one that works there.
    smaller = MemoryLimit(need.peak - (64 << 20), "physical memory")
    assert too_small(need, smaller, what="x") is not None
    small = estimate(
        42_531, representation="flatten", backend="auto", ivf_lists=0, trees=50, queries=200, limit=smaller
    )
    assert too_small(small, smaller, what="x") is None and not small.exact_matrix


def _setup_source(root: Path, files: SetupFiles, *, features: Path | None) -> tuple[Path, Path]:
    """A directory to set up from (the VGGish files, ``features`` as features.tar.gz) and a config whose data
    directory is fresh; (config, source)."""
    source = root / "from"
    source.mkdir()
    for path in (files.checkpoint, files.pca):
        (source / path.name).write_bytes(path.read_bytes())
    if features is not None:
        (source / "features.tar.gz").write_bytes(features.read_bytes())
    config = root / "config.toml"
    config.write_text(
        f'[data]\ndir = "{root / "data"}"\n\n[setup]\ncheckpoint_sha512 = ""\npca_sha512 = ""\n', encoding="utf-8"
    )
    return config, source


def test_setup_on_a_machine_too_small_says_so_before_reading_the_features(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, cgroup: Any
) -> None:
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"\x1f\x8b" + bytes(1000))  # checking it would fail: it is never read
    config, source = _setup_source(tmp_path, setup_files(tmp_path_factory), features=garbage)
    # Between what the whole release needs and what its two small splits need.
    full, small = needed(2_082_531, "auto"), needed(42_531, "auto", exact_matrix=False)
    assert small < full
    group = cgroup((full + small) // 2)
    done = musrec("--config", str(config), "setup", "--from", str(source), "--no-progress", group=group)
    assert done.returncode == 1, done.stdout
    assert "features:" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("musrec: error: not enough memory to build the index at "), lines
    assert "about 2,082,531 segments need about 1." in lines[0] and "GiB (cgroup v" in lines[0]
    assert "`--splits eval bal_train`" in lines[0]

    doctor = musrec("--config", str(config), "doctor", "--quick", group=group)
    assert doctor.returncode == 1
    [memory] = [line for line in doctor.stdout.splitlines() if line.split()[1:2] == ["memory"]]
    assert memory.split()[0] == "problem" and "not enough memory to build the index at " in memory

    # The small splits fit here: set-up goes on to read the features (and stops at the garbage).
    small = musrec(
        "--config", str(config), "setup", "--from", str(source), "--splits", "eval", "bal_train", group=group
    )
    assert small.returncode == 1 and "features.tar.gz is not a readable tarball" in small.stderr
    assert "memory" not in small.stderr


# ---- killed anyway: the next start says so ------------------------------------------------------------------


def _kill_during(proc: subprocess.Popen[str], out: Path, steps: tuple[str, ...]) -> str:
    """SIGKILL the build (as the out-of-memory killer does) once it is in one of ``steps``; the step it was in."""
    while proc.poll() is None:
        for directory in debris(out):
            try:
                step = json.loads((directory / STATE_FILE).read_text())["step"]
            except (OSError, ValueError, KeyError):
                continue
            if step in steps:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return str(json.loads((directory / STATE_FILE).read_text())["step"])
        time.sleep(0.01)
    raise AssertionError(f"the build ended before any of {steps}: {proc.communicate()}")


def test_after_a_build_was_killed_the_next_one_says_so_instead_of_starting_again(
    tmp_path: Path, features: Path
) -> None:
    out = tmp_path / "idx"
    build = ("index", "build", str(features), "--out", str(out), "--backend", "ivf", "--no-progress")
    proc = musrec(*build, wait=False)
    assert isinstance(proc, subprocess.Popen)
    step = _kill_during(proc, out, ("add", "write"))
    [left] = debris(out)
    assert len(list(left.iterdir())) > 1  # the raw rows and more

    again = musrec(*build)
    assert again.returncode == 1
    line = again.stderr.strip()
    assert "\n" not in line, line
    assert line.startswith("musrec: error: the last index build was killed")
    assert f"in its {step} step after" in line
    assert "`--splits eval bal_train`" in line and "`musrec setup --from DIR`" in line
    assert line.endswith("`musrec index build --force` tries again")
    assert not out.exists()
    assert [p.name for p in left.iterdir()] == [STATE_FILE]  # the gigabytes are gone, the record stays
    # Said again at every start, until someone decides.
    assert musrec(*build).stderr.strip() == line

    forced = musrec(*build, "--force")
    assert forced.returncode == 0, forced.stderr
    assert not debris(out) and (out / MANIFEST).is_file()


def test_a_build_stopped_by_sigterm_leaves_nothing_and_is_not_taken_for_a_kill(tmp_path: Path, features: Path) -> None:
    out = tmp_path / "idx"
    build = ("index", "build", str(features), "--out", str(out), "--backend", "ivf", "--no-progress")
    proc = musrec(*build, wait=False)
    assert isinstance(proc, subprocess.Popen)
    while proc.poll() is None and not any((d / STATE_FILE).is_file() for d in debris(out)):
        time.sleep(0.01)
    proc.terminate()  # docker stop, systemctl stop
    _, err = proc.communicate()
    assert proc.returncode == 130 and err.strip().endswith("musrec: interrupted"), err
    assert not debris(out) and not out.exists()
    again = musrec(*build)
    assert again.returncode == 0, again.stderr


def test_setup_after_a_killed_build_says_so_until_asked_to_rebuild(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, features: Path
) -> None:
    files = setup_files(tmp_path_factory)
    config, source = _setup_source(tmp_path, files, features=files.features)
    index = tmp_path / "data" / "index"
    # A build of the index that set-up builds, killed in its add step, as the out-of-memory killer does.
    proc = musrec("index", "build", str(features), "--out", str(index), "--backend", "ivf", "--no-progress", wait=False)
    assert isinstance(proc, subprocess.Popen)
    _kill_during(proc, index, ("add",))

    # The bot's start (ensure_ready; with MAX servers embedding, so no VGGish files are due) is refused in the
    # same words, nothing downloaded or read.
    bot_config = load_config(config, environ={"MUSREC_EMBEDDER_KIND": "max"})
    with pytest.raises(DataError, match=r"^the last index build was killed, .* in its add step .*setup --rebuild"):
        ensure_ready(bot_config, progress=False)
    start = musrec("--config", str(config), "setup", "--from", str(source), "--no-progress")
    assert start.returncode == 1
    assert start.stderr.startswith("musrec: error: the last index build was killed, most likely for lack of memory,")
    assert "in its add step" in start.stderr and start.stderr.strip().endswith("`musrec setup --rebuild` tries again")
    doctor = musrec("--config", str(config), "doctor", "--quick")
    assert any(
        line.startswith("problem  memory      the last index build was killed") for line in doctor.stdout.splitlines()
    )

    rebuilt = musrec("--config", str(config), "setup", "--from", str(source), "--no-progress", "--rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "index: built (100 segments" in rebuilt.stdout and not debris(index)


def test_a_build_killed_by_the_out_of_memory_killer_is_named_so(tmp_path: Path, features: Path, cgroup: Any) -> None:
    group = cgroup(needed(SMALL, "ivf"))
    out = tmp_path / "idx"
    build = ("index", "build", str(features), "--out", str(out), "--backend", "ivf", "--no-progress")
    proc = musrec(*build, group=group, wait=False, oom_first=True)
    assert isinstance(proc, subprocess.Popen)
    while proc.poll() is None and not any((d / STATE_FILE).is_file() for d in debris(out)):
        time.sleep(0.01)
    # Something else in the same cgroup takes the memory; the kernel kills the build first (oom_score_adj).
    hog = subprocess.Popen(
        [sys.executable, "-c", _HOG], preexec_fn=group.preexec, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.wait()
    hog.kill()
    hog.wait()
    assert proc.returncode == -signal.SIGKILL and group.oom_kills() >= 1
    again = musrec(*build, group=group)
    assert again.returncode == 1
    assert "the last index build was killed for lack of memory in its " in again.stderr


# Allocates and touches memory until it is killed too.
_HOG = """
blocks = []
while True:
    blocks.append(bytearray(16 << 20))
"""


# ---- the IVF file ---------------------------------------------------------------------------------------------


def test_the_ivf_lists_written_as_they_fill_are_the_file_faiss_writes(tmp_path: Path) -> None:
    import faiss

    from musrec.index.ivf_file import IvfFileWriter

    rng = np.random.default_rng(0)
    n, dim, lists = 6000, 32, 16
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    writer = IvfFileWriter(dim, lists, count=n, seed=1, niter=5)
    writer.train(x[:2000].copy())
    for lo in range(0, n, 700):  # chunks that do not divide the count
        writer.assign(lo, x[lo : lo + 700])
    writer.write(tmp_path / "mine.faiss", ((lo, x[lo : lo + 700].copy()) for lo in range(0, n, 700)))

    # faiss's own way with the same trained parts: every code in memory, added in id order, then written.
    ref = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dim), dim, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    ref.quantizer.add(writer.centroids.copy())
    ref.sq = writer.index.sq
    ref.is_trained = True
    ref.add_with_ids(x, np.arange(n, dtype=np.int64))
    faiss.write_index(ref, str(tmp_path / "faiss.faiss"))
    assert (tmp_path / "mine.faiss").read_bytes() == (tmp_path / "faiss.faiss").read_bytes()
