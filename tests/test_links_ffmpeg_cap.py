"""The ffmpeg and the JavaScript runtime that yt-dlp starts for a fetch read media and scripts from strangers: ffmpeg
runs under the decoders' memory cap, and both run with the fetch's environment, which holds no secrets (issue 23,
point 6) and is the fetch's own, with nothing changed in ``os.environ`` (issue 22).

Stand-ins (shell scripts) record the limits and the environment they run under, then become the real program;
yt-dlp runs them as it runs ffmpeg, against the loopback media server.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from audio_fixtures import ffmpeg
from youtube_fixtures import MediaServer, dominant_hz, loopback_options, media_server, step_hz, stepped_tones

from musrec.audio.decode import ffmpeg_executable
from musrec.audio.runner import DECODER_MEMORY_BYTES
from musrec.links import fetch, ytdlp_env
from musrec.links.errors import FetchError, FetchFailure
from musrec.links.fetch import fetch_window
from musrec.links.ytdlp_env import fetch_environment

pytestmark = pytest.mark.timeout(120)

RATE = 16000
ADDRESS_SPACE = "Max address space"  # the row of /proc/<pid>/limits for RLIMIT_AS
RUN_TIMEOUT_S = 60
MIB = 1 << 20
TONES_S = 40
PROXY = "http://user:pass@127.0.0.1:9"  # a guard's URL; nothing connects to it here
SECRETS = {
    "MUSREC_DISCORD_TOKEN": "discord-token-value",
    "MUSREC_YOUTUBE_API_KEY": "api-key-value",
    "MUSREC_YOUTUBE_PROXY_PASSWORD": "proxy-password-value",
    "GITHUB_TOKEN": "github-token-value",
}


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
    """An ``ffmpeg`` that writes a line to ``log`` (its first argument and its address-space limits) and its whole
    environment to ``log``'s directory (``env-<pid>``), then becomes the real ffmpeg; an ``ffprobe`` beside it that
    records the same and fails."""
    directory.mkdir()
    record = (
        f'printf "%s\\t%s\\n" "$1" "$(grep {shlex.quote(ADDRESS_SPACE)} /proc/self/limits)"'
        f" >> {shlex.quote(str(log))}; env > {shlex.quote(str(log.parent))}/env-$$;"
        f' echo "$*" > {shlex.quote(str(log.parent))}/args-$$'
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


def environments(directory: Path) -> list[dict[str, str]]:
    """The environments the stand-ins dumped into ``directory`` (``env`` output; multi-line values are not used)."""
    return [
        dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        for path in sorted(directory.glob("env-*"))
    ]


def test_every_ffmpeg_of_a_fetch_runs_under_the_cap_without_secrets(
    server: MediaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23, point 6: the token and other secrets in this process's environment never reach the ffmpeg that
    yt-dlp starts, nor does ``no_proxy``; it gets the guard as its proxy, in its environment (a command line is
    readable by every local user). Issue 22: nothing in ``os.environ`` changes while a fetch runs."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("no_proxy", "localhost")
    log = tmp_path / "runs.tsv"
    standin = recording_standins(tmp_path / "bin", log)
    monkeypatch.setattr(fetch, "ffmpeg_executable", lambda: str(standin))  # what the fetch runs; decoding keeps its own
    before = dict(os.environ)
    got = fetch_window(server.media("tones.m4a"), start_s=15.0, options=loopback_options())
    assert (got.window.start_s, got.window.end_s) == (15.0, 25.0) and len(got.samples) == 10 * RATE
    assert dominant_hz(got.samples[:RATE]) == step_hz(1) and dominant_hz(got.samples[-RATE:]) == step_hz(2)
    runs = [line.split("\t") for line in log.read_text().splitlines()]
    assert "-y" in {first for first, _ in runs}  # the section's download, not only yt-dlp's version check
    cap = str(DECODER_MEMORY_BYTES)
    assert {limits(row) for _, row in runs} == {(cap, cap)}  # soft and hard, in every run
    seen = environments(tmp_path)
    assert len(seen) == len(runs) >= 2
    for environ in seen:
        assert not set(SECRETS) & set(environ) and not set(SECRETS.values()) & set(environ.values())
        assert "no_proxy" not in environ and "NO_PROXY" not in environ
        assert environ["http_proxy"].startswith("http://") and "@127.0.0.1:" in environ["http_proxy"]
        assert environ["PATH"] == before["PATH"] and environ["HOME"] == before["HOME"]
    arguments = [path.read_text() for path in tmp_path.glob("args-*")]
    assert len(arguments) == len(runs) and not [a for a in arguments if "@127.0.0.1" in a]  # the guard's password
    assert dict(os.environ) == before


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
    with fetch_environment(str(greedy), proxy=PROXY) as environment:
        launcher = environment.ffmpeg
        modest = subprocess.run([launcher, str(256 * MIB)], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        assert (modest.returncode, modest.stdout.strip()) == (0, str(256 * MIB)), modest.stderr
        greed = subprocess.run(
            [launcher, str(2 * DECODER_MEMORY_BYTES)], capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
    assert greed.returncode != 0 and "MemoryError" in greed.stderr
    assert not os.path.exists(launcher)


def test_the_js_runtime_gets_the_fetchs_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23, point 6: yt-dlp starts deno with a copy of this process's environment plus its proxy (as its deno
    provider does); the launcher it is given replaces that with the fetch's, without secrets and without no_proxy."""
    from yt_dlp.utils import Popen

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NO_PROXY", "localhost")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    deno = bin_dir / "deno"
    deno.write_text(f"#!/bin/sh\nenv > {shlex.quote(str(tmp_path))}/env-$$\necho deno 2.1.0\n")
    deno.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with fetch_environment(ffmpeg_executable(), proxy=PROXY, js_runtimes=("deno", "nothing-by-this-name")) as env:
        assert set(env.js_runtimes) == {"deno"}
        launcher = env.js_runtimes["deno"]["path"]
        assert os.path.dirname(launcher) == os.path.dirname(env.ffmpeg) != str(bin_dir)
        out, _, status = Popen.run(
            [launcher, "run", "-"], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "HTTP_PROXY": PROXY, "HTTPS_PROXY": PROXY},
        )  # fmt: skip
    assert (status, out.strip()) == (0, "deno 2.1.0")
    (environ,) = environments(tmp_path)
    assert not set(SECRETS) & set(environ) and not set(SECRETS.values()) & set(environ.values())
    assert "NO_PROXY" not in environ and environ["HTTPS_PROXY"] == environ["http_proxy"] == PROXY


