"""Checking videos within a time budget: what the store knows at once, the rest asked of YouTube concurrently.

:meth:`VideoChecker.statuses` answers by a deadline: states the store holds, and those YouTube gave in time. A
check still running at the deadline goes on in the background (its video is shown unchecked this time) and its
state is stored for the next answer, so a slow or unreachable YouTube delays an answer by the budget at most.
Checks run on a few daemon threads (``concurrency``): a command that exits does not wait for them. A video asked
for while its check runs joins that check rather than starting another.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Container, Iterable, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from musrec.videos import status
from musrec.videos.dataapi import DataApiSource
from musrec.videos.oembed import OEmbedSource
from musrec.videos.status import API_KEY_ENV, UNKNOWN, VideoStatus
from musrec.videos.store import DAY_S, StoreCounts, VideoStore

log = logging.getLogger(__name__)

MAX_PENDING = 1_000  # videos whose checks may wait for a thread; beyond that an answer shows them unchecked
MEMO_SIZE = 20_000  # states also held in memory, most recently used: a warm answer reads no file

Statuses = dict[str, VideoStatus]


@dataclass(frozen=True, kw_only=True)
class VideoOptions:
    """How videos are checked (``[videos]`` in the configuration, which adds the checks of its values)."""

    check: bool = True  # False: nothing is checked (offline use); matches are shown as the index has them
    # YouTube's endpoints, read when an options object is made (tests point them at a stand-in).
    oembed_url: str = field(default_factory=lambda: status.YOUTUBE_OEMBED_URL)
    api_url: str = field(default_factory=lambda: status.YOUTUBE_DATA_API_URL)
    budget_s: float = 1.5  # what checking may add to an answer, at most
    timeout_s: float = 10.0  # one request to YouTube (a check past the budget goes on in the background)
    concurrency: int = 8  # requests to YouTube at once
    alive_days: float = 30.0  # how long a video seen alive is believed alive
    gone_days: float = 365.0  # how long a video seen gone is believed gone
    rate_per_s: float = 5.0  # requests a second when `musrec videos check` goes through the whole index
    cache_path: Path | None = None  # None: <data dir>/videos.sqlite3


class Source(Protocol):
    """Where states come from: ``check`` never raises (unknown when it cannot tell); ``batch`` videos per call."""

    batch: int

    def check(self, video_ids: Sequence[str]) -> list[VideoStatus]: ...


class VideoChecker:
    """A source of states, the store that keeps them, and the threads that ask (see the module docstring)."""

    def __init__(self, source: Source, store: VideoStore, *, concurrency: int = 8) -> None:
        self.source = source
        self.store = store
        self._jobs: queue.SimpleQueue[tuple[Future[Statuses], list[str]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._concurrency = concurrency
        self._pending: dict[str, Future[Statuses]] = {}
        self._memo: OrderedDict[str, VideoStatus] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_config(
        cls, options: VideoOptions, *, path: Path, environ: Mapping[str, str] | None = None
    ) -> VideoChecker:
        """The Data API when ``MUSREC_YOUTUBE_API_KEY`` is set in ``environ`` (default: the process's), else
        oEmbed; the store at ``path``."""
        env = os.environ if environ is None else environ
        key = env.get(API_KEY_ENV, "").strip()
        source: Source
        if key:
            source = DataApiSource(options.api_url, key=key, timeout_s=options.timeout_s)
        else:
            source = OEmbedSource(options.oembed_url, timeout_s=options.timeout_s)
        store = VideoStore(path, alive_s=options.alive_days * DAY_S, gone_s=options.gone_days * DAY_S)
        return cls(source, store, concurrency=options.concurrency)

    @property
    def gone(self) -> Container[str]:
        """The videos known in memory to be gone, for a search to pass over (``video_id in checker.gone``): what
        :meth:`known` or :meth:`statuses` last read of them, while it has not expired."""
        return _KnownGone(self._memo, self.store)

    def known(self, video_ids: Sequence[str]) -> Statuses:
        """What is known of ``video_ids`` now, from memory and the store, without asking YouTube."""
        ids = list(dict.fromkeys(video_ids))
        known = self._recalled(ids)
        if len(known) < len(ids):
            stored = self.store.get_many([i for i in ids if i not in known])
            self._remember(stored.values())
            known.update(stored)
        return known

    def statuses(self, video_ids: Sequence[str], *, deadline: float) -> Statuses:
        """What is known of ``video_ids`` by ``deadline`` (``time.monotonic()``): stored states, then those checked
        in time; the others are missing, their checks still running."""
        ids = list(dict.fromkeys(video_ids))
        known = self.known(ids)
        waiting = self._start([i for i in ids if i not in known])
        if waiting:
            wait(waiting, timeout=max(0.0, deadline - time.monotonic()))
        for future in waiting:
            if future.done() and future.exception() is None:
                known.update({k: v for k, v in future.result().items() if k in ids and v.state != UNKNOWN})
        return known

    def check_now(self, video_ids: Sequence[str]) -> list[VideoStatus]:
        """Ask the source about ``video_ids`` in this thread and store what it says (the whole-index check)."""
        statuses = self.source.check(video_ids)
        self.store.put_many(statuses)
        self._remember(statuses)
        return statuses

    def counts(self) -> StoreCounts:
        return self.store.counts()

    def close(self) -> None:
        """Stop taking checks and release the store; running checks end on their own (their states not kept)."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)
        self.store.close()

    def _recalled(self, ids: list[str]) -> Statuses:
        """The states of ``ids`` held in memory and not expired (the store's lifetimes)."""
        now, found = time.time(), {}
        with self._lock:
            for video_id in ids:
                status = self._memo.get(video_id)
                if status is None:
                    continue
                if self.store.unexpired(status, now):
                    self._memo.move_to_end(video_id)
                    found[video_id] = status
                else:  # the memo holds checked states only (_remember): this one has expired
                    del self._memo[video_id]
        return found

    def _remember(self, statuses: Iterable[VideoStatus]) -> None:
        with self._lock:
            for status in statuses:
                if status.state != UNKNOWN and status.checked_at is not None:
                    self._memo[status.video_id] = status
                    self._memo.move_to_end(status.video_id)
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)

    def _start(self, ids: list[str]) -> list[Future[Statuses]]:
        """The checks of ``ids``: running ones joined, new ones queued in batches of the source's size."""
        futures: dict[int, Future[Statuses]] = {}
        fresh: list[str] = []
        with self._lock:
            for video_id in ids:
                running = self._pending.get(video_id)
                if running is not None:
                    futures[id(running)] = running
                elif not self._closed and len(self._pending) < MAX_PENDING:
                    fresh.append(video_id)
            for lo in range(0, len(fresh), self.source.batch):
                batch = fresh[lo : lo + self.source.batch]
                future: Future[Statuses] = Future()
                for video_id in batch:
                    self._pending[video_id] = future
                futures[id(future)] = future
                self._jobs.put((future, batch))
                if len(self._threads) < self._concurrency:
                    thread = threading.Thread(target=self._work, name="musrec-videos", daemon=True)
                    thread.start()
                    self._threads.append(thread)
        return list(futures.values())

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, batch = job
            try:
                statuses = self.source.check(batch)
                self.store.put_many(statuses)
                self._remember(statuses)
                future.set_result({s.video_id: s for s in statuses})
            except BaseException as err:  # a bug in a source: its videos stay unknown, the thread lives on
                log.exception("checking %d videos failed", len(batch))
                future.set_exception(err)
            finally:
                with self._lock:
                    for video_id in batch:
                        if self._pending.get(video_id) is future:
                            del self._pending[video_id]


class _KnownGone(Container[str]):
    """``video_id in`` it: the video is known in memory to be gone, and that has not expired
    (:attr:`VideoChecker.gone`)."""

    def __init__(self, memo: Mapping[str, VideoStatus], store: VideoStore) -> None:
        self._memo = memo
        self._store = store

    def __contains__(self, video_id: object) -> bool:
        status = self._memo.get(video_id) if isinstance(video_id, str) else None  # one read: no lock needed
        return status is not None and status.gone and self._store.unexpired(status, time.time())
