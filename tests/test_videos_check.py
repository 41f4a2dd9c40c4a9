"""Issue 21: ``musrec videos check`` checks every video of the index ahead of time (the Data API in batches of 50
with a key, else oEmbed at a polite pace), goes on where it stopped, and ``musrec doctor`` says how many videos
are checked and what share is gone. The stand-in YouTube of tests/test_videos.py, both index structures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from videos_fixtures import YouTubeStandIn, serving_youtube, videos_index, write_config

from musrec.cli import main
from musrec.index.search import Index
from musrec.videos.bulk import GIVE_UP_AFTER, SLOWEST_S, check_index
from musrec.videos.checker import VideoChecker
from musrec.videos.oembed import OEmbedSource
from musrec.videos.status import API_KEY_ENV
from musrec.videos.store import VideoStore

FAST = 1000.0  # requests a second: pacing itself is tried with a clock of the test's own


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def index_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return videos_index(tmp_path_factory, request.param)


@pytest.fixture
def youtube() -> Iterator[YouTubeStandIn]:
    with serving_youtube() as standin:
        yield standin


def video_ids(index_dir: Path) -> list[str]:
    index = Index(index_dir)
    try:
        return sorted({index.store.get(i).video_id for i in range(len(index))})
    finally:
        index.close()


def test_the_whole_index_is_checked_resumably(
    index_dir: Path,
    tmp_path: Path,
    youtube: YouTubeStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = video_ids(index_dir)
    youtube.answers.update(dict.fromkeys(ids[::8], 404))
    youtube.answers.update(dict.fromkeys(ids[1::16], 429))  # unknown: asked again by the next run
    config = write_config(tmp_path, index_dir, youtube, rate_per_s=FAST)
    assert main(["--config", str(config), "videos", "check", "--limit", "30"]) == 0
    assert "checked 30 videos" in capsys.readouterr().out
    assert sorted(youtube.requests) == ids[:30]
    assert main(["--config", str(config), "videos", "check"]) == 0
    out = capsys.readouterr().out
    unknown = set(ids[1::16])
    again = unknown & set(ids[:30])  # unknown in the first run: asked again; the others of the 30 were not
    assert f"checked {len(ids) - 30 + len(again)} videos: {len(ids[::8]) - 4} gone, {len(unknown)} unknown" in out
    assert youtube.requests == {v: 2 if v in again else 1 for v in ids}
    known, gone = len(ids) - len(unknown), len(ids[::8])
    assert f"{known:,} videos known of {len(ids):,} in the index, {100 * gone / known:.1f}% of them gone" in out
    assert main(["--config", str(config), "videos", "check"]) == 0
    assert f"checked {len(unknown)} videos" in capsys.readouterr().out  # only the unknown ones, again

    assert main(["--config", str(config), "doctor", "--quick"]) in (0, 1)
    doctor = capsys.readouterr().out
    line = next(x for x in doctor.splitlines() if x.split()[1:2] == ["videos"])
    assert line.startswith("ok") and f"{known:,} videos checked of {len(ids):,} in the index" in line
    assert f"{100 * gone / known:.1f}% of them gone" in line and "oEmbed" in line


def test_with_a_key_the_data_api_is_asked_fifty_at_a_time(
    index_dir: Path,
    tmp_path: Path,
    youtube: YouTubeStandIn,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = video_ids(index_dir)
    youtube.answers.update({ids[0]: 404, ids[70]: "private"})
    monkeypatch.setenv(API_KEY_ENV, "a-key")
    config = write_config(tmp_path, index_dir, youtube, rate_per_s=FAST)
    assert main(["--config", str(config), "videos", "check"]) == 0
    assert "checked 160 videos: 2 gone, 0 unknown" in capsys.readouterr().out
    assert [len(c) for c in youtube.calls] == [50, 50, 50, 10] and set(youtube.keys) == {"a-key"}
    assert main(["--config", str(config), "doctor", "--quick"]) in (0, 1)
    assert f"the YouTube Data API ({API_KEY_ENV} is set)" in capsys.readouterr().out


def test_refusals_of_the_command(
    index_dir: Path,
    tmp_path: Path,
    youtube: YouTubeStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, index_dir, youtube, check=False)
    assert main(["--config", str(config), "videos", "check"]) == 1
    assert "videos.check is off" in capsys.readouterr().err
    config = write_config(tmp_path, index_dir, youtube)
    assert main(["--config", str(config), "videos", "check", "--limit", "0"]) == 1
    assert "--limit must be at least 1" in capsys.readouterr().err
    config = write_config(tmp_path, tmp_path / "none", youtube)
    assert main(["--config", str(config), "videos", "check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("musrec: error:") and "index" in err and len(err.splitlines()) == 1
    assert not youtube.requests


class Clock:
    """Time that passes only when slept through."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_the_pace_is_polite_and_slows_when_youtube_stops_answering(
    index_dir: Path,
    tmp_path: Path,
    youtube: YouTubeStandIn,
) -> None:
    ids = video_ids(index_dir)
    youtube.answers.update(dict.fromkeys(ids[3:], 429))  # three answers, then "unusual traffic" for good
    index = Index(index_dir)
    clock = Clock()
    checker = VideoChecker(OEmbedSource(youtube.oembed_url, timeout_s=30), VideoStore(tmp_path / "v.sqlite3"))
    try:
        report = check_index(index.store, checker, rate_per_s=4.0, sleep=clock.sleep, clock=lambda: clock.now)
    finally:
        checker.close()
        index.close()
    assert report.stopped and report.checked == 3 + GIVE_UP_AFTER and report.unknown == GIVE_UP_AFTER
    # A quarter of a second between requests while YouTube answers, then twice as long after each refusal.
    assert clock.sleeps[1:4] == [0.25, 0.25, 0.25]
    assert clock.sleeps[4:8] == [0.5, 1.0, 2.0, 4.0] and max(clock.sleeps) == SLOWEST_S


def test_the_doctor_reads_the_store_without_changing_it(
    index_dir: Path, tmp_path: Path, youtube: YouTubeStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, index_dir, youtube)
    assert main(["--config", str(config), "doctor", "--quick"]) in (0, 1)
    assert "none checked yet" in capsys.readouterr().out and not (tmp_path / "data" / "videos.sqlite3").exists()
    damaged = tmp_path / "data" / "videos.sqlite3"
    damaged.parent.mkdir()
    damaged.write_bytes(b"not a database" * 100)
    assert main(["--config", str(config), "doctor", "--quick"]) in (0, 1)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.split()[1:2] == ["videos"])
    assert line.startswith("warn") and "cannot be read: it is started afresh at the next answer" in line
    assert damaged.read_bytes() == b"not a database" * 100
