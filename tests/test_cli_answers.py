"""Issue 26: what `musrec recommend` and `musrec embed` answer, as a user meets it, on both index structures.

Segment starts in every time form, the starts a video has when the one asked for has no segment, labels suggested
despite misspellings, a reader that goes away (`| head`), errors that name the flag, the file and the limit typed,
links without their scheme, blends ranked by their score, and the window a file was searched with.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from audio_fixtures import tone
from audioset_fixtures import make_segments
from vggish_fixtures import music_like, shared_embedder, shared_vggish_files

from musrec.audio.decode import decode
from musrec.audio.wav import to_wav_bytes
from musrec.audioset.labels import default_labels
from musrec.audioset.records import Segment
from musrec.audioset.representation import fit_rows
from musrec.cli import EXIT_BROKEN_PIPE, main
from musrec.index.build import BuildOptions, build_index
from musrec.links.parse import is_link

RATE = 16000
VIDEO = "twostarts01"  # indexed at 0:30 and 0:40 only
EXE = Path(sys.executable).parent / "musrec"


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp(f"answers-{request.param}")
    embedder = shared_embedder(tmp_path_factory)
    quiet = 0.01 * music_like(30.0, seed=1)
    quiet[12 * RATE : 22 * RATE] = music_like(10.0, seed=2)  # the loudest 10 s: 0:12 to 0:22
    clip = root / "song.wav"
    clip.write_bytes(to_wav_bytes(quiet))
    segments: list[Segment] = make_segments(600, split="eval", seed=3)
    rows = fit_rows(embedder.embed(decode(clip).samples[12 * RATE : 22 * RATE]))
    segments += [Segment(VIDEO, start, start + 10.0, (137,), "eval", rows) for start in (30.0, 40.0)]
    options = BuildOptions(backend=request.param, trees=10, recall_queries=60, target_recall=0.9)
    build_index(segments, root / "index", labels=default_labels(), options=options)
    files = shared_vggish_files(tmp_path_factory)
    config = root / "config.toml"
    config.write_text(
        f'[index]\npath = "{root / "index"}"\n'
        f'[embedder]\ncheckpoint = "{files.checkpoint}"\npca_params = "{files.pca_column}"\n'
        '[youtube]\nallowed_hosts = ["media.example"]\n'
    )
    return {"config": config, "clip": clip, "root": root}


def cli(world: dict[str, Any], argv: Sequence[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--config", str(world["config"]), *argv])
    return code, out.getvalue(), err.getvalue()


def refused(world: dict[str, Any], argv: Sequence[str]) -> str:
    """The one line of an error."""
    code, out, err = cli(world, argv)
    assert code == 1 and out == "" and err.count("\n") == 1, (code, out, err)
    return err.strip()


@pytest.mark.parametrize("start", ["0:40", "40", "40s", "0m40s", "00:00:40", "40.2"])
def test_a_segment_start_takes_the_forms_start_takes(world: dict[str, Any], start: str) -> None:
    code, out, err = cli(world, ["recommend", f"audioset:{VIDEO}@{start}", "--top-k", "3", "--json"])
    assert code == 0, err
    query = json.loads(out)["query"]
    assert (query["video_id"], query["start_s"], query["end_s"]) == (VIDEO, 40.0, 50.0)


def test_a_start_with_no_segment_says_which_starts_there_are(world: dict[str, Any]) -> None:
    assert refused(world, ["recommend", f"audioset:{VIDEO}@595"]) == (
        f"musrec: error: no indexed segment of video {VIDEO} at 595 s; its indexed starts: 30 (0:30), 40 (0:40) "
        f"(try audioset:{VIDEO}@30)"
    )
    assert refused(world, ["recommend", f"audioset:{VIDEO}@9:50"]).startswith(
        f"musrec: error: no indexed segment of video {VIDEO} at 590 s; its indexed starts: 30 (0:30)"
    )
    assert refused(world, ["recommend", "audioset:nosuchvideo@30"]) == (
        "musrec: error: no indexed segment of video nosuchvideo"
    )
    assert "START as 590, 9:50 or 9m50s" in refused(world, ["recommend", f"audioset:{VIDEO}@later"])


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("Rok music", "'Rock music'"), ("Speach", "'Speech'"), ("rock musik", "'Rock music'"), ("Jaz", "'Jazz'")],
)
def test_a_misspelt_label_gets_the_names_it_is_close_to(world: dict[str, Any], typed: str, meant: str) -> None:
    said = refused(world, ["recommend", f"audioset:{VIDEO}", "--label", typed])
    assert said.startswith(f"musrec: error: unknown AudioSet label {typed!r}: did you mean {meant}")
    said = refused(world, ["recommend", f"audioset:{VIDEO}", "--exclude-label", typed])
    assert f"did you mean {meant}" in said


def test_errors_name_the_flag_typed(world: dict[str, Any]) -> None:
    assert refused(world, ["recommend", f"audioset:{VIDEO}", "--top-k", "0"]) == (
        "musrec: error: --top-k must be at least 1, got 0"
    )
    assert refused(world, ["recommend", f"audioset:{VIDEO}", "--top-k", "101"]) == (
        "musrec: error: --top-k must be at most 100, got 101"
    )
    assert refused(world, ["index", "build", "x", "--out", str(world["root"] / "no"), "--trees", "0"]) == (
        "musrec: error: --trees must be at least 1, got 0"
    )


def test_audio_errors_name_the_file_and_the_limit(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = tmp_path / "notes.mp3"
    notes.write_text("just some text, not audio\n" * 50)
    for command in ("recommend", "embed"):
        assert refused(world, [command, str(notes)]) == f"musrec: error: {notes}: could not read this as audio"
    long = tone(tmp_path / "long.wav", seconds=30.0, rate=16000)
    monkeypatch.setenv("MUSREC_AUDIO_MAX_BYTES", "1000")
    assert refused(world, ["recommend", str(long)]) == (
        f"musrec: error: {long}: the file is larger than {1000 / 2**20:g} MiB (the limit is [audio] max_bytes in "
        "the configuration, or MUSREC_AUDIO_MAX_BYTES)"
    )
    monkeypatch.delenv("MUSREC_AUDIO_MAX_BYTES")
    monkeypatch.setenv("MUSREC_AUDIO_MAX_DURATION_S", "20")
    assert refused(world, ["embed", str(long)]).endswith(
        "choose a shorter part (the limit is [audio] max_duration_s in the configuration, or "
        "MUSREC_AUDIO_MAX_DURATION_S)"
    )


@pytest.mark.parametrize(
    "link", ["youtu.be/dQw4w9WgXcQ", "www.youtube.com/watch?v=dQw4w9WgXcQ", "m.youtube.com/shorts/dQw4w9WgXcQ"]
)
def test_a_link_without_its_scheme_is_a_link(world: dict[str, Any], link: str) -> None:
    """Taken as a link (here refused by the host policy, before any network), not as a missing file."""
    assert is_link(link) and is_link(f"<https://{link}>") and not is_link("youtube.com") and not is_link("a.mp3")
    host = link.partition("/")[0]
    assert refused(world, ["recommend", link]) == f"musrec: error: links to {host} are not supported"


def test_a_blend_is_sorted_by_its_score_and_says_what_the_score_is(world: dict[str, Any]) -> None:
    inputs = [f"audioset:{VIDEO}@30", str(world["clip"])]
    code, out, err = cli(world, ["recommend", *inputs, "--blend", "--top-k", "6", "--json"])
    assert code == 0, err
    data = json.loads(out)
    scores = [m["score"] for m in data["matches"]]
    assert len(scores) == 6 and scores == sorted(scores, reverse=True)
    assert all(m["score"] == min(m["similarities"]) for m in data["matches"])
    assert data["ranked_by"].startswith("closeness to the farthest sound")
    code, table, err = cli(world, ["recommend", *inputs, "--blend", "--top-k", "6"])
    assert code == 0, err
    assert "ranked by: closeness to the farthest sound: score is the lowest" in table
    rows = [line.split() for line in table.splitlines() if re.match(r"^\s*\d+\s+-?\d\.\d{3}\s", line)]
    column = [float(row[1]) for row in rows]
    assert len(column) == 6 and column == sorted(column, reverse=True)
    assert all(float(row[1]) == min(float(row[2]), float(row[3])) for row in rows)


def test_the_text_says_which_window_of_a_file_was_used(world: dict[str, Any]) -> None:
    clip = str(world["clip"])
    code, out, err = cli(world, ["recommend", clip, "--top-k", "2", "--json"])
    assert code == 0, err
    query = json.loads(out)["query"]
    assert query["window"] == "loudest" and 11.0 <= query["start_s"] <= 13.0  # the loud part: 0:12 to 0:22
    code, table, err = cli(world, ["recommend", clip, "--top-k", "2"])
    start, end = int(query["start_s"]), int(query["end_s"])
    assert table.splitlines()[0] == f"query: song.wav  window 0:{start:02d}-0:{end:02d} (the loudest)"
    code, table, err = cli(world, ["recommend", clip, "--top-k", "2", "--start", "0:05"])
    assert code == 0 and table.splitlines()[0] == "query: song.wav  window 0:05-0:15 (from --start)"


def test_a_reader_that_goes_away_ends_the_command_quietly(world: dict[str, Any]) -> None:
    """`musrec ... | head`: the pipe closes before all is written; no complaint, SIGPIPE's exit status."""
    env = {**os.environ, "MUSREC_CONFIG": str(world["config"])}
    for argv in (["recommend", f"audioset:{VIDEO}", "--json"], ["embed", str(world["clip"]), "--json"]):
        read, write = os.pipe()
        os.close(read)  # a reader that is already gone: every write fails
        try:
            run = subprocess.run([str(EXE), *argv], stdout=write, stderr=subprocess.PIPE, env=env, check=False)
        finally:
            os.close(write)
        assert (run.returncode, run.stderr) == (EXIT_BROKEN_PIPE, b""), run.stderr.decode()
        # A real pipe into head: whether or not the writer outlives head, nothing is said on stderr.
        shell = f"{EXE} {' '.join(argv)} | head -c 10"
        piped = subprocess.run(["sh", "-c", shell], capture_output=True, env=env, check=False)
        assert piped.returncode == 0 and len(piped.stdout) == 10 and piped.stderr == b"", piped.stderr.decode()
