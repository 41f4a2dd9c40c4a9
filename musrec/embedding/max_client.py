"""Client for the MAX Audio Embedding Generator REST API (IBM's container, or ``musrec serve``).

:class:`MaxEmbedder` is an :class:`~musrec.embedding.base.Embedder` that sends audio to one or more MAX-compatible
servers instead of running VGGish in-process. Requests go round-robin over the servers; a connection error, a
timeout or a 5xx answer moves on to the next server after a short exponential backoff, at most ``retries``
extra attempts. A 4xx answer is final: the request itself is refused, and another server would refuse it too
(413 is a TooLongError, 422, ``musrec serve``'s answer to a clip under its minimum duration, a TooShortError).
Audio is sent as :func:`~musrec.embedding.base.vggish_pcm` gives it, a 16-kHz mono 16-bit PCM WAV: the samples the
in-process embedder embeds, so ``musrec serve`` answers exactly what :class:`~musrec.embedding.local.LocalEmbedder`
would, and the server does no resampling of its own. A clip too short for one VGGish example gives zero rows without
a request, as a MAX server would answer.

Note that IBM's MAX applies a ReLU to the embedding layer (post-activation) while the AudioSet release is
pre-activation: embeddings from an IBM container are not exactly in the space of the AudioSet index. A
``musrec serve`` backend answers in whichever space its embedder was built for.

Errors raised to callers are :class:`~musrec.errors.EmbedderError` with short, user-safe messages: they never
name a server. The details (URL, status, body excerpt) are logged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import math
import threading
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import numpy as np
import numpy.typing as npt

from musrec.audio.resample import TARGET_RATE
from musrec.audio.wav import INT16_SCALE, to_wav_bytes
from musrec.embedding.base import vggish_pcm
from musrec.errors import EmbedderError, TooLongError, TooShortError
from musrec.vggish.frontend import MIN_EXAMPLE_SAMPLES
from musrec.vggish.postprocess import EMBEDDING_SIZE

log = logging.getLogger(__name__)

PREDICT_PATH = "/model/predict"
METADATA_PATH = "/model/metadata"
FORM_FIELD = "audio"
UPLOAD_FILENAME = "clip.wav"
UPLOAD_CONTENT_TYPE = "audio/wav"
UINT8_MAX = 255
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF_S = 0.5
# How long close() waits for a session or the client's loop thread to shut down.
CLOSE_TIMEOUT_S = 5.0
# How much of an unexpected response body goes into the log.
LOG_BODY_CHARS = 200

MSG_UNAVAILABLE = "The embedding service is unavailable right now; try again in a moment."
MSG_TIMEOUT = "The embedding service took too long to answer; try again later or with a shorter clip."
MSG_INVALID = "The embedding service sent an invalid response."
MSG_TOO_LARGE = "The clip is too large for the embedding service; try a shorter one."
MSG_TOO_SHORT = "The clip is too short for the embedding service; try a longer one."
MSG_CLOSED = "The embedding service client was shut down."

T = TypeVar("T")

# Session closes scheduled from sync code, referenced until done so they are not garbage collected.
_closing: set[asyncio.Task[None]] = set()


class _RetryableError(Exception):
    """One attempt failed in a way another server (or a later try) may not."""

    def __init__(self, detail: str, *, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


class _LoopThread:
    """An event loop running in a daemon thread: the home of the sync API's requests and their session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="musrec-max-client", daemon=True)
        self.thread.start()
        self._lock = threading.Lock()
        self._stopping = False

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._stopping:
                coro.close()
                raise EmbedderError(MSG_CLOSED)
            return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, session: aiohttp.ClientSession | None) -> None:
        """Cancel requests in flight (their callers get EmbedderError), close ``session``, end the thread."""
        with self._lock:
            self._stopping = True
        try:
            asyncio.run_coroutine_threadsafe(_shut_down(session), self.loop).result(CLOSE_TIMEOUT_S)
        except (concurrent.futures.TimeoutError, aiohttp.ClientError, OSError) as err:
            log.debug("MAX client loop did not shut down cleanly: %r", err)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(CLOSE_TIMEOUT_S)
        if not self.thread.is_alive():
            self.loop.close()


async def _shut_down(session: aiohttp.ClientSession | None) -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if session is not None:
        await session.close()


