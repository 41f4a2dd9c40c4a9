"""The YouTube stand-in (oEmbed and the Data API on 127.0.0.1) and the indexes and configurations the video-check
tests share (issue 21)."""

from __future__ import annotations

import contextlib
import json
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
