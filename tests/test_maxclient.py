"""MaxEmbedder against real servers on 127.0.0.1: musrec's MAX-compatible server and small failing ones."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest
from aiohttp import web
from max_fixtures import (
    WAIT_S,
    LoopThread,
    Served,
    dead_url,
    int16_clip,
    serving,
    tiny_app,
)

from musrec.audio.limits import AudioLimits
from musrec.audio.wav import read_wav_bytes, to_wav_bytes
from musrec.embedding.base import vggish_pcm
from musrec.embedding.local import LocalEmbedder
from musrec.embedding.max_client import (
    MSG_CLOSED,
    MSG_INVALID,
    MSG_TIMEOUT,
    MSG_TOO_LARGE,
    MSG_TOO_SHORT,
    MSG_UNAVAILABLE,
    MaxEmbedder,
    parse_embedding,
)
from musrec.embedding.server import make_app
from musrec.errors import EmbedderError, MusrecError, TooLongError, TooShortError

PREDICT = "/model/predict"


def quick_client(urls: list[str], *, retries: int = 2) -> MaxEmbedder:
    """A client with a short backoff, so failing tests stay quick."""
    return MaxEmbedder(urls, timeout_s=5.0, retries=retries, backoff_s=0.01)


@pytest.fixture(scope="module")
def server(server_loop: LoopThread, local_embedder: LocalEmbedder) -> Iterator[Served]:
    with serving(server_loop, make_app(local_embedder)) as served:
        yield served


@pytest.fixture(scope="module")
def second_server(server_loop: LoopThread, local_embedder: LocalEmbedder) -> Iterator[Served]:
    with serving(server_loop, make_app(local_embedder)) as served:
        yield served


@dataclass
class Reply:
    status: int = 200
    body: str = "{}"
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def canned(server_loop: LoopThread) -> Iterator[tuple[Served, Reply]]:
    """A server answering whatever its ``Reply`` says at the time."""
    reply = Reply()

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            status=reply.status, text=reply.body, content_type="application/json", headers=reply.headers
        )

    with serving(server_loop, tiny_app(handler)) as served:
        yield served, reply


def assert_hides(err: BaseException, *served: Served | str) -> None:
    """User-facing messages never name an internal server."""
    text = str(err)
    assert "127.0.0.1" not in text and "http" not in text
    for s in served:
        url = s if isinstance(s, str) else s.url
        assert url.rsplit(":", 1)[1] not in text


def test_matches_local_embedder_exactly(server: Served, local_embedder: LocalEmbedder) -> None:
    clip = int16_clip(3.5, seed=1)
    assert np.array_equal(read_wav_bytes(to_wav_bytes(clip))[0], clip)  # the upload is lossless
    with MaxEmbedder([server.url]) as client:
        got = client.embed(clip)
    assert got.dtype == np.uint8 and got.shape == (3, 128)
    np.testing.assert_array_equal(got, local_embedder.embed(clip))


def test_resamples_to_16k_before_upload(server: Served, local_embedder: LocalEmbedder) -> None:
    clip = int16_clip(2.5, rate=44100, seed=2)
    with MaxEmbedder([server.url]) as client:
        got = client.embed(clip, 44100)
    # What the server received: the 16 kHz resampled clip as 16-bit PCM, which is what the local embedder embeds.
    sent, rate = read_wav_bytes(to_wav_bytes(vggish_pcm(clip, 44100) / 32768, 16000))
    assert rate == 16000
    np.testing.assert_array_equal(got, local_embedder.embed(sent, 16000))
    np.testing.assert_array_equal(got, local_embedder.embed(clip, 44100))  # issue 26: exactly, not nearly


def test_stereo_and_short_clips(server: Served, local_embedder: LocalEmbedder) -> None:
    stereo = int16_clip(1.2, channels=2, seed=4)
    with MaxEmbedder([server.url]) as client:
        got = client.embed(stereo)
        before = server.count(PREDICT)
        short = client.embed(int16_clip(0.9))
    np.testing.assert_array_equal(got, local_embedder.embed(stereo))
    assert short.dtype == np.uint8 and short.shape == (0, 128)
    assert server.count(PREDICT) == before  # under one example (0.975 s): zero rows, known without asking


def test_async_api_and_sync_call_inside_a_running_loop(server: Served) -> None:
    clip = int16_clip(1.5, seed=5)
    client = MaxEmbedder([server.url])
    threads_before = set(threading.enumerate())

    async def main() -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
        async with client:
            from_async = await client.embed_async(clip)
            # A blocking call from a coroutine must not deadlock: it runs on the client's own loop thread.
            from_sync = client.embed(clip)
            meta = await client.metadata()
        return from_async, from_sync, meta

    from_async, from_sync, meta = asyncio.run(main())
    np.testing.assert_array_equal(from_async, from_sync)
    assert from_async.shape == (1, 128)
    assert meta["id"] == "audio_embeddings-tf"
    # Leaving the context closed both sessions and stopped the client's loop thread.
    assert not any(t.name == "musrec-max-client" for t in set(threading.enumerate()) - threads_before)


def test_round_robin_across_servers(server: Served, second_server: Served) -> None:
    clip = int16_clip(1.0, seed=6)
    before = (server.count(PREDICT), second_server.count(PREDICT))
    with MaxEmbedder([server.url, second_server.url]) as client:
        results = [client.embed(clip) for _ in range(4)]
        # Concurrent callers from several threads share the client.
        with ThreadPoolExecutor(2) as pool:
            results += list(pool.map(lambda _: client.embed(clip), range(2)))
    assert all(np.array_equal(r, results[0]) for r in results)
    assert (server.count(PREDICT) - before[0], second_server.count(PREDICT) - before[1]) == (3, 3)


def test_dead_first_server_is_skipped(server: Served) -> None:
    clip = int16_clip(1.0, seed=7)
    before = server.count(PREDICT)
    with quick_client([dead_url(), server.url], retries=1) as client:
        got = client.embed(clip)
    assert got.shape == (1, 128)
    assert server.count(PREDICT) == before + 1


def test_all_servers_dead_is_a_short_user_safe_error() -> None:
    dead = [dead_url(), dead_url()]
    with quick_client(dead, retries=3) as client, pytest.raises(EmbedderError) as info:
        client.embed(int16_clip(1.0))
    assert str(info.value) == MSG_UNAVAILABLE
    assert info.value.expected
    assert_hides(info.value, *dead)


def test_500_moves_on_to_the_next_server(server: Served, server_loop: LoopThread) -> None:
    async def fail(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"message": "Internal Server Error"}, status=500)

    with serving(server_loop, tiny_app(fail)) as failing:
        before = server.count(PREDICT)
        with quick_client([failing.url, server.url], retries=1) as client:
            got = client.embed(int16_clip(1.0, seed=8))
        assert got.shape == (1, 128)
        assert (failing.count(PREDICT), server.count(PREDICT) - before) == (1, 1)

        with quick_client([failing.url], retries=2) as client, pytest.raises(EmbedderError) as info:
            client.embed(int16_clip(1.0))
        assert failing.count(PREDICT) == 4  # 1 above + 3 attempts here
        assert str(info.value) == MSG_UNAVAILABLE
        assert_hides(info.value, failing)


@pytest.mark.parametrize(
    ("limits", "seconds", "error", "message"),
    [
        (AudioLimits(max_duration_s=2.0), 3.0, TooLongError, MSG_TOO_LARGE),
        (AudioLimits(min_duration_s=1.0), 0.98, TooShortError, MSG_TOO_SHORT),
    ],
    ids=["413-too-long", "422-too-short"],
)
def test_a_refusal_from_the_first_server_is_final(
    server: Served,
    server_loop: LoopThread,
    local_embedder: LocalEmbedder,
    limits: AudioLimits,
    seconds: float,
    error: type[MusrecError],
    message: str,
) -> None:
    """Issue 14: a clip the server refuses is refused by every server; asking the next one only multiplies it."""
    with serving(server_loop, make_app(local_embedder, limits=limits)) as strict:
        before = server.count(PREDICT)
        with quick_client([strict.url, server.url], retries=2) as client, pytest.raises(error) as info:
            client.embed(int16_clip(seconds))
        assert (strict.count(PREDICT), server.count(PREDICT) - before) == (1, 0)  # one request in total
    assert str(info.value) == message and "\n" not in message
    assert info.value.expected
    assert_hides(info.value, strict, server)


FINAL_ANSWERS: dict[int, type[MusrecError]] = {
    400: EmbedderError,
    404: EmbedderError,
    405: EmbedderError,
    408: EmbedderError,
    415: EmbedderError,
    422: TooShortError,
    429: EmbedderError,
}


@pytest.mark.parametrize("status", sorted(FINAL_ANSWERS))
def test_no_4xx_is_retried(status: int, server: Served, canned: tuple[Served, Reply]) -> None:
    bad, reply = canned
    reply.status, reply.body = status, json.dumps({"status": "error", "message": "refused"})
    before = server.count(PREDICT)
    with quick_client([bad.url, server.url], retries=3) as client, pytest.raises(FINAL_ANSWERS[status]) as info:
        client.embed(int16_clip(1.0))
    assert (bad.count(PREDICT), server.count(PREDICT)) == (1, before)
    assert len(str(info.value).splitlines()) == 1
    if FINAL_ANSWERS[status] is EmbedderError:
        assert f"HTTP {status}" in str(info.value)
    assert_hides(info.value, bad, server)


def test_413_is_too_long(canned: tuple[Served, Reply]) -> None:
    big, reply = canned
    reply.status, reply.body = 413, json.dumps({"status": "error", "message": "too large"})
    with quick_client([big.url]) as client, pytest.raises(TooLongError) as info:
        client.embed(int16_clip(1.0))
    assert_hides(info.value, big)


def test_timeout_is_an_error_not_a_hang(server_loop: LoopThread) -> None:
    async def sleepy(request: web.Request) -> web.Response:
        await asyncio.sleep(3.0)  # cancelled when the client gives up
        return web.json_response({"status": "ok", "embedding": []})

    with (
        serving(server_loop, tiny_app(sleepy)) as slow,
        MaxEmbedder([slow.url], timeout_s=0.3, retries=1, backoff_s=0.01) as client,
        pytest.raises(EmbedderError) as info,
    ):
        client.embed(int16_clip(1.0))
    # The server would have answered "ok" after 3 s: the timeout message shows the client gave up first.
    assert str(info.value) == MSG_TIMEOUT
    assert_hides(info.value, slow)


def test_redirects_are_not_followed(server: Served, canned: tuple[Served, Reply]) -> None:
    moved, reply = canned
    reply.status, reply.headers = 307, {"Location": server.url + PREDICT}
    before = server.count(PREDICT)
    with quick_client([moved.url]) as client, pytest.raises(EmbedderError) as info:
        client.embed(int16_clip(1.0))
    assert str(info.value) == MSG_INVALID
    assert server.count(PREDICT) == before
    assert_hides(info.value, moved, server)


def test_close_ends_calls_in_flight(server_loop: LoopThread) -> None:
    entered = threading.Event()

    async def stuck(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.sleep(3.0)  # cancelled when the client goes away
        return web.json_response({"status": "ok", "embedding": []})

    with serving(server_loop, tiny_app(stuck)) as slow:
        client = quick_client([slow.url])
        outcome: list[Exception | None] = []

        def call() -> None:
            try:
                client.embed(int16_clip(1.0))
                outcome.append(None)
            except Exception as err:
                outcome.append(err)

        caller = threading.Thread(target=call)
        caller.start()
        assert entered.wait(WAIT_S)
        client.close()
        caller.join(WAIT_S)
        assert not caller.is_alive()  # the server never answers: only close() can have ended the call
    assert len(outcome) == 1 and isinstance(outcome[0], EmbedderError)
    assert str(outcome[0]) == MSG_CLOSED


ROW = [158.0] * 128
INVALID_BODIES = {
    "not json": "<html>Bad gateway</html>",
    "json list": json.dumps([ROW]),
    "status error": json.dumps({"status": "error", "embedding": [ROW]}),
    "no status": json.dumps({"embedding": [ROW]}),
    "no embedding": json.dumps({"status": "ok"}),
    "embedding not a list": json.dumps({"status": "ok", "embedding": "158"}),
    "flat row": json.dumps({"status": "ok", "embedding": ROW}),
    "short row": json.dumps({"status": "ok", "embedding": [ROW[:127]]}),
    "long row": json.dumps({"status": "ok", "embedding": [[*ROW, 1.0]]}),
    "ragged": json.dumps({"status": "ok", "embedding": [ROW, ROW[:64]]}),
    "above 255": json.dumps({"status": "ok", "embedding": [[*ROW[:-1], 256.0]]}),
    "negative": json.dumps({"status": "ok", "embedding": [[*ROW[:-1], -1.0]]}),
    "fraction": json.dumps({"status": "ok", "embedding": [[*ROW[:-1], 1.5]]}),
    "string value": json.dumps({"status": "ok", "embedding": [[*ROW[:-1], "158"]]}),
    "bool value": json.dumps({"status": "ok", "embedding": [[*ROW[:-1], True]]}),
    "null value": json.dumps({"status": "ok", "embedding": [[*ROW[:-1], None]]}),
    "nan": json.dumps({"status": "ok", "embedding": [[*ROW[:-1], float("nan")]]}),
    "infinity": json.dumps({"status": "ok", "embedding": [[*ROW[:-1], float("inf")]]}),
    "huge int": '{"status": "ok", "embedding": [[' + ", ".join(["1" + "0" * 400] * 128) + "]]}",
}


def test_invalid_response_bodies_are_rejected(canned: tuple[Served, Reply]) -> None:
    bad, reply = canned
    with quick_client([bad.url], retries=0) as client:
        for name, body in INVALID_BODIES.items():
            reply.body = body
            with pytest.raises(EmbedderError) as info:
                client.embed(int16_clip(1.0))
            assert str(info.value) == MSG_INVALID, name
            assert_hides(info.value, bad)
        reply.body = "[1, 2]"

        async def metadata() -> None:
            async with client:
                await client.metadata()

        with pytest.raises(EmbedderError):
            asyncio.run(metadata())
    assert bad.count(PREDICT) == len(INVALID_BODIES)  # invalid answers are not retried


def test_valid_bodies_accept_floats_and_ints(canned: tuple[Served, Reply]) -> None:
    good, reply = canned
    reply.body = json.dumps({"status": "ok", "embedding": [ROW, [0] * 64 + [255] * 64]})
    with quick_client([good.url]) as client:
        got = client.embed(int16_clip(2.0))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.array([ROW, [0] * 64 + [255] * 64], dtype=np.uint8))
    assert parse_embedding({"status": "ok", "embedding": []}).shape == (0, 128)


def test_constructor_validates_its_options() -> None:
    with pytest.raises(TypeError):
        MaxEmbedder("http://max:5000")  # type: ignore[arg-type]
    for urls, kwargs in [
        ([], {}),
        (["max:5000"], {}),
        (["http://max:5000"], {"timeout_s": 0}),
        (["http://max:5000"], {"retries": -1}),
        (["http://max:5000"], {"backoff_s": -1.0}),
    ]:
        with pytest.raises(ValueError):
            MaxEmbedder(urls, **kwargs)  # type: ignore[arg-type]
    assert MaxEmbedder(["http://max:5000/ "]).urls == ("http://max:5000",)
