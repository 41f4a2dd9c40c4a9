"""Fixtures for the bot on the Discord stand-in: its world (an index, and the embedder and clips that go with it),
its configuration, the bot itself (:func:`bot_for`), a scenario that runs a test's body against it; and for its
promises under pressure, an embedder the test holds and lets through and an HTTP host beside the stand-in
(attachments elsewhere, slow or redirected).

The held embedder stands in for VGGish where the test must decide when work ends: everything else is real (the
discord.py client, the stand-in, ffmpeg decoding the clips, the index search, the bot's queue and its worker
threads). It tells whose clip it embeds by the number of rows: a clip of ``n`` seconds (``n`` < 10) gives ``n`` rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yarl
from aiohttp import web
from audioset_fixtures import make_segments
from conftest import closed_port
from discord_standin import InteractionHandle, StandIn, run
from vggish_fixtures import distinct_clip, shared_embedder

from bot.__main__ import main
from bot.client import MusrecBot, make_bot
from bot.work import WorkQueue
from musrec.audio.decode import decode
from musrec.audio.wav import to_wav_bytes
from musrec.audioset.labels import default_labels
from musrec.audioset.records import Segment
from musrec.audioset.representation import fit_rows
from musrec.config import Config, load_config
from musrec.embedding.base import Embedder
from musrec.index.build import BuildOptions, build_index
from musrec.index.search import Index
from musrec.links.parse import YOUTUBE_HOSTS
from musrec.pipeline import Musrec

RATE = 16000
ROW_SAMPLES = 15360  # one embedding row: 0.96 s at 16 kHz
EMBEDDING_SIZE = 128
WAIT_S = 60.0  # how long a held call or a condition may take before the test gives up (never reached when it passes)
LOOPBACK = "127.0.0.1"
CLIPS = 3
STRANGER = 424242  # a user who is not the bot's owner
HEARTBEAT_S = 0.5  # the stand-in's heartbeat interval in these tests


@dataclass(frozen=True)
class World:
    """What the bot searches in a test (a module's ``world`` fixture): its ``index`` (of ``structure``: Annoy or
    IVF), the ``embedder`` that embedded its clips (None where each test brings one of its own), and the ``clips``
    (WAV) indexed as ``botclip0000``... (Guitar and Jazz)."""

    index: Path
    structure: str
    embedder: Embedder | None = None
    clips: tuple[bytes, ...] = ()


def make_world(tmp_path_factory: pytest.TempPathFactory, structure: str) -> World:
    """200 synthetic segments and three of real clips (``botclip000N``, Guitar and Jazz) in an index of
    ``structure``, with the random-weight VGGish that embedded them."""
    embedder = shared_embedder(tmp_path_factory)
    root = tmp_path_factory.mktemp(f"bot-{structure}")
    clips = []
    segments: list[Segment] = make_segments(200, split="eval")
    for i in range(CLIPS):
        wav = to_wav_bytes(distinct_clip(i, 12.0))
        clips.append(wav)
        rows = embedder.embed(decode(wav).samples[: 10 * RATE])
        segments.append(Segment(f"botclip{i:04d}", 0.0, 10.0, (140, 235), "eval", fit_rows(rows)))
    options = BuildOptions(trees=8, backend=structure)
    build_index(segments, root / "index", labels=default_labels(), options=options)
    assert Index(root / "index").manifest.ann == structure
    return World(index=root / "index", structure=structure, embedder=embedder, clips=tuple(clips))


def small_world(tmp_path_factory: pytest.TempPathFactory, structure: str = "annoy") -> World:
    """An index of 60 synthetic segments (Annoy, or IVF with ``structure="ivf"``): the bot's world when the embedder
    is a stand-in too."""
    root = tmp_path_factory.mktemp(f"bot-small-{structure}")
    options = BuildOptions(trees=4, backend=structure)
    build_index(make_segments(60, split="eval"), root / "index", labels=default_labels(), options=options)
    return World(index=root / "index", structure=structure)


def config_for(world: World, standin: StandIn, *, listen: bool = False, **bot: Any) -> Config:
    """The configuration of a bot on ``world``'s index talking to ``standin``: attachments from its CDN, no
    cooldown, ``[bot]`` settings from ``bot``; ``listen``: it answers clips posted in the stand-in's channel."""
    config = load_config(None, environ={})
    listening = {"listen_channels": (str(standin.world.channel_id),)} if listen else {}
    settings = {"attachment_hosts": (standin.cdn_hostname,), "cooldown_s": 0.0, **listening, **bot}
    # YouTube's hosts (never fetched here) and the loopback media server: 127.0.0.1 allowed explicitly, private
    # addresses opted in.
    youtube = replace(
        config.youtube,
        allowed_hosts=(*YOUTUBE_HOSTS, "127.0.0.1"),
        allow_private_addresses=True,
        retries=0,
        socket_timeout_s=5.0,
        cache_path=world.index.parent / f"cache-{id(standin)}.sqlite3",
    )
    return replace(
        config,
        index=replace(config.index, path=world.index),
        bot=replace(config.bot, **settings),
        youtube=youtube,
    )