class MaxEmbedder:
    """Embed audio with remote MAX Audio Embedding Generator servers.

    ``urls`` are server base URLs such as ``http://max:5000``. ``timeout_s`` bounds each attempt (connect,
    upload, model time and download); a call takes at most about ``(retries + 1) * timeout_s`` plus the
    backoff (``backoff_s``, doubled after each failed attempt).

    ``embed`` is synchronous and safe to call from any thread, including one running an event loop (it then
    blocks that loop: coroutines should ``await embed_async`` instead). Sessions are kept per event loop and
    reused; release them with :meth:`close` / :meth:`aclose` or by using the embedder as a (async) context
    manager.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
    ) -> None:
        if isinstance(urls, str):
            raise TypeError("urls must be a sequence of URLs, not one string")
        cleaned = tuple(url.strip().rstrip("/") for url in urls)
        if not cleaned:
            raise ValueError("at least one MAX server URL is required")
        for url in cleaned:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"MAX server URL must start with http:// or https://: {url!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if retries < 0 or backoff_s < 0:
            raise ValueError(f"retries and backoff_s must not be negative, got {retries} and {backoff_s}")
        self.urls = cleaned
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        # next() on itertools.count is atomic in CPython: concurrent callers still take turns.
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._loop_thread: _LoopThread | None = None

    def __repr__(self) -> str:
        return f"MaxEmbedder({len(self.urls)} server(s), timeout_s={self.timeout_s}, retries={self.retries})"

    # -- embedding ---------------------------------------------------------------------------------------

    def embed(self, samples: npt.NDArray[np.floating], sample_rate: int = TARGET_RATE) -> npt.NDArray[np.uint8]:
        """Float ``samples`` in [-1, 1] (1-D or [n_samples, channels]) -> [n, 128] uint8, a row per 0.96 s."""
        return self._run_sync(lambda: self.embed_async(samples, sample_rate))

    async def embed_async(
        self, samples: npt.NDArray[np.floating], sample_rate: int = TARGET_RATE
    ) -> npt.NDArray[np.uint8]:
        """Like :meth:`embed`, for callers already in an event loop; resampling runs in a worker thread."""
        wav = await asyncio.to_thread(_encode, samples, sample_rate)
        if wav is None:
            return np.zeros((0, EMBEDDING_SIZE), dtype=np.uint8)
        payload = await self._request("POST", PREDICT_PATH, wav)
        return parse_embedding(payload)

    async def metadata(self) -> dict[str, Any]:
        """The ``/model/metadata`` document of one server (in turn), e.g. for a health check."""
        payload = await self._request("GET", METADATA_PATH, None)
        if not isinstance(payload, dict):
            log.warning("MAX metadata is not a JSON object: %.200r", payload)
            raise EmbedderError(MSG_INVALID)
        return payload

    # -- lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every session this embedder opened and stop its loop thread. Later calls open new ones.

        Synchronous calls still in flight end with EmbedderError.
        """
        with self._lock:
            sessions = dict(self._sessions)
            self._sessions.clear()
            loop_thread, self._loop_thread = self._loop_thread, None
        if loop_thread is not None:
            loop_thread.stop(sessions.pop(loop_thread.loop, None))
        for loop, session in sessions.items():
            _close_session(loop, session)

    async def aclose(self) -> None:
        """Close the running loop's session here, everything else as :meth:`close` does (off this loop)."""
        with self._lock:
            session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()
        await asyncio.to_thread(self.close)

    def __enter__(self) -> MaxEmbedder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> MaxEmbedder:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- internals ---------------------------------------------------------------------------------------

    def _run_sync(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        with self._lock:
            if self._loop_thread is None:
                self._loop_thread = _LoopThread()
            loop_thread = self._loop_thread
        if threading.current_thread() is loop_thread.thread:
            raise RuntimeError("MaxEmbedder.embed() called on its own loop thread; await embed_async()")
        future = loop_thread.submit(make())
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise EmbedderError(MSG_CLOSED) from None
        except BaseException:
            future.cancel()
            raise

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        with self._lock:
            for other in [other for other in self._sessions if other.is_closed()]:
                log.debug("dropping the MAX client session of a closed event loop (close it with aclose())")
                del self._sessions[other]
            session = self._sessions.get(loop)
            if session is None or session.closed:
                session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
                self._sessions[loop] = session
            return session

    async def _request(self, method: str, path: str, wav: bytes | None) -> Any:
        """Send one request with round-robin, retries and backoff; return the decoded JSON body."""
        session = self._session()
        start = next(self._turn)
        last: _RetryableError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            url = self.urls[(start + attempt) % len(self.urls)]
            try:
                return await self._attempt(session, method, url + path, wav)
            except _RetryableError as err:
                last = err
                log.warning(
                    "MAX request %s %s failed (attempt %d of %d): %s",
                    method,
                    url + path,
                    attempt + 1,
                    self.retries + 1,
                    err,
                )
        raise EmbedderError(MSG_TIMEOUT if last is not None and last.timed_out else MSG_UNAVAILABLE)

    async def _attempt(self, session: aiohttp.ClientSession, method: str, url: str, wav: bytes | None) -> Any:
        data: aiohttp.FormData | None = None
        if wav is not None:
            data = aiohttp.FormData()
            data.add_field(FORM_FIELD, wav, filename=UPLOAD_FILENAME, content_type=UPLOAD_CONTENT_TYPE)
        try:
            # An internal service has no business redirecting; following could leak the upload elsewhere.
            async with session.request(method, url, data=data, allow_redirects=False) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            raise _RetryableError(f"no answer within {self.timeout_s:g} s", timed_out=True) from None
        except aiohttp.ClientError as err:
            raise _RetryableError(f"{type(err).__name__}: {err}") from None
        excerpt = body[:LOG_BODY_CHARS].decode("utf-8", "replace")
        if status >= 500:
            raise _RetryableError(f"HTTP {status}: {excerpt}")
        if status == 413:
            log.warning("MAX %s refused the upload as too large: %s", url, excerpt)
            raise TooLongError(MSG_TOO_LARGE)
        if status == 422:
            log.warning("MAX %s refused the upload as too short: %s", url, excerpt)
            raise TooShortError(MSG_TOO_SHORT)
        if status >= 400:
            log.warning("MAX %s answered HTTP %d: %s", url, status, excerpt)
            raise EmbedderError(f"The embedding service rejected the request (HTTP {status}).")
        if status != 200:
            log.warning("MAX %s answered unexpected HTTP %d: %s", url, status, excerpt)
            raise EmbedderError(MSG_INVALID)
        try:
            return json.loads(body)
        except ValueError:
            log.warning("MAX %s sent a body that is not JSON: %s", url, excerpt)
            raise EmbedderError(MSG_INVALID) from None


def _encode(samples: npt.NDArray[np.floating], sample_rate: int) -> bytes | None:
    """Float samples (1-D or [n_samples, channels]) at any rate -> the 16-bit PCM WAV of :func:`vggish_pcm`.

    None for a clip too short for one VGGish example: any server answers it with zero rows.
    """
    pcm = vggish_pcm(samples, sample_rate)
    if len(pcm) < MIN_EXAMPLE_SAMPLES:
        return None
    return to_wav_bytes(pcm / INT16_SCALE, TARGET_RATE)  # whole multiples of 1/32768: written back exactly


def _is_number(value: object) -> bool:
    return type(value) in (int, float)  # bool is an int subclass and not a number here


def parse_embedding(payload: Any) -> npt.NDArray[np.uint8]:
    """Validate a ``/model/predict`` JSON body strictly and return its embedding as [n, 128] uint8.

    Values must be whole numbers in 0..255 (MAX serialises them as floats such as ``158.0``).
    """
    if not isinstance(payload, dict) or payload.get("status") != "ok":
        raise _invalid("status is not ok", payload)
    rows = payload.get("embedding")
    if not isinstance(rows, list):
        raise _invalid("embedding is not a list", payload)
    for row in rows:
        if not isinstance(row, list) or len(row) != EMBEDDING_SIZE or not all(map(_is_number, row)):
            raise _invalid(f"a row is not {EMBEDDING_SIZE} numbers", row)
    if not rows:
        return np.zeros((0, EMBEDDING_SIZE), dtype=np.uint8)
    try:
        values = np.array(rows, dtype=np.float64)
    except OverflowError:
        raise _invalid("a value is out of range", payload) from None
    # NaN fails every comparison, so it is rejected with the out-of-range values.
    in_range = (values >= 0) & (values <= UINT8_MAX) & (np.floor(values) == values)
    if not in_range.all():
        bad = values[~in_range][0]
        raise _invalid("a value is not a whole number in 0..255", bad if math.isfinite(bad) else str(bad))
    return values.astype(np.uint8)


def _invalid(reason: str, detail: object) -> EmbedderError:
    log.warning("invalid MAX embedding response: %s: %.200r", reason, detail)
    return EmbedderError(MSG_INVALID)


def _close_session(loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession) -> None:
    """Close ``session`` on its own loop, wherever that loop is."""
    if loop.is_closed() or session.closed:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is running:
        # close() called from a coroutine on this loop (aclose() is the way there): finish in the background.
        task = loop.create_task(session.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    elif loop.is_running():
        future = asyncio.run_coroutine_threadsafe(session.close(), loop)
        try:
            future.result(CLOSE_TIMEOUT_S)
        except (concurrent.futures.TimeoutError, RuntimeError, aiohttp.ClientError) as err:
            log.debug("could not close a MAX client session: %r", err)
    elif running is None:
        loop.run_until_complete(session.close())
    else:
        log.debug("MAX client session left to its idle loop; it closes with that loop")


__all__ = ["MaxEmbedder", "parse_embedding"]
