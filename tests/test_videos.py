"""Issue 21: only live videos in answers, with their names. YouTube's oEmbed endpoint and the Data API's
videos.list are a stand-in on 127.0.0.1 that answers each video as the test says (200 with a title, 401, 403, 404,
400, 429, 5xx, slowly, or not until the test lets it), counting every request; the index, the store and the
command line are real. User-level paths run on both index structures."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from videos_fixtures import (
    KEY,
    LOOPBACK,
    YouTubeStandIn,
    eventually,
    recommend_json,
    serving_youtube,
    unchecked_order,
    videos_index,
    write_config,
)

from musrec.cli import main
from musrec.config import load_config
from musrec.index.search import Index
from musrec.pipeline import Musrec
from musrec.recommend.live import margin
from musrec.videos.checker import VideoChecker
from musrec.videos.dataapi import DataApiSource
from musrec.videos.oembed import OEmbedSource
from musrec.videos.status import ALIVE, GONE, UNKNOWN, VideoStatus, clean_text
from musrec.videos.store import DAY_S, VideoStore


@pytest.fixture
def youtube() -> Iterator[YouTubeStandIn]:
    with serving_youtube() as standin:
        yield standin


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def index_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return videos_index(tmp_path_factory, request.param)


# ---- the sources ------------------------------------------------------------------------------------------------


def test_oembed_answers_map_to_states(youtube: YouTubeStandIn) -> None:
    youtube.answers.update({"a401": 401, "a400": 400, "a403": 403, "a404": 404, "a429": 429, "a500": 500, "a503": 503})
    source = OEmbedSource(youtube.oembed_url, timeout_s=30)
    got = {s.video_id: s for s in source.check(["alive", "a401", "a400", "a403", "a404", "a429", "a500", "a503"])}
    assert got["alive"] == replace(got["alive"], state=ALIVE, title="Title of alive", channel="Channel of alive")
    assert got["a401"].state == ALIVE and got["a401"].title is None  # embedding disabled: it plays on YouTube
    assert [got[v].state for v in ("a400", "a403", "a404")] == [GONE] * 3
    assert [got[v].available for v in ("a429", "a500", "a503")] == [None] * 3
    assert got["a429"].checked_at is None  # unknown: never checked, as far as anyone keeps


def test_oembed_that_does_not_answer_in_time_is_unknown(youtube: YouTubeStandIn) -> None:
    youtube.answers["held"] = "hang"
    closed = OEmbedSource(f"http://{LOOPBACK}:1/oembed", timeout_s=30)
    assert closed.check(["x"])[0].state == UNKNOWN  # nothing listens: refused at once
    slow = OEmbedSource(youtube.oembed_url, timeout_s=0.2)
    assert slow.check(["held"])[0].state == UNKNOWN


def test_data_api_asks_fifty_a_call_and_missing_means_gone(
    youtube: YouTubeStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [f"vid{i:08d}" for i in range(120)]
    youtube.answers.update({ids[3]: 404, ids[60]: "private", ids[119]: 403})
    source = DataApiSource(youtube.api_url, key=KEY, timeout_s=30)
    got = source.check(ids)
    assert [len(c) for c in youtube.calls] == [50, 50, 20] and youtube.keys == [KEY] * 3
    assert [s.video_id for s in got] == ids
    assert {s.video_id for s in got if s.gone} == {ids[3], ids[60], ids[119]}
    assert got[0].title == f"Title of {ids[0]}" and got[0].channel == f"Channel of {ids[0]}"
    youtube.api_status = 403  # the key refused, or its quota spent: nothing is learnt
    with caplog.at_level(logging.DEBUG):
        assert {s.state for s in source.check(ids[:10])} == {UNKNOWN}
    assert "403" in caplog.text and KEY not in caplog.text


def test_titles_become_one_line_of_plain_text() -> None:
    assert clean_text("So What\x1b[2J\x1b]0;pwned\x07 (Official\nAudio)\u202e") == "So What[2J]0;pwned (Official Audio)"
    assert clean_text("  \t ") is None and clean_text(None) is None
    assert len(clean_text("x" * 1000) or "") == 200


# ---- the store --------------------------------------------------------------------------------------------------


def test_store_keeps_alive_a_month_gone_a_year_and_never_unknown(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = VideoStore(tmp_path / "v.sqlite3", alive_s=30 * DAY_S, gone_s=365 * DAY_S, clock=lambda: now[0])
    store.put_many(
        [
            VideoStatus("alive", ALIVE, "T", "C", now[0]),
            VideoStatus("gone", GONE, checked_at=now[0]),
            VideoStatus.unknown("unknown"),
        ]
    )
    assert set(store.get_many(["alive", "gone", "unknown"])) == {"alive", "gone"}
    assert store.get_many(["alive"])["alive"] == VideoStatus("alive", ALIVE, "T", "C", now[0])
    now[0] += 31 * DAY_S
    assert set(store.get_many(["alive", "gone"])) == {"gone"}
    assert (store.counts().checked, store.counts().gone) == (1, 1)
    now[0] += 335 * DAY_S
    assert store.get_many(["alive", "gone"]) == {}
    store.close()


def test_a_damaged_store_is_started_afresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "videos.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="musrec.videos.store"):
        store = VideoStore(path)
    assert "damaged" in caplog.text
    store.put_many([VideoStatus.dead("x")])
    assert store.get_many(["x"])["x"].gone
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT state FROM videos").fetchall() == [("gone",)]


# ---- answers: the command line, on both index structures ----------------------------------------------------------


def test_gone_videos_are_left_out_and_k_kept(
    index_dir: Path, tmp_path: Path, youtube: YouTubeStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = f"audioset:{Index(index_dir).store.get(5).video_id}"
    before = unchecked_order(index_dir, ref, 30)
    # Of the first matches: removed, private, malformed; embedding disabled (kept); refused to answer (kept).
    youtube.answers.update({before[0]: 404, before[2]: 403, before[3]: 400, before[4]: 401, before[5]: 429})
    youtube.answers[before[6]], youtube.slow_s = "slow", 0.3  # slow, within the budget: waited for
    config = write_config(tmp_path, index_dir, youtube)
    data = recommend_json(config, ref, capsys, "--top-k", "6")
    shown = [m["video_id"] for m in data["matches"]]
    assert shown == [v for v in before if v not in (before[0], before[2], before[3])][:6]  # the next ones fill in
    by_id = {m["video_id"]: m for m in data["matches"]}
    assert (
        by_id[before[1]]["title"] == f"Title of {before[1]}"
        and by_id[before[1]]["channel"] == f"Channel of {before[1]}"
    )
    assert by_id[before[1]]["available"] is True
    assert by_id[before[4]]["available"] is True and by_id[before[4]]["title"] is None  # 401: plays, no name
    assert by_id[before[5]]["available"] is None and by_id[before[5]]["title"] is None  # 429: unknown, shown
    assert by_id[before[6]]["title"] == f"Title of {before[6]}"
    assert max(youtube.requests.values()) == 1


def test_a_second_identical_answer_asks_youtube_nothing_new(
    index_dir: Path, tmp_path: Path, youtube: YouTubeStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = f"audioset:{Index(index_dir).store.get(7).video_id}"
    before = unchecked_order(index_dir, ref, 20)
    youtube.answers.update({before[1]: 404, before[3]: 403})
    config = write_config(tmp_path, index_dir, youtube)
    first = recommend_json(config, ref, capsys, "--top-k", "5")
    asked = sum(youtube.requests.values())
    assert asked == 5 + margin(5)  # the candidates of one search, each asked once
    second = recommend_json(config, ref, capsys, "--top-k", "5")
    assert second["matches"] == first["matches"] and sum(youtube.requests.values()) == asked


def test_an_answer_whose_videos_are_known_searches_as_an_unchecked_one(
    index_dir: Path, tmp_path: Path, youtube: YouTubeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its videos are known, an answer passes over the gone ones as it reads the candidates: it asks the index
    what the same answer with the check off asks (no margin), and nothing of YouTube."""
    ref = f"audioset:{Index(index_dir).store.get(13).video_id}"
    before = unchecked_order(index_dir, ref, 20)
    youtube.answers.update({before[0]: 404, before[2]: 403})
    config = load_config(write_config(tmp_path, index_dir, youtube), environ={})
    first = Musrec(config=config)  # the cold answer stores what it learnt
    first.recommend(ref, k=5)
    first.close()
    asked = sum(youtube.requests.values())
    searches: dict[str, list[int]] = {"on": [], "off": []}
    on = Musrec(config=config)
    off = Musrec(config=replace(config, videos=replace(config.videos, check=False)))
    try:
        on.recommend(ref, k=5)  # a new process: the store's states are read once
        for name, musrec in (("on", on), ("off", off)):
            monkeypatch.setattr(musrec.index.backend, "search", counting(musrec.index.backend.search, searches[name]))
        shown = [m.video_id for m in on.recommend(ref, k=5).matches]
        off.recommend(ref, k=5)
    finally:
        on.close()
        off.close()
    assert shown == [v for v in before if v not in (before[0], before[2])][:5]
    assert searches["on"] == searches["off"] and len(searches["on"]) == 1
    assert sum(youtube.requests.values()) == asked