def test_each_fetch_has_its_own_launchers_seen_by_its_own_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: fetches in worker threads at once each get their own directory; yt-dlp's check for ffmpeg (plain
    ``FFmpegPostProcessor()``, as it decides whether it can download a section) finds the launcher in the thread
    that fetches, and nothing changes for other threads or in ``os.environ``."""
    from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

    monkeypatch.setenv("no_proxy", "localhost")
    before = dict(os.environ)
    seen: dict[str, tuple[str, str | None]] = {}
    inside = threading.Barrier(2, timeout=RUN_TIMEOUT_S)

    def one_fetch(name: str) -> None:
        with fetch_environment(ffmpeg_executable(), proxy=PROXY) as environment:
            inside.wait()  # both at once
            checked = FFmpegPostProcessor()
            assert checked.available
            seen[name] = (environment.ffmpeg, checked.executable)
            inside.wait()

    threads = [threading.Thread(target=one_fetch, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RUN_TIMEOUT_S)
    assert len(seen) == 2 and all(launcher == found for launcher, found in seen.values())
    assert seen["a"][0] != seen["b"][0] and not any(os.path.exists(launcher) for launcher, _ in seen.values())
    assert FFmpegPostProcessor()._paths["ffmpeg"] == "ffmpeg"  # this thread: yt-dlp's default, as without musrec
    assert dict(os.environ) == before


def test_without_a_shell_programs_run_as_themselves_and_that_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ytdlp_env, "SHELL", str(tmp_path / "no-shell"))
    monkeypatch.setattr(ytdlp_env, "_warned", set())  # the warning is once per process
    monkeypatch.delenv("no_proxy", raising=False)
    with caplog.at_level(logging.WARNING, logger=ytdlp_env.__name__):
        for _ in range(2):
            with fetch_environment(ffmpeg_executable(), proxy=PROXY) as environment:
                assert environment.ffmpeg == ffmpeg_executable()
    assert [r.getMessage() for r in caplog.records] == [
        "programs started by yt-dlp run without a memory cap and with this process's environment"
        f" (no launcher: no {tmp_path / 'no-shell'})"
    ]
    monkeypatch.setenv("no_proxy", "localhost")  # ffmpeg would connect past the guard: no fetch at all
    with pytest.raises(FetchError) as caught, fetch_environment(ffmpeg_executable(), proxy=PROXY):
        pass
    assert caught.value.reason is FetchFailure.NO_FFMPEG
