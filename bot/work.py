"""A bounded queue for model work: a few workers, a limit on waiting requests, one request per user at a time.

Model work (decoding, VGGish, downloads) runs in worker threads, never on the event loop, so the gateway heartbeat
keeps beating however busy the bot is. TensorFlow, numpy and ffmpeg release the GIL while they work.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from musrec.errors import BusyError

T = TypeVar("T")


class WorkQueue:
    def __init__(self, *, workers: int, max_waiting: int, cooldown_s: float) -> None:
        self.workers = workers
        self.max_waiting = max_waiting
        self.cooldown_s = cooldown_s
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="musrec-work")
        self._slots: asyncio.Semaphore | None = None
        self._admitted: list[int] = []  # users with a request in the system, in arrival order
        self._last_start: dict[int, float] = {}

    def admit(self, user_id: int) -> int:
        """Reserve a place for ``user_id``; returns how many requests are ahead of it in the queue.

        Raises BusyError when the user already has a request in the system, asked too recently, or the queue is full.
        """
        if user_id in self._admitted:
            raise BusyError("you already have a request in progress: wait for its answer first")
        last = self._last_start.get(user_id)
        now = time.monotonic()
        if last is not None and now - last < self.cooldown_s:
            wait = max(1, round(self.cooldown_s - (now - last)))
            raise BusyError(f"please wait {wait} s before your next request")
        ahead = max(0, len(self._admitted) - self.workers + 1)
        if ahead > self.max_waiting:
            raise BusyError(
                f"I'm busy right now: you would be number {ahead + 1} in the queue, which is full. "
                "Try again in a minute"
            )
        self._admitted.append(user_id)
        self._last_start[user_id] = now
        return ahead

    def release(self, user_id: int) -> None:
        with contextlib.suppress(ValueError):
            self._admitted.remove(user_id)

    async def run(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        """Run ``fn`` in a worker thread once a worker is free."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    @property
    def pending(self) -> int:
        return len(self._admitted)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