def counting(search: Callable[..., Any], sizes: list[int]) -> Callable[..., Any]:
    """``search`` (an index backend's), noting how many results each call asks for in ``sizes``."""

    def counted(vector: Any, n: int, **options: Any) -> Any:
        sizes.append(n)
        return search(vector, n, **options)

    return counted


def test_unknown_is_never_recorded_as_gone(
    index_dir: Path, tmp_path: Path, youtube: YouTubeStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = f"audioset:{Index(index_dir).store.get(9).video_id}"
    before = unchecked_order(index_dir, ref, 10)
    youtube.answers.update({before[0]: 429, before[1]: 500, before[2]: 503})
    config = write_config(tmp_path, index_dir, youtube)
    for attempt in (1, 2):
        data = recommend_json(config, ref, capsys, "--top-k", "4")
        assert [m["video_id"] for m in data["matches"]] == before[:4]  # shown, unknown
        assert [m["available"] for m in data["matches"][:3]] == [None, None, None]
        assert all(youtube.requests[v] == attempt for v in before[:3])  # asked again: nothing was recorded
    store = VideoStore(tmp_path / "data" / "videos.sqlite3")
    assert not set(store.get_many(before[:3])) and before[3] in store.get_many([before[3]])
    store.close()


def test_titles_are_shown_escaped_in_the_table_and_the_json(
    index_dir: Path, tmp_path: Path, youtube: YouTubeStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = f"audioset:{Index(index_dir).store.get(11).video_id}"
    first = unchecked_order(index_dir, ref, 1)[0]
    youtube.titles[first] = "So What\x1b[31m (Official\r\nAudio) **bold** @everyone\u202e"
    config = write_config(tmp_path, index_dir, youtube)
    data = recommend_json(config, ref, capsys, "--top-k", "3")
    assert data["matches"][0]["title"] == "So What[31m (Official Audio) **bold** @everyone"
    assert main(["--config", str(config), "recommend", ref, "--top-k", "3"]) == 0
    table = capsys.readouterr().out
    assert f"So What[31m (Official Audio) **bold** @everyone · Channel of {first}" in table
    assert "\x1b" not in table and "\r" not in table and "\u202e" not in table
    lines = table.splitlines()
    assert lines[lines.index(next(x for x in lines if first in x)) + 1].strip().startswith("So What")


def test_off_switch_asks_nothing_and_shows_ids(
    index_dir: Path, tmp_path: Path, youtube: YouTubeStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = f"audioset:{Index(index_dir).store.get(13).video_id}"
    youtube.answers.update(dict.fromkeys(unchecked_order(index_dir, ref, 10), 404))
    config = write_config(tmp_path, index_dir, youtube, check=False)
    data = recommend_json(config, ref, capsys, "--top-k", "3")
    assert len(data["matches"]) == 3 and not youtube.requests
    assert all(m["available"] is None and m["title"] is None for m in data["matches"])
    assert not (tmp_path / "data" / "videos.sqlite3").exists()


# ---- the budget -------------------------------------------------------------------------------------------------


def test_a_hanging_youtube_delays_an_answer_by_the_budget_at_most(
    index_dir: Path, tmp_path: Path, youtube: YouTubeStandIn
) -> None:
    config = replace(load_config(write_config(tmp_path, index_dir, youtube, budget_s=0.3), environ={}))
    ref = f"audioset:{Index(index_dir).store.get(15).video_id}"
    before = unchecked_order(index_dir, ref, 10)
    youtube.answers[before[1]] = "hang"
    musrec = Musrec(config=config)
    try:
        result = musrec.recommend(ref, k=4)
        # The answer came while the stand-in still held the request (released only below): shown, unchecked.
        eventually(lambda: youtube.held == [before[1]], what="the request reached the stand-in")
        assert [m.video_id for m in result.matches] == before[:4]
        assert result.matches[1].video is not None and result.matches[1].video.available is None
        assert result.matches[0].video is not None and result.matches[0].video.title == f"Title of {before[0]}"
        asked = youtube.requests[before[1]]
        again = musrec.recommend(ref, k=4)  # still held: joins the check that runs, asks nothing new
        assert youtube.requests[before[1]] == asked == 1 and again.matches[1].video.available is None  # type: ignore[union-attr]
        youtube.release()
        checker = musrec.videos
        assert checker is not None
        eventually(lambda: before[1] in checker.store.get_many([before[1]]), what="the background check ended")
        third = musrec.recommend(ref, k=4)
        assert third.matches[1].video is not None and third.matches[1].video.title == f"Title of {before[1]}"
        assert youtube.requests[before[1]] == 1
    finally:
        musrec.close()


def test_checks_run_concurrently_within_their_bound(youtube: YouTubeStandIn, tmp_path: Path) -> None:
    ids = [f"conc{i:07d}" for i in range(12)]
    youtube.answers.update(dict.fromkeys(ids, "hang"))
    checker = VideoChecker(OEmbedSource(youtube.oembed_url, timeout_s=30), VideoStore(tmp_path / "v.sqlite3"),
                           concurrency=4)  # fmt: skip
    try:
        assert checker.statuses(ids, deadline=time.monotonic()) == {}  # nothing known, nothing waited for
        eventually(lambda: len(youtube.held) == 4, what="four requests at once")
        assert len(youtube.held) == 4 and sum(youtube.requests.values()) == 4  # the others wait for a thread
        youtube.release()
        eventually(lambda: len(checker.store.get_many(ids)) == 12, what="every check ended")
        assert sum(youtube.requests.values()) == 12
    finally:
        checker.close()
