"""``musrec serve``: a MAX-compatible embedding server.

It speaks the REST API of IBM's MAX Audio Embedding Generator, so existing MAX clients (and
:class:`~musrec.embedding.max_client.MaxEmbedder`) can use it unchanged:

- ``GET /model/metadata``: the model's metadata document.
- ``POST /model/predict``: multipart/form-data with a file field ``audio`` holding a signed 16-bit PCM WAV
  (any rate, any channels; the part's content type must match ``audio/.*wav``). Answers
  ``{"status": "ok", "embedding": [[158.0, ...], ...]}``, one row of 128 values in 0..255 per 0.96 s.
- ``GET /health``: a cheap liveness check for containers.

Error shapes follow MAX: a wrong content type is 400 ``{"status": "error", "message": "Invalid file
type/extension"}``, a missing field is 400 ``{"message": "Input payload validation failed", "errors": {"audio":
...}}``, and every other error is ``{"status": "error", "message": ...}`` with a message safe to show a user.

**Status codes differ from IBM's image for audio the server cannot use** (issue 14). IBM's server answers 500
for a body that is not a 16-bit PCM WAV; but a 5xx tells a client to retry, and MAX clients with several servers
(musrec's included) would send the same bad file to every one of them. Here a client error is a 4xx, and only the
server's own state is a 5xx:

- 400: not a WAV this server reads: not RIFF/WAVE, cut short, missing chunks, not 16-bit PCM, or a sample rate
  or channel count no recording has (:func:`musrec.audio.wav.check_format`); also an empty file or a malformed
  multipart body.
- 411 and 415: a body of unknown length (chunked) or a compressed one; both are refused before they are read.
- 413: too large (the request over ``max_bytes``, the file over ``limits.max_bytes``) or too long (over
  ``limits.max_duration_s`` of audio).
- 422: a readable WAV too short to embed (under ``limits.min_duration_s``; IBM's server answers an empty
  embedding for clips under 0.975 s).
- 503: busy (more than ``concurrency + max_pending`` predictions at once), with ``Retry-After``; a retry signal.
- 500: a failure of the server itself (a bug), never the input's fault.

The limits are those of :class:`~musrec.audio.limits.AudioLimits` (``musrec serve`` uses the ``[audio]``
section) and are checked against the WAV header before a sample is read, so a header claiming hours, or a rate
of 1 Hz, costs nothing. Memory is bounded by the limits: each of the ``concurrency`` workers holds at most one
clip within the limits; waiting requests hold only their upload (spooled to disk beyond 1 MiB). The form is read as
it arrives (:mod:`musrec.embedding.upload`): only the ``audio`` file is kept, other fields are read past and
dropped. Connections are capped and a request's head has a deadline (:mod:`musrec.embedding.listen`).

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
import math
import re
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

import numpy as np
from aiohttp import web

from musrec.audio.decode import read_wav
from musrec.audio.limits import AudioLimits
from musrec.embedding.listen import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS, listen, serve
from musrec.embedding.upload import BodyRefused, check_body, receive
from musrec.errors import DecodeError, MusrecError, TooLongError, TooShortError

if TYPE_CHECKING:
    from musrec.embedding.base import Embedder

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000  # MAX's port
DEFAULT_LIMITS = AudioLimits()
# What a multipart body adds around the file: boundaries and part headers, a few hundred bytes in practice.
FORM_OVERHEAD_BYTES = 64 * 1024
DEFAULT_CONCURRENCY = 1
DEFAULT_MAX_PENDING = 16
# A request holds one of the concurrency + max_pending places while its body arrives: a client trickling an upload
# must not keep it. 64 MiB at a slow 2 MB/s takes about 30 s.
DEFAULT_READ_TIMEOUT_S = 60.0
MSG_READ_TIMEOUT = "Request body not received in time"
RETRY_AFTER_S = 1  # what a busy answer suggests; a client with several servers moves on at once
BUSY_LOG_S = 60.0  # busy answers are logged as a count, at most this often
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
    limits: AudioLimits
    max_bytes: int
    max_in_flight: int
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    in_flight: int = field(default=0)
    refused: int = field(default=0)  # busy answers since the last log line about them
    refused_logged_at: float = field(default=-math.inf)

    def note_refusal(self) -> None:
        """Count a busy answer; log the count at most every BUSY_LOG_S (a flood of them is one line a minute)."""
        self.refused += 1
        now = time.monotonic()
        if now - self.refused_logged_at >= BUSY_LOG_S:
            log.warning(
                "predict refused %d time(s) since the last note: %d requests in progress (concurrency + max_pending)",
                self.refused,
                self.in_flight,
            )
            self.refused, self.refused_logged_at = 0, now


_STATE = web.AppKey("musrec_server_state", _ServerState)


def make_app(
    embedder: Embedder,
    *,
    limits: AudioLimits = DEFAULT_LIMITS,
    max_bytes: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_pending: int = DEFAULT_MAX_PENDING,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> web.Application:
    """Build the MAX-compatible application around a loaded ``embedder``.

    ``limits`` bound the uploaded audio: its size (413 above ``max_bytes``), its duration (413 above
    ``max_duration_s``, 422 below ``min_duration_s``). ``max_bytes`` bounds the whole request body (413 above it;
    default: the file limit plus room for the multipart framing). ``concurrency`` is the number of clips
    embedded at once (worker threads); up to ``max_pending`` further predict requests wait for a worker, more are
    answered 503 so a client with several servers moves on to another one. A body that has not fully arrived
    ``read_timeout_s`` after the request began is answered 408, and its place is free again.
    """
    body_limit = limits.max_bytes + FORM_OVERHEAD_BYTES if max_bytes is None else max_bytes
    if body_limit <= 0 or concurrency < 1 or max_pending < 0:
        raise ValueError(
            f"need max_bytes > 0, concurrency >= 1 and max_pending >= 0, not {body_limit}, {concurrency}, {max_pending}"
        )
    # client_max_size bounds the bodies aiohttp reads whole (none here: predict streams its own).
    app = web.Application(client_max_size=body_limit, middlewares=[_json_errors])
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="musrec-embed")
    app[_STATE] = _ServerState(
        embedder=embedder,
        executor=executor,
        limits=limits,
        max_bytes=body_limit,
        max_in_flight=concurrency + max_pending,
        read_timeout_s=read_timeout_s,
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
    sockets: Sequence[socket.socket] | None = None,
    limits: AudioLimits = DEFAULT_LIMITS,
    max_bytes: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    warm_up: bool = True,
) -> None:
    """Serve the MAX-compatible API until interrupted (SIGINT/SIGTERM).

    ``sockets`` are listening sockets from :func:`~musrec.embedding.listen.listen` (bind before loading a model, so
    a busy port is known at once); without them ``host`` and ``port`` are bound here (ConfigError if they cannot
    be). With ``warm_up`` the embedder (if it has a ``warm_up()`` method) builds its graph before connections are
    accepted, so the first request is not slow and a health check does not pass before the model can answer.
    ``max_connections`` and ``header_timeout_s`` bound open connections and the time a request's head may take
    (:mod:`musrec.embedding.listen`).
    """
    app = make_app(embedder, limits=limits, max_bytes=max_bytes, concurrency=concurrency, max_pending=max_pending)
    listening = list(sockets) if sockets is not None else listen(host, port)
    try:
        warm = getattr(embedder, "warm_up", None)
        if warm_up and callable(warm):
            log.info("warming up the embedder")
            warm()
        serve(
            app,
            listening,
            max_connections=max_connections,
            header_timeout_s=header_timeout_s,
            on_ready=lambda where: log.info("serving the MAX audio embedding API on %s", ", ".join(where)),
        )
    finally:
        for sock in listening:
            sock.close()


# -- handlers --------------------------------------------------------------------------------------------


async def _metadata(request: web.Request) -> web.Response:
    return web.json_response(MODEL_METADATA)


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _predict(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    if state.in_flight >= state.max_in_flight:
        state.note_refusal()
        busy = _error(503, MSG_BUSY)
        busy.headers["Retry-After"] = str(RETRY_AFTER_S)
        return busy  # aiohttp then reads the unread upload away (for a while), so the client sees this answer
    state.in_flight += 1
    try:
        return await _predict_counted(request, state)
    finally:
        state.in_flight -= 1


async def _predict_counted(request: web.Request, state: _ServerState) -> web.Response:
    try:
        check_body(request, max_bytes=state.max_bytes)
        async with asyncio.timeout(state.read_timeout_s):
            upload = await receive(
                request, field=PREDICT_FIELD, max_bytes=state.max_bytes, max_file_bytes=state.limits.max_bytes
            )
    except BodyRefused as refused:
        return _error(refused.status, str(refused))
    except TimeoutError:
        log.info("predict body not received within %.0f s", state.read_timeout_s)
        response = _error(408, MSG_READ_TIMEOUT)
        response.force_close()  # the rest of the body is not waited for
        return response
    except (ValueError, AssertionError, RuntimeError) as err:  # how aiohttp's multipart reader reports bad bodies
        log.info("malformed predict body: %s", err)
        return _error(400, MSG_MALFORMED)
    if upload is None:
        return web.json_response(
            {"errors": {PREDICT_FIELD: MSG_MISSING_AUDIO}, "message": MSG_VALIDATION_FAILED}, status=400
        )
    handed_off = False  # the worker closes the file it reads, even after a cancellation
    try:
        if not WAV_CONTENT_TYPE.match(upload.content_type.lower()):
            return _error(400, MSG_INVALID_TYPE)
        loop = asyncio.get_running_loop()
        handed_off = True
        try:
            body = await loop.run_in_executor(state.executor, _embed_upload, state.embedder, upload.file, state.limits)
        except (DecodeError, TooLongError, TooShortError) as err:
            # The input's fault: a 4xx, never a 5xx, which would send the same file to every other server.
            log.info("predict refused: %s", err)
            return _error(_input_status(err), str(err))
        except MusrecError as err:
            if not err.expected:
                raise
            log.warning("predict failed: %s", err)
            return _error(500, str(err))
        return web.Response(body=body, content_type="application/json")
    finally:
        if not handed_off:
            upload.file.close()


def _input_status(err: MusrecError) -> int:
    if isinstance(err, TooLongError):
        return 413
    if isinstance(err, TooShortError):
        return 422
    return 400


def _embed_upload(embedder: Embedder, file: IO[bytes], limits: AudioLimits) -> bytes:
    """Worker-thread part of a prediction: read the WAV within ``limits``, embed it, serialise as MAX does."""
    with file:
        data = file.read(limits.max_bytes + 1)  # one byte more tells "too large" from "at the limit"
    samples, sample_rate = read_wav(data, limits=limits)
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
