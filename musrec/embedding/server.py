"""``musrec serve``: a MAX-compatible embedding server.

It speaks the REST API of IBM's MAX Audio Embedding Generator, so existing MAX clients (and
:class:`~musrec.embedding.max_client.MaxEmbedder`) can use it unchanged:

- ``GET /model/metadata``: the model's metadata document.
- ``POST /model/predict``: multipart/form-data with a file field ``audio`` holding a signed 16-bit PCM WAV
  (any rate, any channels; the part's content type must match ``audio/.*wav``). Answers
  ``{"status": "ok", "embedding": [[158.0, ...], ...]}``, one row of 128 values in 0..255 per 0.96 s.
- ``GET /health``: a cheap liveness check for containers.

Error shapes and status codes follow MAX: a wrong content type is 400 ``{"status": "error", "message":
"Invalid file type/extension"}``, a missing field is 400 ``{"message": "Input payload validation failed",
"errors": {"audio": ...}}``, and audio that is not a 16-bit PCM WAV is 500 (MAX's status) with a JSON message.
Beyond MAX, a body over ``max_bytes`` is 413 and a full queue is 503, both with JSON messages.

The model runs in a thread pool of ``concurrency`` workers, never on the event loop, so a long clip does not
hold up metadata or health requests.

Which embedding space the server answers in is the embedder's choice: a ``LocalEmbedder(..., relu=True)``
reproduces MAX's post-activation output (IBM's server applies a ReLU to the embedding layer), while the
default ``relu=False`` gives the pre-activation embeddings of the AudioSet release, which is what musrec's
index holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

import numpy as np
from aiohttp import web

from musrec.audio.wav import read_wav_bytes
from musrec.errors import DecodeError, MusrecError

if TYPE_CHECKING:
    from musrec.embedding.local import Embedder

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000  # MAX's port
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # ~35 min of 16 kHz mono 16-bit audio
DEFAULT_CONCURRENCY = 1
DEFAULT_MAX_PENDING = 16
PREDICT_FIELD = "audio"
# MAX checks the part's content type with re.match, i.e. anchored at the start only.
WAV_CONTENT_TYPE = re.compile(r"audio/.*wav")

MODEL_NAME = "audio_embeddings"
MODEL_METADATA: dict[str, str] = {
    "id": f"{MODEL_NAME}-tf",
    "name": f"{MODEL_NAME} TensorFlow Model",
    "description": f"{MODEL_NAME} TensorFlow model trained on Audio Set",
    "type": "audio_embeddings",
    "license": "Apache 2.0",
    "source": "https://developer.ibm.com/exchanges/models/all/max-audio-embedding-generator/",
}

# The exact texts MAX (Flask-RESTPlus request parsing) answers with.
MSG_INVALID_TYPE = "Invalid file type/extension"
MSG_VALIDATION_FAILED = "Input payload validation failed"
MSG_MISSING_AUDIO = "signed 16-bit PCM WAV audio file Missing required parameter in an uploaded file"
MSG_INTERNAL = "Internal Server Error"
MSG_BUSY = "Server busy: too many requests in progress; try again shortly."
MSG_MALFORMED = "Malformed multipart/form-data body"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _ServerState:
    """Per-application state: the embedder, its worker pool and the count of predict requests in progress."""

    embedder: Embedder
    executor: ThreadPoolExecutor
    max_bytes: int
    max_in_flight: int
    in_flight: int = field(default=0)


_STATE = web.AppKey("musrec_server_state", _ServerState)


def make_app(
    embedder: Embedder,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_pending: int = DEFAULT_MAX_PENDING,
) -> web.Application:
    """Build the MAX-compatible application around a loaded ``embedder``.

    ``max_bytes`` bounds the uploaded audio (413 above it). ``concurrency`` is the number of clips embedded at
    once (worker threads); up to ``max_pending`` further predict requests wait for a worker, more are answered
    503 so a client with several servers moves on to another one.
    """
    if max_bytes <= 0 or concurrency < 1 or max_pending < 0:
        raise ValueError(
            f"need max_bytes > 0, concurrency >= 1 and max_pending >= 0, not {max_bytes}, {concurrency}, {max_pending}"
        )
    app = web.Application(client_max_size=max_bytes, middlewares=[_json_errors])
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="musrec-embed")
    app[_STATE] = _ServerState(
        embedder=embedder, executor=executor, max_bytes=max_bytes, max_in_flight=concurrency + max_pending
    )

    async def shutdown_executor(app: web.Application) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(shutdown_executor)
    app.router.add_get("/model/metadata", _metadata)
    app.router.add_post("/model/predict", _predict)
    app.router.add_get("/health", _health)
    return app


def run_server(
    embedder: Embedder,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_pending: int = DEFAULT_MAX_PENDING,
    warm_up: bool = True,
) -> None:
    """Serve the MAX-compatible API until interrupted (SIGINT/SIGTERM).

    With ``warm_up`` the embedder (if it has a ``warm_up()`` method) builds its graph before the port opens,
    so the first request is not slow and a health check does not pass before the model can answer.
    """
    warm = getattr(embedder, "warm_up", None)
    if warm_up and callable(warm):
        log.info("warming up the embedder")
        warm()
    app = make_app(embedder, max_bytes=max_bytes, concurrency=concurrency, max_pending=max_pending)
    log.info("serving the MAX audio embedding API on http://%s:%d", host, port)
    web.run_app(app, host=host, port=port, print=None, handle_signals=True)


# -- handlers --------------------------------------------------------------------------------------------


async def _metadata(request: web.Request) -> web.Response:
    return web.json_response(MODEL_METADATA)


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _predict(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    if state.in_flight >= state.max_in_flight:
        log.warning("predict refused: %d requests in progress", state.in_flight)
        return _error(503, MSG_BUSY)
    state.in_flight += 1
    try:
        return await _predict_counted(request, state)
    finally:
        state.in_flight -= 1


async def _predict_counted(request: web.Request, state: _ServerState) -> web.Response:
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"Request body too large: the limit is {state.max_bytes} bytes")
    except ValueError as err:  # aiohttp's multipart parser reports malformed bodies this way
        log.info("malformed predict body: %s", err)
        return _error(400, MSG_MALFORMED)
    handed_off: IO[bytes] | None = None  # the worker closes the file it reads, even after a cancellation
    try:
        # As in MAX, only a part with a filename counts as the uploaded file.
        upload = form.get(PREDICT_FIELD)
        if not isinstance(upload, web.FileField):
            return web.json_response(
                {"errors": {PREDICT_FIELD: MSG_MISSING_AUDIO}, "message": MSG_VALIDATION_FAILED}, status=400
            )
        if not WAV_CONTENT_TYPE.match(upload.content_type.lower()):
            return _error(400, MSG_INVALID_TYPE)
        loop = asyncio.get_running_loop()
        handed_off = upload.file
        try:
            body = await loop.run_in_executor(state.executor, _embed_upload, state.embedder, upload.file)
        except DecodeError as err:
            # MAX answers 500 for a body its WAV reader rejects; keep the status, say why.
            return _error(500, str(err))
        except MusrecError as err:
            if not err.expected:
                raise
            log.warning("predict failed: %s", err)
            return _error(500, str(err))
        return web.Response(body=body, content_type="application/json")
    finally:
        for value in form.values():
            if isinstance(value, web.FileField) and value.file is not handed_off:
                value.file.close()


def _embed_upload(embedder: Embedder, file: IO[bytes]) -> bytes:
    """Worker-thread part of a prediction: read the WAV, embed it, serialise the answer as MAX does."""
    with file:
        data = file.read()
    samples, sample_rate = read_wav_bytes(data)
    rows = np.asarray(embedder.embed(samples, sample_rate))
    # MAX marshals the values as floats: 158 -> 158.0.
    answer = {"status": "ok", "embedding": rows.astype(np.float64).tolist()}
    return json.dumps(answer).encode("utf-8")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"status": "error", "message": message}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer routing errors and unexpected failures with JSON bodies, as a Flask-RESTPlus server does."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _error(500, MSG_INTERNAL)


__all__ = ["MODEL_METADATA", "make_app", "run_server"]