def bot_for(world: World, config: Config, *, embedder: Any = None, queue: WorkQueue | None = None) -> MusrecBot:
    """The bot on ``world``'s index with ``config``, embedding with ``embedder`` (default: the world's); ``queue``
    replaces the one ``[bot]`` describes."""
    chosen = embedder if embedder is not None else world.embedder
    assert chosen is not None, "this world has no embedder of its own: give one"

    def factory() -> Musrec:
        return Musrec(config=config, index=Index(world.index), embedder=chosen)

    made = make_bot(config, musrec_factory=factory, queue=queue, guild_ready_timeout=0.05)
    assert isinstance(made, MusrecBot)
    return made


def scenario(
    world: World,
    body: Callable[[StandIn, MusrecBot], Awaitable[None]],
    *,
    embedder: Any = None,
    **bot: Any,
) -> None:
    """Run ``body`` against the bot on ``world`` (``bot``: its ``[bot]`` settings, see :func:`config_for`)."""

    async def main(standin: StandIn) -> None:
        client = bot_for(world, config_for(world, standin, **bot), embedder=embedder)
        async with standin.running(client, timeout=WAIT_S):
            await body(standin, client)
        assert not standin.errors

    run(main, timeout=WAIT_S * 2, heartbeat_interval=HEARTBEAT_S)


async def all_handled(standin: StandIn) -> None:
    """Post a control message the bot always answers (its owner's command, from someone else) and wait for the
    answer: the bot handles messages in the order they come, so every message posted before has been handled, and a
    test may assert that one of them got no reply (a fixed sleep would pass without proving it on a slow machine)."""
    control = await standin.post_message(f"<@{standin.world.application_id}> sync", author=STRANGER)
    assert (await control.wait_for_reply(timeout=WAIT_S)).content == "Only the bot's owner can do that."


def ephemeral_text(handle: Any) -> str:
    """The one message still shown for ``handle``, which only its user sees."""
    visible = [m for m in handle.messages if not m.deleted]
    assert len(visible) == 1, visible
    assert visible[0].ephemeral, visible[0]
    return str(visible[0].content)


def clip(seconds: int, *, hz: float = 440.0) -> bytes:
    """A WAV tone of ``seconds`` (1-9): the held embedder sees ``seconds`` rows."""
    t = np.arange(seconds * RATE) / RATE
    return to_wav_bytes(0.3 * np.sin(2 * np.pi * hz * t))


class HeldEmbedder:
    """An embedder whose calls wait until the test lets them through (all at once when ``held`` is False).

    ``started`` and ``finished`` list the rows of each call in the order they started and ended.
    """

    def __init__(self, *, held: bool = True) -> None:
        self._changed = threading.Condition()
        self._passes = 0 if held else -1  # -1: no limit
        self.started: list[int] = []
        self.finished: list[int] = []

    def embed(self, samples: npt.NDArray[np.floating], sample_rate: int = RATE) -> npt.NDArray[np.uint8]:
        rows = len(samples) * RATE // sample_rate // ROW_SAMPLES
        with self._changed:
            self.started.append(rows)
            self._changed.notify_all()
            if not self._changed.wait_for(lambda: self._passes != 0, timeout=WAIT_S):
                raise RuntimeError("the test never let this call through")
            if self._passes > 0:
                self._passes -= 1
        out = np.full((rows, EMBEDDING_SIZE), 100 + rows, dtype=np.uint8)
        with self._changed:
            self.finished.append(rows)
        return out

    def let_through(self, calls: int = 1) -> None:
        with self._changed:
            self._passes = calls if self._passes == 0 else self._passes + calls
            self._changed.notify_all()

    def open(self) -> None:
        """Let every call through, now and from now on."""
        with self._changed:
            self._passes = -1
            self._changed.notify_all()


