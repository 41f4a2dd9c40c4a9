"""Damaged state (issue 14, point 7): a full disk during a build or a download, a truncated embeddings.u8, a manifest
from another version, a corrupted embedding cache. Each ends in one clear line (or the cache is rebuilt), never a
traceback, and the index that is served is never replaced by a broken one.

A full disk is real: a small tmpfs mounted in a mount namespace of the test's own (``unshare -m``, as root), so
nothing outside the test sees it. Where that is not possible the tests are skipped.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from audioset_fixtures import make_segments
from setup_fixtures import CHECKPOINT_PATH, PCA_PATH, FileServer, Served, run, write_config

from musrec.audioset.labels import default_labels
from musrec.audioset.records import write_records
from musrec.index.build import BuildOptions, build_index
from musrec.index.layout import EMBEDDINGS_FILE, MANIFEST

ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT_S = 600.0  # only stops a hang; a slow machine never fails on it


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d"],
        capture_output=True,
        timeout=60,
    )
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root to mount a tmpfs in its own namespace")


def on_small_disk(directory: Path, megabytes: int, commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Run ``commands`` one after another with ``directory`` a tmpfs of ``megabytes``, in a private mount namespace;
    each command's exit status and output are reported on their own line of JSON."""
    steps = "\n".join(
        f"out=$({shlex.join(c)} 2>&1); code=$?; "
        f'{shlex.quote(sys.executable)} -c "import json,sys; print(json.dumps([int(sys.argv[1]), sys.argv[2]]))" '
        '"$code" "$out"'
        for c in commands
    )
    script = f"set -u\nmount -t tmpfs -o size={megabytes}m tmpfs {shlex.quote(str(directory))} || exit 99\n{steps}\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["unshare", "-m", "bash", "-c", script], capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    return [subprocess.CompletedProcess(c, code, out, "") for c, (code, out) in zip(commands, results, strict=True)]


def musrec_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "musrec.cli", *args]


@needs_tmpfs
def test_a_full_disk_during_a_build_is_one_line_and_keeps_the_index(tmp_path: Path) -> None:
    small, medium, large = (tmp_path / f"{n}.tfrecord" for n in ("small", "medium", "large"))
    write_records(small, make_segments(300, split="eval", seed=1))
    write_records(medium, make_segments(5_000, split="eval", seed=2))
    write_records(large, make_segments(20_000, split="eval", seed=3))
    disk = tmp_path / "disk"
    disk.mkdir()
    idx = disk / "idx"
    check = (
        "import json, pathlib, sys; from musrec.index.search import Index; d = pathlib.Path(sys.argv[1]); "
        "print(json.dumps({'count': len(Index(d / 'idx')), 'names': sorted(p.name for p in d.iterdir())}))"
    )
    results = on_small_disk(
        disk,
        16,
        [
            musrec_cli("index", "build", str(small), "--out", str(idx), "--backend", "annoy", "--no-progress"),
            # Ingest fits, the Annoy forest (written through a memory map) would not: refused before it starts.
            musrec_cli("index", "build", str(medium), "--out", str(idx), "--force", "--no-progress"),
            # The raw rows alone do not fit: the write fails mid-way.
            musrec_cli("index", "build", str(large), "--out", str(idx), "--force", "--no-progress"),
            [sys.executable, "-c", check, str(disk)],
        ],
    )
    first, structure, ingest, after = results
    assert first.returncode == 0, first.stdout
    for failed in (structure, ingest):
        lines = failed.stdout.strip().splitlines()
        assert failed.returncode == 1 and len(lines) == 1, failed.stdout
        assert lines[0].startswith(f"musrec: error: not enough disk space in {disk} to build the index: ")
        assert lines[0].endswith("The current index, if any, was left as it was")
    assert "the structure needs about" in structure.stdout and "the structure needs" not in ingest.stdout
    assert json.loads(after.stdout) == {"count": 300, "names": ["idx"]}  # served index intact, no debris


