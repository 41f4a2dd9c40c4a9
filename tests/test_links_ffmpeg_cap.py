"""The ffmpeg that yt-dlp starts for a fetch reads media from the link: it runs under the decoders' memory cap.

A stand-in ``ffmpeg`` (a shell script) records the limits it runs under, then becomes the real one; yt-dlp runs it
as it runs ffmpeg, against the loopback media server.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from audio_fixtures import ffmpeg
from youtube_fixtures import MediaServer, dominant_hz, loopback_options, media_server, step_hz, stepped_tones

from musrec.audio.decode import DECODER_MEMORY_BYTES, ffmpeg_executable
from musrec.links import fetch, ytdlp_env
from musrec.links.fetch import fetch_window
from musrec.links.ytdlp_env import ffmpeg_environment

pytestmark = pytest.mark.timeout(120)

RATE = 16000
ADDRESS_SPACE = "Max address space"  # the row of /proc/<pid>/limits for RLIMIT_AS
RUN_TIMEOUT_S = 60
MIB = 1 << 20
TONES_S = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaServer]:
    root = tmp_path_factory.mktemp("media")
    tones = stepped_tones(root / "tones.m4a", seconds=TONES_S, codec="m4a")
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=size=1280x720:rate=5:duration={TONES_S}", "-i", str(tones),
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "copy", str(root / "video-720p.mp4"),
    )  # fmt: skip
    with media_server(root) as served:
        yield served


def recording_standins(directory: Path, log: Path) -> Path:
    """An ``ffmpeg`` that writes a line to ``log`` (its first argument, the first entry of PATH and its address-space
    limits) and then becomes the real ffmpeg, and an ``ffprobe`` beside it that records the same and fails."""
    directory.mkdir()
    record = (
        f'printf "%s\\t%s\\t%s\\n" "$1" "${{PATH%%:*}}" "$(grep {shlex.quote(ADDRESS_SPACE)} /proc/self/limits)"'
        f" >> {shlex.quote(str(log))}"
    )
    for name, then in (("ffmpeg", f'exec {shlex.quote(ffmpeg_executable())} "$@"'), ("ffprobe", "exit 1")):
        script = directory / name
        script.write_text(f"#!/bin/sh\n{record}\n{then}\n")
        script.chmod(0o755)
    return directory / "ffmpeg"


def limits(row: str) -> tuple[str, str]:
    """The soft and hard limits of a /proc/<pid>/limits row."""
    soft, hard = row.removeprefix(ADDRESS_SPACE).split()[:2]
    return soft, hard


def test_every_ffmpeg_of_a_fetch_runs_under_the_cap(
    server: MediaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "runs.tsv"
    standin = recording_standins(tmp_path / "bin", log)
    monkeypatch.setattr(fetch, "ffmpeg_executable", lambda: str(standin))  # what the fetch runs; decoding keeps its own
    path = os.environ["PATH"]
    got = fetch_window(server.media("tones.m4a"), start_s=15.0, options=loopback_options())
    assert (got.window.start_s, got.window.end_s) == (15.0, 25.0) and len(got.samples) == 10 * RATE
    assert dominant_hz(got.samples[:RATE]) == step_hz(1) and dominant_hz(got.samples[-RATE:]) == step_hz(2)
    runs = [line.split("\t") for line in log.read_text().splitlines()]
    assert "-y" in {first for first, _, _ in runs}  # the section's download, not only yt-dlp's version check
    cap = str(DECODER_MEMORY_BYTES)
    assert {limits(row) for _, _, row in runs} == {(cap, cap)}  # soft and hard, in every run
    launcher_dirs = {Path(first_on_path) for _, first_on_path, _ in runs}
    assert len(launcher_dirs) == 1 and not launcher_dirs.pop().exists()
    assert os.environ["PATH"] == path


def test_a_video_is_fetched_under_the_cap(server: MediaServer) -> None:
    """Re-encoding 720p video at the cuts takes more than the cap: only the audio is kept, and the fetch works."""
    got = fetch_window(server.media("video-720p.mp4"), start_s=15.0, options=loopback_options())
    assert (got.window.start_s, got.window.end_s) == (15.0, 25.0) and len(got.samples) == 10 * RATE
    assert dominant_hz(got.samples[:RATE]) == step_hz(1) and dominant_hz(got.samples[-RATE:]) == step_hz(2)


def test_a_greedy_ffmpeg_gets_the_cap_not_the_memory(tmp_path: Path) -> None:
    """The launcher runs the program it names with its arguments; an allocation over the cap fails in there."""
    greedy = tmp_path / "it's a dir" / "greedy"  # a path the launcher must quote
    greedy.parent.mkdir()
    greedy.write_text(f"#!{sys.executable}\nimport sys\nprint(len(bytearray(int(sys.argv[1]))))\n")
    greedy.chmod(0o755)
    with ffmpeg_environment(str(greedy)) as launcher:
        modest = subprocess.run([launcher, str(256 * MIB)], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        assert (modest.returncode, modest.stdout.strip()) == (0, str(256 * MIB)), modest.stderr
        greed = subprocess.run(
            [launcher, str(2 * DECODER_MEMORY_BYTES)], capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
    assert greed.returncode != 0 and "MemoryError" in greed.stderr


def test_fetches_share_one_launcher_that_ytdlp_takes_for_ffmpeg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with an ffmpeg on PATH already, plain ``ffmpeg`` (yt-dlp's check) is the launcher while fetches run."""
    from yt_dlp import YoutubeDL
    from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "ffmpeg").symlink_to(ffmpeg_executable())
    monkeypatch.setenv("PATH", f"{on_path}{os.pathsep}{os.environ.get('PATH', '')}")
    path = os.environ["PATH"]
    with ffmpeg_environment(ffmpeg_executable()) as launcher:
        with ffmpeg_environment(ffmpeg_executable()) as again:
            assert again == launcher and shutil.which("ffmpeg") == launcher
        assert os.path.exists(launcher)  # another fetch still runs
        with YoutubeDL({"ffmpeg_location": launcher, "quiet": True}) as ydl:
            through_launcher = FFmpegPostProcessor(ydl)
            assert through_launcher.available and through_launcher.executable == launcher
            assert not through_launcher.probe_available  # no ffprobe of any kind beside it
        with YoutubeDL({"ffmpeg_location": ffmpeg_executable(), "quiet": True}) as ydl:
            assert through_launcher._version == FFmpegPostProcessor(ydl)._version  # the real one's version
    assert not os.path.exists(os.path.dirname(launcher)) and os.environ["PATH"] == path


def test_without_a_shell_ffmpeg_runs_as_before_and_that_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ytdlp_env, "SHELL", str(tmp_path / "no-shell"))
    environment = ytdlp_env._FfmpegEnvironment()  # a fresh one: the warning is once per process
    with caplog.at_level(logging.WARNING, logger=ytdlp_env.__name__):
        for _ in range(2):
            with environment(ffmpeg_executable()) as ffmpeg:
                assert ffmpeg == ffmpeg_executable()
                found = shutil.which("ffmpeg")
                assert found is not None and os.path.realpath(found) == os.path.realpath(ffmpeg_executable())
    assert [r.getMessage() for r in caplog.records] == [
        f"ffmpeg started by yt-dlp runs without a memory cap (no launcher: no {tmp_path / 'no-shell'})"
    ]
