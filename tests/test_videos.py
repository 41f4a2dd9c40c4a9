"""Issue 21: only live videos in answers, with their names. YouTube's oEmbed endpoint and the Data API's
videos.list are a stand-in on 127.0.0.1 that answers each video as the test says (200 with a title, 401, 403, 404,
400, 429, 5xx, slowly, or not until the test lets it), counting every request; the index, the store and the
command line are real. User-level paths run on both index structures."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from audioset_fixtures import make_segments

from musrec.audioset.labels import default_labels
from musrec.cli import main
from musrec.config import Config, load_config
from musrec.index.build import BuildOptions, build_index
from musrec.index.search import Index
from musrec.pipeline import Musrec
from musrec.recommend.live import margin
from musrec.videos.checker import VideoChecker
from musrec.videos.dataapi import DataApiSource
from musrec.videos.oembed import OEmbedSource
from musrec.videos.status import ALIVE, GONE, UNKNOWN, VideoStatus, clean_text
from musrec.videos.store import DAY_S, VideoStore

LOOPBACK = "127.0.0.1"
WAIT_S = 60.0  # how long a held request or a background check may take before the test gives up (never, passing)
KEY = "test-key-do-not-log"
# Generous: only the hanging stand-in's tests rely on the budget running out, and they set a small one.
BUDGET_S = 60.0


# ---- the stand-in ---------------------------------------------------------------------------------------------


@dataclass
class YouTubeStandIn:
    """oEmbed at ``/oembed`` and videos.list at ``/youtube/v3/videos``. ``answers`` maps a video id to a status
    code ("hang": held until :meth:`release`; "slow": answered 200 after ``slow_s``); others are 200, titled
    ``Title of <id>`` by ``Channel of <id>`` unless ``titles`` says otherwise."""

    answers: dict[str, int | str] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    api_status: int = 200  # the Data API's answer to a whole call
    slow_s: float = 0.05
    requests: Counter[str] = field(default_factory=Counter)  # video id -> requests that asked for it
    calls: list[list[str]] = field(default_factory=list)  # each request's video ids, in arrival order
    keys: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # video ids whose request is being held now
    port: int = 0

    def __post_init__(self) -> None:
        self._release = threading.Event()
        self._lock = threading.Lock()

    @property
    def oembed_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/oembed"

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/youtube/v3/videos"

    def release(self) -> None:
        self._release.set()

    def title(self, video_id: str) -> str:
        return self.titles.get(video_id, f"Title of {video_id}")

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
        if path == "/oembed":
            watch = urllib.parse.urlsplit(query["url"][0])
            video_id = urllib.parse.parse_qs(watch.query)["v"][0]
            ids = [video_id]
        else:
            ids = query["id"][0].split(",")
            with self._lock:
                self.keys.append(query.get("key", [""])[0])
        with self._lock:
            self.calls.append(ids)
            self.requests.update(ids)
        for video_id in ids:
            how = self.answers.get(video_id, 200)
            if how == "hang":
                with self._lock:
                    self.held.append(video_id)
                self._release.wait(WAIT_S)
                with self._lock:
                    self.held.remove(video_id)
            elif how == "slow":
                time.sleep(self.slow_s)
        if path == "/oembed":
            how = self.answers.get(ids[0], 200)
            code = 200 if how in ("hang", "slow") else int(how)
            if code != 200:
                return code, b"Not Found" if code == 404 else b"error"
            body = {"title": self.title(ids[0]), "author_name": f"Channel of {ids[0]}", "type": "video"}
            return 200, json.dumps(body).encode()
        if self.api_status != 200:
            return self.api_status, b'{"error": {"code": 403, "message": "quota"}}'
        items = []
        for video_id in ids:
            how = self.answers.get(video_id, 200)
            if how in (200, 401, "hang", "slow"):
                snippet = {"title": self.title(video_id), "channelTitle": f"Channel of {video_id}"}
                items.append({"id": video_id, "snippet": snippet, "status": {"privacyStatus": "public"}})
            elif how == "private":
                items.append({"id": video_id, "snippet": {}, "status": {"privacyStatus": "private"}})
        return 200, json.dumps({"kind": "youtube#videoListResponse", "items": items}).encode()


@pytest.fixture
def youtube() -> Iterator[YouTubeStandIn]:
    with serving_youtube() as standin:
        yield standin


@contextlib.contextmanager
def serving_youtube() -> Iterator[YouTubeStandIn]:
    """The stand-in on 127.0.0.1 at a port of its own, in a thread; a held request is let go at the end."""
    standin = YouTubeStandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urllib.parse.urlsplit(self.path)
            code, body = standin.answer(url.path, urllib.parse.parse_qs(url.query))
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    server.daemon_threads = True
    standin.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        standin.release()
        server.shutdown()
        server.server_close()


def eventually(predicate: Any, *, what: str) -> None:
    """Wait for a background check to end (bounded by WAIT_S, never reached when the test passes)."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


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


@pytest.fixture(scope="module", params=("annoy", "ivf"))
def index_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return videos_index(tmp_path_factory, request.param)


def videos_index(tmp_path_factory: pytest.TempPathFactory, structure: str) -> Path:
    """160 synthetic segments, each of a video of its own, in an index of ``structure``."""
    out = tmp_path_factory.mktemp(f"videos-{structure}") / "index"
    build_index(make_segments(160, split="eval", seed=3), out, labels=default_labels(),
                options=BuildOptions(trees=8, backend=structure))  # fmt: skip
    assert Index(out).manifest.ann == structure
    return out


def write_config(tmp_path: Path, index_dir: Path, youtube: YouTubeStandIn, **videos: object) -> Path:
    settings = {"oembed_url": youtube.oembed_url, "api_url": youtube.api_url, "budget_s": BUDGET_S, **videos}
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path = tmp_path / "config.toml"
    path.write_text(
        f'[data]\ndir = "{tmp_path / "data"}"\n[index]\npath = "{index_dir}"\n[videos]\n' + "\n".join(lines) + "\n"
    )
    return path


def recommend_json(config: Path, ref: str, capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    assert main(["--config", str(config), "recommend", ref, "--json", *flags]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def unchecked_order(index_dir: Path, ref: str, k: int) -> list[str]:
    """The videos of the best ``k`` matches with the check off: what an answer leaves gone videos out of."""
    config = replace(load_config(None, environ={}), index=replace(Config().index, path=index_dir))
    config = replace(config, videos=replace(config.videos, check=False))
    musrec = Musrec(config=config)
    try:
        return [m.video_id for m in musrec.recommend(ref, k=k).matches]
    finally:
        musrec.close()


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