# The build with its check of the free space taken out: as if another process filled the disk after it.
_BUILD_WITHOUT_ROOM_CHECK = """
import sys
import musrec.index.build as build
build._check_room = lambda *args, **kwargs: None
from musrec.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@needs_tmpfs
def test_a_disk_filled_while_faiss_writes_the_ivf_lists_is_one_line(tmp_path: Path) -> None:
    """faiss reports a failed write as a RuntimeError: on a full disk it is the same one line as any other write."""
    records = tmp_path / "medium.tfrecord"
    write_records(records, make_segments(5_000, split="eval", seed=2))
    disk = tmp_path / "disk"
    disk.mkdir()
    build = [sys.executable, "-c", _BUILD_WITHOUT_ROOM_CHECK, "index", "build", str(records)]
    (result,) = on_small_disk(disk, 10, [[*build, "--out", str(disk / "idx"), "--backend", "ivf", "--no-progress"]])
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stdout
    assert lines[0].startswith(f"musrec: error: not enough disk space in {disk} to build the index: ")
    assert "RuntimeError" not in result.stdout and "Traceback" not in result.stdout


@needs_tmpfs
def test_a_full_disk_during_a_download_is_one_line_and_keeps_what_arrived(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    blob = os.urandom(3 << 20)
    with FileServer() as server:
        # No Content-Length: nothing to check the free space against before the bytes arrive.
        server.files[CHECKPOINT_PATH] = Served(blob, no_length=True)
        server.files[PCA_PATH] = Served(b"pca")
        config = write_config(
            tmp_path / "musrec.toml", server, data_dir=data, checkpoint_sha512="", pca_sha512="", bundle=False
        )
        (result,) = on_small_disk(
            data, 1, [musrec_cli("--config", str(config), "setup", "--models-only", "--no-progress")]
        )
    lines = [line for line in result.stdout.splitlines() if not line.startswith("data directory:")]
    assert result.returncode == 1 and len(lines) == 1, result.stdout
    assert lines[0].startswith("musrec: error: the disk filled up while writing vggish_model.ckpt in ")
    assert lines[0].endswith("kept): free some space and run again to resume")
    assert "Traceback" not in result.stdout


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    out = tmp_path / "idx"
    build_index(make_segments(300, split="eval"), out, labels=default_labels(), options=BuildOptions(trees=5))
    return out


def _three_paths(index: Path, tmp_path: Path) -> list[str]:
    """The one line each user-level path gives for this index: recommend, doctor, and the bot's start."""
    segment = make_segments(300, split="eval")[3]
    config = tmp_path / "musrec.toml"
    config.write_text(f'[data]\ndir = "{tmp_path / "data"}"\n[index]\npath = "{index}"\n[embedder]\nkind = "max"\n')
    lines = []
    rec = run(["--config", str(config), "recommend", f"audioset:{segment.video_id}@{segment.start_s:g}"])
    assert rec.code == 1 and rec.out == "" and len(rec.err.splitlines()) == 1, rec.err
    lines.append(rec.err.strip())
    doctor = run(["--config", str(config), "doctor", "--quick", "--quiet"])
    index_line = [line for line in doctor.out.splitlines() if line.split()[1:2] == ["index"]]
    assert doctor.code == 1 and len(index_line) == 1, doctor.out
    lines.append(index_line[0])
    env = {**os.environ, "MUSREC_DISCORD_TOKEN": "not-used.because-start-up-stops-first", "MUSREC_CONFIG": str(config)}
    bot = subprocess.run(
        [sys.executable, "-m", "bot"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=CHILD_TIMEOUT_S
    )
    # The bot logs what its start-up checked (INFO lines), then the one line that stops it.
    said = [line for line in bot.stderr.splitlines() if line.startswith("musrec-bot:")]
    assert bot.returncode == 1 and len(said) == 1 and "Traceback" not in bot.stderr, bot.stderr
    lines.append(said[0])
    return lines


def test_a_truncated_embeddings_file_is_one_line_everywhere(index_dir: Path, tmp_path: Path) -> None:
    raw = index_dir / EMBEDDINGS_FILE
    with raw.open("r+b") as f:
        f.truncate(raw.stat().st_size - 1000)
    for line in _three_paths(index_dir, tmp_path):
        assert "embeddings.u8 is missing or has the wrong size" in line and "Traceback" not in line


def test_a_manifest_from_another_version_is_one_line_everywhere(index_dir: Path, tmp_path: Path) -> None:
    manifest = json.loads((index_dir / MANIFEST).read_text())
    manifest["format_version"] = 99
    (index_dir / MANIFEST).write_text(json.dumps(manifest))
    for line in _three_paths(index_dir, tmp_path):
        assert "index format 99 is not supported (expected 1): rebuild it" in line


def test_a_manifest_that_is_not_json_is_one_line(index_dir: Path, tmp_path: Path) -> None:
    (index_dir / MANIFEST).write_text('{"format_version": 1, "count": ')
    for line in _three_paths(index_dir, tmp_path):
        assert "manifest.json is unreadable" in line


def test_a_corrupted_embedding_cache_is_rebuilt_by_the_next_query(tmp_path: Path) -> None:
    """The cache is only an optimisation: a damaged file is set aside and a fresh one serves the next link."""
    from youtube_fixtures import LOOPBACK, ToneEmbedder, media_server, stepped_tones

    from musrec.config import load_config
    from musrec.pipeline import Musrec

    cache = tmp_path / "cache.sqlite3"
    cache.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    config = load_config(None, environ={})
    youtube = replace(
        config.youtube, cache_path=cache, allowed_hosts=(LOOPBACK,), allow_private_addresses=True, retries=0
    )
    media = tmp_path / "media"
    media.mkdir()
    stepped_tones(media / "tones.m4a", seconds=20, codec="m4a")
    with media_server(media) as server:
        musrec = Musrec(config=replace(config, youtube=youtube), embedder=ToneEmbedder())
        first = musrec.resolve(server.media("tones.m4a"), start_s=0.0)
        fetched = server.count("/media/")
        again = musrec.resolve(server.media("tones.m4a"), start_s=0.0)
        musrec.close()
    assert first.query.extra["cached"] is False and again.query.extra["cached"] is True
    assert server.count("/media/") == fetched  # the rebuilt cache answered the second time
