"""``musrec library`` and ``musrec recommend --library`` as a user runs them, on the real Milvus Lite (issue 25):
recordings made here, a track found by an excerpt of itself first, idempotent adds, removal, one line for a store
another process holds, and a ``library add`` killed with SIGKILL that the next add finishes with every track once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from audioset_fixtures import make_segments
from conftest import child_environment
from library_fixtures import Recording, excerpt, melody, recording, write_config
from max_fixtures import LoopThread, serving
from vggish_fixtures import shared_vggish_files
from youtube_fixtures import media_server

from musrec.audio.decode import decode
from musrec.audio.window import Window
from musrec.audioset.labels import default_labels
from musrec.audioset.records import Segment
from musrec.audioset.representation import fit_rows
from musrec.cli import main
from musrec.embedding.server import make_app
from musrec.index.build import BuildOptions, build_index


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> list[Recording]:
    root = tmp_path_factory.mktemp("music")
    (root / "cover.jpg").write_bytes(b"\xff\xd8\xff" + bytes(64))
    (root / "damaged.mp3").write_bytes(b"ID3" + bytes(4000))
    return [
        recording(root, "one.mp3", seed=21, seconds=34, title="First Light", artist="The Ones", album="Dawn"),
        recording(root / "disc 2", "two.flac", seed=22, seconds=28, title="Second Wind", artist="The Twos"),
        recording(root / "disc 2", "three.m4a", seed=23, seconds=23, title="Third Eye", artist="The Threes"),
        recording(root, "four.ogg", seed=24, seconds=31),
    ]


@pytest.fixture
def config(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, local_embedder: Any) -> Path:
    files = shared_vggish_files(tmp_path_factory)
    return write_config(tmp_path / "config.toml", data_dir=tmp_path / "data", checkpoint=files.checkpoint,
                        pca_params=files.pca_column)  # fmt: skip


def run(config: Path, *argv: str) -> int:
    return main(["--config", str(config), *argv])


def test_add_list_search_remove_end_to_end(
    config: Path, music: list[Recording], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = music[0].path.parent
    assert run(config, "library", "add", str(folder), "--library", "home", "--no-progress") == 0
    out, err = capsys.readouterr()
    assert "added 4 tracks (13 segments) to library home" in out and "tracks/min" in out
    assert "1 files skipped (not audio)" in out  # the cover, by its name
    assert "index FLAT: recall@10 1.000 against exact search (13 stored segments as queries)" in out
    assert err.strip().splitlines() == [f"failed: {folder / 'damaged.mp3'}: could not read this as audio"]

    # An excerpt of the second track, encoded on its own, finds that track first, at the segment it came from.
    clip = excerpt(music[1], tmp_path / "clip.wav", start_s=10)
    assert run(config, "recommend", str(clip), "--library", "home", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    first = result["matches"][0]
    assert (first["title"], first["artist"], first["file"]) == ("Second Wind", "The Twos", str(music[1].path))
    assert (first["start_s"], first["end_s"]) == (10.0, 20.0)
    assert len({m["track_id"] for m in result["matches"]}) == len(result["matches"]) == 4  # one per track
    assert run(config, "recommend", str(clip), "--library", "home") == 0
    table = capsys.readouterr().out
    assert "Second Wind - The Twos" in table and "0:10-0:20" in table

    # The same files again add nothing; a renamed copy neither.
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "renamed.mp3").write_bytes(music[0].path.read_bytes())
    assert run(config, "library", "add", str(folder), str(tmp_path / "copy"), "--library", "home", "--no-progress") == 0
    assert "added 0 tracks" in capsys.readouterr().out
    assert run(config, "library", "list", "--library", "home", "--json") == 0
    tracks = {t["title"]: t for t in json.loads(capsys.readouterr().out)["tracks"]}
    assert sorted(tracks) == ["First Light", "Second Wind", "Third Eye", "four"]
    assert tracks["First Light"]["album"] == "Dawn" and tracks["First Light"]["segments"] == 4

    # A track of the library as the query: the others, never itself.
    own = tracks["Second Wind"]["track_id"]
    assert run(config, "recommend", f"library:{own[:8]}", "--library", "home", "--json") == 0
    assert own not in {m["track_id"] for m in json.loads(capsys.readouterr().out)["matches"]}

    assert run(config, "library", "remove", own[:6], "--library", "home") == 0
    assert "removed" in capsys.readouterr().out
    assert run(config, "library", "list", "--library", "home") == 0
    listing = capsys.readouterr().out
    assert "Second Wind" not in listing and "3 tracks in library home" in listing
    assert run(config, "library", "list") == 0
    assert capsys.readouterr().out.split() == ["home", "3", "tracks"]
    assert run(config, "library", "remove", own, "--library", "home") == 1
    assert "names no track in library home" in capsys.readouterr().err


def test_libraries_are_apart(config: Path, music: list[Recording], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config, "library", "add", str(music[0].path), "--library", "a", "--no-progress") == 0
    assert run(config, "library", "add", str(music[1].path), "--library", "b", "--no-progress") == 0
    capsys.readouterr()
    assert run(config, "recommend", str(music[0].path), "--library", "b", "--json") == 0
    assert [m["title"] for m in json.loads(capsys.readouterr().out)["matches"]] == ["Second Wind"]
    assert run(config, "recommend", str(music[0].path), "--library", "empty") == 0
    assert "no tracks in this library yet" in capsys.readouterr().out


def test_user_errors_are_one_line(config: Path, music: list[Recording], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config, "library", "add", str(music[0].path), "--library", "bad name!") == 1
    assert "a library name is letters, digits" in capsys.readouterr().err
    assert run(config, "recommend", "library:abcdef", "--library", "none") == 1
    assert "names no track in library none" in capsys.readouterr().err
    assert run(config, "recommend", str(music[0].path), str(music[1].path), "--blend", "--library", "x") == 1
    assert "--library searches with one INPUT" in capsys.readouterr().err


def test_a_library_another_process_holds_is_one_line(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, "library", "list") == 0  # creates the store, then releases it
    capsys.readouterr()
    uri = tmp_path / "data" / "library.db"
    hold = f"from pymilvus import MilvusClient\nMilvusClient({str(uri)!r})\nprint('held', flush=True)\ninput()"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert run(config, "library", "list") == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is in use by another process" in err and "then try again" in err
    finally:
        holder.communicate("\n", timeout=60)


def test_killed_add_is_finished_by_the_next_with_every_track_once(
    config: Path, tmp_path: Path, isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A `library add` killed with SIGKILL once it has stored some tracks and while it works on others, then the same
    # add again: every track exactly once, each with all its segments, and nothing else.
    folder = tmp_path / "many"
    music = [recording(folder, f"t{i}.flac", seed=40 + i, seconds=30, title=f"T{i}") for i in range(8)]
    argv = [
        sys.executable,
        "-m",
        "musrec.cli",
        "--config",
        str(config),
        "-v",
        "library",
        "add",
        str(folder),
        "--no-progress",
    ]
    child = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=child_environment(isolated_home))
    stored, said = 0, []
    assert child.stderr is not None
    for line in child.stderr:
        said.append(line)
        stored += "stored track" in line
        if stored == 3:
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait(timeout=120)
    assert child.returncode == -signal.SIGKILL, "the add ended before it could be killed: " + "".join(said[-5:])

    assert run(config, "library", "add", str(folder), "--no-progress", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] + report["present"] == 8 and report["present"] >= 3 and report["tracks"] == 8
    assert run(config, "library", "list", "--library", "default", "--json") == 0
    tracks = json.loads(capsys.readouterr().out)["tracks"]
    assert sorted(t["title"] for t in tracks) == [f"T{i}" for i in range(8)]
    from musrec.library.store import MilvusStore

    store = MilvusStore(str(tmp_path / "data" / "library.db"))
    try:
        for t in tracks:
            assert store.segment_count("default", t["track_id"]) == t["segments"] == 3
        assert store.segment_count("default") == 3 * len(music)
    finally:
        store.close()


def test_three_hours_of_audio_are_stored_up_to_max_track_s(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, local_embedder: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 3-hour recording (an 8-kHz 8-bit WAV: 86 MB) is neither refused nor read whole: its first ``[library]
    max_track_s`` is stored, and the summary says so, in words and in JSON; a recording shorter than that is whole."""
    files = shared_vggish_files(tmp_path_factory)
    config = write_config(tmp_path / "config.toml", data_dir=tmp_path / "data", checkpoint=files.checkpoint,
                          pca_params=files.pca_column, extra="\n[library]\nmax_track_s = 25\n")  # fmt: skip
    folder = tmp_path / "mixes"
    folder.mkdir()
    rate, hours = 8000, 3
    minute = np.round(128 + 100 * melody(9, 60.0, rate=rate)).astype(np.uint8)
    with wave.open(str(folder / "three hours.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(rate)
        w.writeframes(minute.tobytes() * (60 * hours))
    recording(folder, "short.flac", seed=10, seconds=20, title="Short")
    assert run(config, "library", "add", str(folder), "--no-progress") == 0
    out = capsys.readouterr().out
    assert "added 2 tracks (5 segments)" in out  # 3 of the first 25 s (10 + 10 + 5), 2 of the 20-s track
    assert "1 longer than 0:25: their first 0:25 stored ([library] max_track_s)" in out
    assert run(config, "library", "list", "--library", "default", "--json") == 0
    durations = {t["title"]: t["duration_s"] for t in json.loads(capsys.readouterr().out)["tracks"]}
    assert durations["three hours"] == 25.0  # cut exactly there
    assert durations["Short"] == pytest.approx(20.0, abs=0.01)  # whole (the encoder's edges may trim a few samples)
    (folder / "again.flac").write_bytes((folder / "short.flac").read_bytes() + b"\0")  # other bytes, a new track
    recording(folder, "long.ogg", seed=11, seconds=40)
    assert run(config, "library", "add", str(folder), "--no-progress", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["added"], report["present"], report["cut"]) == (2, 2, 1)


def test_an_audioset_segment_and_a_link_search_a_library(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    music: list[Recording],
    local_embedder: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``recommend --library`` takes every input ``recommend`` takes: beside a file and a library track (above), an
    AudioSet segment (``audioset:ID``: its stored rows, nothing decoded) and a link (served on loopback), each here
    10 s of a library track, which answers first at that segment."""
    part = excerpt(music[0], tmp_path / "part.wav", start_s=20)  # 0:20-0:30 of "First Light"
    rows = fit_rows(local_embedder.embed(decode(part).samples))
    segments = [*make_segments(60, split="eval"), Segment("firstlight1", 0.0, 10.0, (137,), "eval", rows)]
    build_index(segments, tmp_path / "index", labels=default_labels(), options=BuildOptions(trees=4, backend="annoy"))
    files = shared_vggish_files(tmp_path_factory)
    extra = (f'\n[index]\npath = "{tmp_path / "index"}"\n'
             '[youtube]\nallowed_hosts = ["127.0.0.1"]\nallow_private_addresses = true\n')  # fmt: skip
    config = write_config(tmp_path / "config.toml", data_dir=tmp_path / "data", checkpoint=files.checkpoint,
                          pca_params=files.pca_column, extra=extra)  # fmt: skip
    assert run(config, "library", "add", str(music[0].path), str(music[1].path), "--no-progress") == 0
    capsys.readouterr()
    with media_server(tmp_path) as media:
        for query in ("audioset:firstlight1", media.media("part.wav")):
            assert run(config, "recommend", query, "--library", "default", "--json") == 0, query
            first = json.loads(capsys.readouterr().out)["matches"][0]
            assert (first["title"], first["start_s"], first["end_s"]) == ("First Light", 20.0, 30.0), query
        assert media.count("/media/part.wav") > 0


def test_a_damaged_store_is_one_line_that_keeps_it(
    config: Path, music: list[Recording], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Milvus Lite store whose files a failed disk or copy damaged (a data file or an index file cut short, a
    schema that is not JSON) is one line that says so and how to go on, without Milvus Lite's traceback; the store is
    left as it is; moved away, as the line says, the next add makes a new one."""
    assert run(config, "library", "add", str(music[0].path), "--no-progress") == 0
    store = tmp_path / "data" / "library.db"
    segments = store / "collections" / "musrec_segments"
    damages = {
        "data": lambda root: _cut_short(next((root / segments.relative_to(store)).rglob("*.parquet")), 1000),
        "index": lambda root: _cut_short(next((root / segments.relative_to(store)).rglob("*.idx")), 100),
        "schema": lambda root: (root / "collections" / "musrec_tracks" / "schema.json").write_text("garbage"),
    }
    for name, damage in damages.items():
        copy = tmp_path / f"damaged-{name}.db"
        shutil.copytree(store, copy)
        damage(copy)
        before = sorted((p.relative_to(copy), p.stat().st_size) for p in copy.rglob("*") if p.is_file())
        damaged = tmp_path / f"{name}.toml"
        damaged.write_text(config.read_text() + f'\n[library]\nuri = "{copy}"\n')
        capsys.readouterr()
        assert run(damaged, "library", "list", "--library", "default") == 1, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert f"the library {copy} is damaged (" in err and "keep a copy of it, move it away" in err, err
        assert str(copy / "collections") not in err  # its files are named within the store
        after = sorted((p.relative_to(copy), p.stat().st_size) for p in copy.rglob("*") if p.is_file())
        assert [entry for entry in after if entry[0].name != "LOCK"] == [e for e in before if e[0].name != "LOCK"]
    copy.rename(tmp_path / "kept.db")
    assert run(damaged, "library", "add", str(music[0].path), "--no-progress") == 0
    assert "added 1 tracks" in capsys.readouterr().out


def _cut_short(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def test_check_finds_tracks_a_damaged_store_lost_and_repair_lets_them_be_added_again(
    config: Path, music: list[Recording], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data file holding one track's segments lost (a failed disk or copy), the store still opens and lists
    the track, which no search can find. ``library check`` names it (exit 1) and how to go on; ``--repair`` removes
    it, leaving the others; its file added again, it is whole and found. Segments of an unfinished add are counted,
    never removed."""
    for recorded in music[:3]:  # one add each: each track's segments in a data file of their own
        assert run(config, "library", "add", str(recorded.path), "--no-progress") == 0
    assert run(config, "library", "check") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "library default: 3 tracks, each with all its segments"
    store = tmp_path / "data" / "library.db"
    first = min((store / "collections" / "musrec_segments").rglob("*.parquet"), key=lambda p: p.name)
    first.unlink()

    assert run(config, "library", "check", "--json") == 1
    (report,) = json.loads(capsys.readouterr().out)["libraries"]
    assert [(d["title"], d["stored_segments"], d["segments"]) for d in report["damaged"]] == [("First Light", 0, 4)]
    assert run(config, "library", "check") == 1
    out = capsys.readouterr().out
    assert "library default: 3 tracks, 1 of them missing segments (the store lost them):" in out
    assert "0 of 4 segments: " in out and "musrec library check --library default --repair" in out

    assert run(config, "library", "check", "--repair") == 0
    assert "removed those 1 tracks: add their files again" in capsys.readouterr().out
    assert run(config, "library", "add", str(music[0].path), "--no-progress") == 0
    assert "added 1 tracks (4 segments)" in capsys.readouterr().out
    clip = excerpt(music[0], tmp_path / "clip.wav", start_s=10)
    assert run(config, "recommend", str(clip), "--library", "default", "--json") == 0
    assert json.loads(capsys.readouterr().out)["matches"][0]["title"] == "First Light"

    from musrec.library.segments import Segments
    from musrec.library.store import MilvusStore

    leftover = MilvusStore(str(store))
    try:
        leftover.write_segments("default", "f" * 16, Segments((Window(0.0, 10.0),), np.ones((1, 1280), np.float32)))
    finally:
        leftover.close()
    assert run(config, "library", "check", "--repair") == 0
    assert capsys.readouterr().out.strip() == (
        "library default: 3 tracks, each with all its segments; 1 segments of 1 unfinished adds (never found; adding "
        "their files again replaces them)"
    )


def test_max_servers_embed_a_library_several_at_once(
    tmp_path: Path,
    music: list[Recording],
    local_embedder: Any,
    server_loop: LoopThread,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``[embedder] kind = "max"`` with two MAX-compatible servers on loopback (``musrec serve``'s app around the
    same VGGish): ``library add`` sends every segment to them, both at work; an excerpt, embedded by them too, finds
    its track first; servers that stop answering end the add in one line, and the tracks stored before are whole."""
    with serving(server_loop, make_app(local_embedder)) as one, serving(server_loop, make_app(local_embedder)) as two:
        config = tmp_path / "config.toml"
        config.write_text(f'[data]\ndir = "{tmp_path / "data"}"\n\n[embedder]\nkind = "max"\n\n[max]\n'
                          f'urls = ["{one.url}", "{two.url}"]\ntimeout_s = 10\nretries = 0\n')  # fmt: skip
        assert run(config, "library", "add", str(music[0].path), str(music[1].path), "--no-progress") == 0
        assert "added 2 tracks (7 segments)" in capsys.readouterr().out  # 34 s and 28 s: 4 and 3 segments
        assert one.count("/model/predict") > 0 and two.count("/model/predict") > 0
        assert one.count("/model/predict") + two.count("/model/predict") >= 7
        clip = excerpt(music[1], tmp_path / "clip.wav", start_s=10)
        assert run(config, "recommend", str(clip), "--library", "default", "--json") == 0
        first = json.loads(capsys.readouterr().out)["matches"][0]
        assert (first["title"], first["start_s"]) == ("Second Wind", 10.0)
        # A command of its own: the MAX client's sessions are closed with the library (else aiohttp complains of
        # an unclosed session as the process ends).
        argv = [sys.executable, "-m", "musrec.cli", "--config", str(config), "library", "add", str(music[2].path),
                "--no-progress"]  # fmt: skip
        added = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=child_environment(tmp_path))
        assert added.returncode == 0 and "added 1 tracks" in added.stdout, added.stderr
        assert "nclosed" not in added.stderr, added.stderr
    assert run(config, "library", "add", str(music[3].path), "--no-progress") == 1  # both servers are gone now
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "The embedding service is unavailable right now" in err, err
    assert "(check the MAX servers of [max] urls: `musrec doctor` checks them)" in err
    assert "127.0.0.1" not in err  # no address in what a user is shown
    assert run(config, "library", "check") == 0
    assert "library default: 3 tracks, each with all its segments" in capsys.readouterr().out
