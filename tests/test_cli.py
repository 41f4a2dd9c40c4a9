"""The `musrec` command as a user runs it: index build / info, recommend, and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from audioset_fixtures import make_segments, make_tarball, short_segment, write_layout

from musrec.audioset.records import write_records
from musrec.cli import main


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("features")
    write_layout(
        root,
        {
            "eval": [*make_segments(120, split="eval", seed=1), short_segment("shortseg001", 4)],
            "bal_train": make_segments(80, split="bal_train", seed=2, start=1000),
        },
    )
    return make_tarball(root, root / "features.tar.gz")


@pytest.fixture(scope="module")
def index_dir(features: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("idx") / "index"
    assert main(["index", "build", str(features), "--out", str(out), "--trees", "8", "--no-progress"]) == 0
    return out


def test_build_from_tarball_reports_what_it_read(
    features: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "idx"
    code = main(
        [
            "index",
            "build",
            str(features),
            "--out",
            str(out),
            "--splits",
            "eval",
            "--music-only",
            "--representation",
            "mean",
            "--trees",
            "5",
            "--target-recall",
            "0.9",
            "--no-progress",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "indexed 61 segments" in text  # 60 music of 120, plus the short Guitar segment, repeat-padded
    assert "1 short segments repeat-padded" in text and "60 dropped (not music)" in text
    assert "recall@10" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["representation"] == "mean" and manifest["filters"]["music_only"] is True
    assert manifest["filters"]["splits"] == ["eval"] and manifest["sources"] == [str(features)]
    assert manifest["recall_at_10"] >= 0.9


def test_info(index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", "info", str(index_dir)]) == 0
    text = capsys.readouterr().out
    assert "segments" in text and "201" in text and "flatten (1280 dimensions)" in text
    assert main(["index", "info", str(index_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["count"] == 201 and data["trees"] == 8 and data["path"] == str(index_dir)
    for key in (
        "format_version",
        "representation",
        "dimension",
        "search_k",
        "recall_at_10",
        "sources",
        "built_at",
    ):
        assert key in data


def test_recommend_json_and_table(index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", "info", str(index_dir), "--json"]) == 0
    capsys.readouterr()
    from musrec.index.search import Index

    seg = Index(index_dir).store.get(3)
    ref = f"audioset:{seg.video_id}@{seg.start_s:g}"
    assert main(["recommend", ref, "--index", str(index_dir), "--top-k", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["query"]["video_id"] == seg.video_id and len(data["matches"]) == 4
    for match in data["matches"]:
        assert match["video_id"] != seg.video_id or match["start_s"] != seg.start_s
        assert match["url"] == f"https://www.youtube.com/watch?v={match['video_id']}&t={int(match['start_s'])}s"
        assert isinstance(match["score"], float) and isinstance(match["labels"], list)
    assert main(["recommend", ref, "--index", str(index_dir), "--top-k", "3", "--music-only"]) == 0
    table = capsys.readouterr().out
    assert "query: " + ref in table and table.count("https://www.youtube.com/watch?v=") == 3


def test_config_file_and_environment_apply(
    index_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from musrec.index.search import Index

    seg = Index(index_dir).store.get(0)
    config = tmp_path / "c.toml"
    config.write_text(f'[index]\npath = "{index_dir}"\n[recommend]\ntop_k = 2\n')
    assert main(["--config", str(config), "recommend", f"audioset:{seg.video_id}", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["matches"]) == 2
    monkeypatch.setenv("MUSREC_RECOMMEND_TOP_K", "6")
    assert main(["--config", str(config), "recommend", f"audioset:{seg.video_id}", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["matches"]) == 6


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["recommend", "audioset:nosuchvideo1"], "no indexed segment of video nosuchvideo1"),
        (["recommend", "audioset:x", "--index", "/nonexistent/idx"], "no index at /nonexistent/idx"),
        (["recommend", "whatever"], "no such file: whatever (expected an audio file, a YouTube link"),
        (["index", "build", "/nonexistent/features", "--out", "/tmp/never"], "no such file or directory"),
        (["index", "info", "/nonexistent/idx"], "no index at"),
    ],
)
def test_errors_are_one_line(
    index_dir: Path,
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MUSREC_INDEX_PATH", str(index_dir))
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("musrec: error: ") and message in err and "\n" not in err


def test_build_errors(tmp_path: Path, index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "bogus.tfrecord"
    bogus.write_text("hello")
    assert main(["index", "build", str(bogus), "--out", str(tmp_path / "i")]) == 1
    assert "is not a TFRecord file" in capsys.readouterr().err
    assert main(["index", "build", str(bogus), "--out", str(index_dir)]) == 1
    assert "already exists: pass --force" in capsys.readouterr().err
    empty = tmp_path / "e" / "eval" / "x.tfrecord"
    write_records(empty, make_segments(3, split="eval"))
    assert main(["index", "build", str(empty), "--out", str(tmp_path / "j"), "--splits", "bal_train"]) == 1
    assert "no segments left" in capsys.readouterr().err
    assert main(["index", "build", str(empty), "--out", str(tmp_path / "k"), "--include-labels", "Nope"]) == 1
    assert "unknown AudioSet label 'Nope'" in capsys.readouterr().err


def test_usage_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["recommend"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "required: INPUT" in err and "\n" not in err
    with pytest.raises(SystemExit):
        main(["index", "build", "x", "--representation", "pca"])
    assert "invalid choice: 'pca'" in capsys.readouterr().err


def test_console_script_end_to_end(index_dir: Path, tmp_path: Path) -> None:
    """The installed `musrec` command: real process, exit codes, no traceback, no TensorFlow noise."""
    exe = Path(sys.executable).parent / "musrec"
    env = {**os.environ, "MUSREC_INDEX_PATH": str(index_dir)}
    ok = subprocess.run(
        [str(exe), "recommend", "audioset:nosuchvideo1"], capture_output=True, text=True, env=env, timeout=120
    )
    assert ok.returncode == 1 and ok.stderr.strip() == "musrec: error: no indexed segment of video nosuchvideo1"
    bogus = tmp_path / "b.tfrecord"
    bogus.write_text("nope")
    built = subprocess.run(
        [str(exe), "index", "build", str(bogus), "--out", str(tmp_path / "i")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert built.returncode == 1 and "Traceback" not in built.stderr
    assert built.stderr.strip().splitlines() == [f"musrec: error: {bogus} is not a TFRecord file"]


def test_console_script_builds_quietly(tmp_path: Path) -> None:
    shard = tmp_path / "eval" / "ab.tfrecord"
    write_records(shard, make_segments(30, split="eval"))
    exe = Path(sys.executable).parent / "musrec"
    run = subprocess.run(
        [str(exe), "index", "build", str(tmp_path / "eval"), "--out", str(tmp_path / "idx"), "--trees", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # no TensorFlow start-up noise, no progress bar when not on a terminal
    assert "indexed 30 segments" in run.stdout
