"""Issue 21, the other ways an answer is made: the command line as a process of its own (it exits without waiting
for checks still running), the Data API when a key is set, and blends. The stand-in YouTube of
tests/test_videos.py, both index structures."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import child_environment
from videos_fixtures import YouTubeStandIn, eventually, serving_youtube, unchecked_order, videos_index, write_config

from musrec.config import load_config
from musrec.index.search import Index
from musrec.pipeline import Musrec
from musrec.recommend.live import margin
from musrec.videos.status import API_KEY_ENV


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def index_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return videos_index(tmp_path_factory, request.param)


@pytest.fixture
def youtube() -> Iterator[YouTubeStandIn]:
    with serving_youtube() as standin:
        yield standin


def test_the_command_line_exits_without_waiting_for_checks_still_running(
    index_dir: Path, tmp_path: Path, youtube: YouTubeStandIn
) -> None:
    ref = f"audioset:{Index(index_dir).store.get(21).video_id}"
    before = unchecked_order(index_dir, ref, 10)
    youtube.answers[before[0]] = "hang"
    config = write_config(tmp_path, index_dir, youtube, budget_s=0.5)
    env = child_environment(tmp_path / "home", MUSREC_VIDEOS_OEMBED_URL=youtube.oembed_url)
    done = subprocess.run(
        [sys.executable, "-m", "musrec.cli", "--config", str(config), "recommend", ref, "--top-k", "3", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The process has ended while the stand-in still holds its request (released only at the end of the test).
    assert youtube.held == [before[0]]
    matches = json.loads(done.stdout)["matches"]
    assert [m["video_id"] for m in matches] == before[:3]
    assert matches[0]["available"] is None and matches[1]["title"] == f"Title of {before[1]}"


def test_with_a_key_an_answer_asks_the_data_api_once(
    index_dir: Path, tmp_path: Path, youtube: YouTubeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = f"audioset:{Index(index_dir).store.get(23).video_id}"
    before = unchecked_order(index_dir, ref, 20)
    youtube.answers.update({before[0]: 404, before[2]: "private"})
    monkeypatch.setenv(API_KEY_ENV, "answer-key")
    musrec = Musrec(config=load_config(write_config(tmp_path, index_dir, youtube), environ={}))
    try:
        result = musrec.recommend(ref, k=5)
    finally:
        musrec.close()
    assert [m.video_id for m in result.matches] == [v for v in before if v not in (before[0], before[2])][:5]
    assert youtube.calls == [before[: 5 + margin(5)]] and youtube.keys == ["answer-key"]
    assert all(m.video is not None and m.video.title == f"Title of {m.video_id}" for m in result.matches)


def test_blends_and_their_next_pages_leave_gone_videos_out(
    index_dir: Path, tmp_path: Path, youtube: YouTubeStandIn
) -> None:
    store = Index(index_dir).store
    sounds = [f"audioset:{store.get(i).video_id}" for i in (30, 31)]
    config = load_config(write_config(tmp_path, index_dir, youtube), environ={})
    off = Musrec(config=replace(config, videos=replace(config.videos, check=False)))
    wide = [m.video_id for m in off.blend(sounds, k=4 + margin(4)).matches]
    youtube.answers.update({wide[0]: 404, wide[3]: 403})
    musrec = Musrec(config=config)
    try:
        first = musrec.blend(sounds, k=4)
        assert [m.video_id for m in first.matches] == [v for v in wide if v not in (wide[0], wide[3])][:4]
        assert all(len(m.similarities) == 2 for m in first.matches)
        resolved = [musrec.resolve(s) for s in sounds]
        shown = [m.item for m in first.matches]
        more = musrec.search_blend(resolved, k=4, exclude=shown)
        assert not {m.video_id for m in more.matches} & {wide[0], wide[3], *(m.video_id for m in first.matches)}
        assert len(more.matches) == 4
    finally:
        musrec.close()
        off.close()


def test_a_check_that_ends_after_the_answer_serves_the_next_one(
    index_dir: Path, tmp_path: Path, youtube: YouTubeStandIn
) -> None:
    """The budget spent, a gone video is shown unchecked once; its check, ended in the background, leaves it out of
    the next answer."""
    ref = f"audioset:{Index(index_dir).store.get(25).video_id}"
    before = unchecked_order(index_dir, ref, 10)
    youtube.answers[before[1]] = "hang"
    musrec = Musrec(config=load_config(write_config(tmp_path, index_dir, youtube, budget_s=0.3), environ={}))
    try:
        assert [m.video_id for m in musrec.recommend(ref, k=3).matches] == before[:3]
        eventually(lambda: youtube.held == [before[1]], what="the request reached the stand-in")
        youtube.answers[before[1]] = 404  # what the held request will say
        youtube.release()
        checker = musrec.videos
        assert checker is not None
        eventually(lambda: before[1] in checker.store.get_many([before[1]]), what="the background check ended")
        assert [m.video_id for m in musrec.recommend(ref, k=3).matches] == [before[0], before[2], before[3]]
    finally:
        musrec.close()