async def eventually(predicate: Callable[[], bool], *, what: str, timeout: float = WAIT_S) -> None:
    """Wait until ``predicate()`` holds, for conditions that change in worker threads (the stand-in's own
    ``wait_until`` re-checks only when a request or a gateway payload arrives)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
    assert predicate(), what


def held_scenario(
    world: World,
    body: Callable[[StandIn, MusrecBot], Awaitable[None]],
    embedder: HeldEmbedder,
    *,
    queue: WorkQueue | None = None,
    wait_s: float = WAIT_S,
    **bot: Any,
) -> None:
    """Run ``body`` against the bot on ``world`` with ``embedder`` and ``queue`` (see :func:`bot_for`; ``bot``: its
    ``[bot]`` settings, see :func:`config_for`); whatever happens, the embedder is opened at the end, so a failed
    test leaves no worker thread waiting. ``wait_s`` bounds the start; three times it, the whole run (only a hang
    reaches either)."""

    async def main(standin: StandIn) -> None:
        client = bot_for(world, config_for(world, standin, **bot), embedder=embedder, queue=queue)
        try:
            async with standin.running(client, timeout=wait_s):
                await body(standin, client)
        finally:
            embedder.open()
        assert not standin.errors

    run(main, timeout=wait_s * 3, heartbeat_interval=HEARTBEAT_S)


def attachment_at(standin: StandIn, url: str, filename: str, data: bytes) -> dict[str, Any]:
    """An attachment object as Discord would send it, with ``url`` where the file is."""
    return standin.world.attachment(standin.world.snowflake(), filename, len(data), "audio/wav", url, url)


def downloads(standin: StandIn, handle: InteractionHandle) -> int:
    """Requests for the attachments of ``handle`` on the stand-in's CDN."""
    urls = [a["url"] for a in handle.payload["data"].get("resolved", {}).get("attachments", {}).values()]
    paths = [url.split("?")[0].removeprefix(standin.cdn_url) for url in urls]
    return sum(1 for c in standin.recorded if c.path in paths)


class FileHost:
    """An HTTP server on 127.0.0.1 beside the stand-in, at a port of its own: it counts every request, serves files
    (held until the test releases them, when it asks), and redirects (``/redirect?to=URL``)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.holds: dict[str, asyncio.Event] = {}
        self.requests: list[str] = []
        self.port = 0

    def url(self, name: str, *, host: str = LOOPBACK) -> str:
        return f"http://{host}:{self.port}/files/{name}"

    def redirect(self, to: str, *, host: str = LOOPBACK) -> str:
        return str(yarl.URL.build(scheme="http", host=host, port=self.port, path="/redirect", query={"to": to}))

    def serve(self, name: str, data: bytes, *, held: bool = False) -> None:
        self.files[name] = data
        if held:
            self.holds[name] = asyncio.Event()

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name in self.holds:
            await self.holds[name].wait()
        if name not in self.files:
            raise web.HTTPNotFound()
        return web.Response(body=self.files[name], content_type="audio/wav")

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(request.path)
        response: web.StreamResponse = await handler(request)
        return response


@contextlib.asynccontextmanager
async def file_host() -> AsyncIterator[FileHost]:
    host = FileHost()
    app = web.Application(middlewares=[host._count])
    app.router.add_get("/files/{name}", host._file)
    app.router.add_get("/redirect", host._redirect)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    host.port = runner.addresses[0][1]
    try:
        yield host
    finally:
        for hold in host.holds.values():
            hold.set()
        await runner.cleanup()


def rss_bytes() -> int:
    """This process's resident memory now (Linux: /proc/self/statm, in pages)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


class RssPeak:
    """This process's highest resident memory while its block runs, sampled every 10 ms (and at both ends), over
    what it was on entry: ``async with RssPeak() as rss: ...``, then ``rss.growth_bytes``."""

    def __init__(self) -> None:
        self.baseline = self.peak = 0
        self._sampler: asyncio.Task[None] | None = None

    @property
    def growth_bytes(self) -> int:
        return self.peak - self.baseline

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes())
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> RssPeak:
        self.baseline = self.peak = rss_bytes()
        self._sampler = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.peak = max(self.peak, rss_bytes())
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler


ZWSP = "\u200b"  # what discord.utils.escape_mentions puts after an "@"


def named(standin: StandIn, filename: str, data: bytes) -> dict[str, Any]:
    """An attachment called ``filename``, served on the CDN under a plain name (a "/" would not fit its path)."""
    return attachment_at(standin, standin.add_attachment("plain.wav", data)["url"], filename, data)


def bot_config(tmp_path: Path, index: Path | None, *, listen: bool = False, extra: str = "") -> Path:
    """The bot with MAX servers (a closed loopback port, never called at start) and an index in place: ready to run
    without any model file."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "data"
    if index is not None:
        shutil.copytree(index, data / "index")
    listen_channels = '["1"]' if listen else "[]"
    path = tmp_path / "bot.toml"
    path.write_text(
        f"[data]\ndir = {str(data)!r}\n\n"
        f'[embedder]\nkind = "max"\n\n'
        f'[max]\nurls = ["http://127.0.0.1:{closed_port()}"]\n\n'
        f"[bot]\nlisten_channels = {listen_channels}\n" + extra,
        encoding="utf-8",
    )
    return path


def start(argv: list[str], capsys: pytest.CaptureFixture[str], **kwargs: Any) -> tuple[int, str]:
    """``main(argv)``; its exit status and stderr, which must be one line without a traceback."""
    code = main(argv, **kwargs)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    return code, err.removesuffix("\n")
