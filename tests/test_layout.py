"""The index directory's life: what a complete one holds, how a new one replaces a live one, and what a killed build
leaves (issue 12: an IVF index accepted everywhere, no empty moment, no debris kept, files readable by all)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from audioset_fixtures import make_segments

from musrec.audioset.labels import default_labels
from musrec.audioset.records import write_records
from musrec.errors import IndexFormatError
from musrec.index.build import BuildOptions, build_index
from musrec.index.layout import (
    ANNOY_FILE,
    IVF_FILE,
    MANIFEST,
    check,
    debris,
    problem,
    publish,
    remove_debris,
    staging,
)
from musrec.index.search import Index

STRUCTURES = ("annoy", "ivf")
# Bounds for waiting on a child process: generous, so a slow shared machine never fails the test; they only stop a
# hang from lasting forever.
CHILD_WAIT_S = 300.0


def build(out: Path, count: int, *, structure: str, seed: int = 0, force: bool = False) -> None:
    build_index(
        make_segments(count, split="eval", seed=seed),
        out,
        labels=default_labels(),
        options=BuildOptions(backend=structure, trees=5, recall_queries=30, target_recall=0.9),
        force=force,
    )


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_a_complete_index_of_either_structure_checks_out(tmp_path: Path, structure: str) -> None:
    out = tmp_path / "idx"
    build(out, 300, structure=structure)
    assert check(out).ann == structure and problem(out) is None
    own = {"annoy": ANNOY_FILE, "ivf": IVF_FILE}[structure]
    (out / own).rename(tmp_path / "moved")
    assert problem(out) == (
        f"the index at {out} has no {own} (run `musrec setup --rebuild`, or `musrec index build --force`)"
    )
    with pytest.raises(IndexFormatError, match=f"has no {own}"):
        Index(out)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_every_file_of_a_new_index_is_readable_by_all(tmp_path: Path, structure: str, umask_022: None) -> None:
    """Annoy writes its forest 0600: a container user could not read an index built on the host."""
    out = tmp_path / "idx"
    build(out, 300, structure=structure)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


@pytest.mark.parametrize("structure", STRUCTURES)
def test_a_running_reader_keeps_answering_while_its_index_is_rebuilt(tmp_path: Path, structure: str) -> None:
    out = tmp_path / "idx"
    build(out, 300, structure=structure, seed=1)
    live = Index(out)
    query = live.item_vector(5)
    before = live.search(query, 10)
    first = live.store.get(5)
    build(out, 400, structure=structure, seed=2, force=True)
    # The old files are gone from the directory but stay mapped and open: the reader answers exactly as before.
    after = live.search(query, 10)
    assert after[0].tolist() == before[0].tolist()
    assert live.store.get(5) == first and len(live) == 300
    live.close()
    fresh = Index(out)
    assert len(fresh) == 400
    fresh.close()
    assert debris(out) == []


def test_publishing_never_leaves_the_path_empty(tmp_path: Path) -> None:
    """A reader polling the path while new indexes are swapped in never finds it missing."""
    out = tmp_path / "idx"
    out.mkdir()
    (out / MANIFEST).write_text("0")
    missing = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal missing
        while not stop.is_set():
            if not os.path.exists(out / MANIFEST):
                missing += 1

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for i in range(300):
            with staging(out) as tmp:
                (tmp / MANIFEST).write_text(str(i + 1))
                publish(tmp, out)
    finally:
        stop.set()
        poller.join()
    assert missing == 0
    assert (out / MANIFEST).read_text() == "300" and debris(out) == []


def test_publish_refuses_to_replace_what_is_not_an_index(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "me.jpg").write_bytes(b"mine")
    with pytest.raises(IndexFormatError, match="is not a musrec index: refusing to replace it"):
        build(out, 100, structure="annoy", force=True)
    assert (out / "me.jpg").read_bytes() == b"mine" and debris(out) == []


def test_debris_of_a_running_build_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    with staging(out) as running:
        (running / "embeddings.u8").write_bytes(b"\0" * 100)
        assert remove_debris(out) == [] and running.is_dir()  # its lock is held
    assert not running.exists() and list(tmp_path.iterdir()) == []


def test_kill_9_during_a_build_leaves_debris_that_the_next_build_removes(tmp_path: Path) -> None:
    """A real `musrec index build` killed with SIGKILL: the published index is untouched, and the next build (or
    `musrec setup`) removes what the dead one left, however large."""
    source = tmp_path / "eval.tfrecord"
    write_records(source, make_segments(20_000, split="eval", seed=3))
    out = tmp_path / "idx"
    build(out, 300, structure="annoy")
    published = (out / MANIFEST).read_text()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    cmd = [sys.executable, "-m", "musrec.cli", "index", "build", str(source), "--out", str(out)]
    child = subprocess.Popen([*cmd, "--force", "--no-progress"], env=env, stderr=subprocess.PIPE)
    staged = tmp_path / f".idx.building-{child.pid}"
    deadline = time.monotonic() + CHILD_WAIT_S
    while not ((staged / "embeddings.u8").is_file() and (staged / "embeddings.u8").stat().st_size > 0):
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        assert time.monotonic() < deadline, "the build never started writing"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(CHILD_WAIT_S)
    assert child.stderr is not None
    child.stderr.close()
    assert debris(out) == [staged]  # killed mid-write: nothing could clean up
    assert (out / MANIFEST).read_text() == published and Index(out).manifest.count == 300

    done = subprocess.run([*cmd, "--force", "--no-progress"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert debris(out) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["eval.tfrecord", "idx"]
    assert Index(out).manifest.count == 20_000


def test_debris_written_before_lock_files_is_judged_by_its_process(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    mine = tmp_path / f".idx.building-{os.getppid()}"  # a live process: its build may still be running
    gone = tmp_path / ".idx.old-999999999"  # no such process
    for path in (mine, gone):
        path.mkdir()
        np.save(path / "x.npy", np.zeros(3))
    assert remove_debris(out) == [gone]
    assert mine.is_dir() and not gone.exists()
