"""A bounded queue for model work: a few workers, a limit on waiting requests, one request per user at a time.

Model work (decoding, VGGish, downloads) runs in worker threads, never on the event loop, so the gateway heartbeat
keeps beating however busy the bot is. TensorFlow, numpy and ffmpeg release the GIL while they work.

What it promises (each is tested on the Discord stand-in, tests/test_bot_queue.py and tests/test_bot_load.py):

- a user has one request in the system at a time, and ``cooldown_s`` passes between the admissions of two;
- at most ``max_waiting`` requests wait for a worker; beyond that users are told at once, with their place;
- a free worker goes to the waiting request admitted first (first come, first served), whichever reached the
  worker first (attachments download at different speeds);
- a request is given up after ``timeout_s``; its thread cannot be stopped, so its worker counts as busy until the
  thread ends, and the queue never promises a worker it does not have.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.errors import RESTARTING
from musrec.config import BotConfig
from musrec.errors import BusyError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Ticket:
    """A request admitted to the queue: whose it is, its place in arrival order, and how many were ahead of it."""

    user_id: int
    number: int
    ahead: int


class WorkQueue:
    def __init__(
        self,
        *,
        workers: int,
        max_waiting: int,
        cooldown_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workers = workers
        self.max_waiting = max_waiting
        self.cooldown_s = cooldown_s
        self.timeout_s = timeout_s  # how long a request may take, waiting included (the cogs give up after it)
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="musrec-work")
        self._numbers = itertools.count()
        self._admitted: dict[int, Ticket] = {}  # by user: the requests in the system
        self._admitted_at: OrderedDict[int, float] = OrderedDict()  # by user, oldest first; only within cooldown_s
        self._busy = 0  # workers running a job, given-up requests' jobs included
        self._abandoned = 0  # jobs still running for requests that gave up
        self._turns: list[tuple[int, asyncio.Future[None]]] = []  # requests waiting for a worker, by ticket number
        self._stopped = False  # the bot is shutting down: nothing more is admitted

    @classmethod
    def from_config(cls, config: BotConfig) -> WorkQueue:
        return cls(
            workers=config.workers,
            max_waiting=config.max_waiting,
            cooldown_s=config.cooldown_s,
            timeout_s=config.answer_timeout_s,
        )

    def admit(self, user_id: int) -> Ticket:
        """Reserve a place for ``user_id``, before any work or download.

        Raises BusyError when the user already has a request in the system, asked too recently, or the queue is full,
        and once the bot is shutting down (:meth:`stop_admitting`).
        """
        if self._stopped:
            raise BusyError(RESTARTING)
        if user_id in self._admitted:
            raise BusyError("you already have a request in progress: wait for its answer first")
        now = self._clock()
        while self._admitted_at and next(iter(self._admitted_at.values())) <= now - self.cooldown_s:
            self._admitted_at.popitem(last=False)  # memory stays bounded by the users of the last cooldown_s
        last = self._admitted_at.get(user_id)
        if last is not None:
            wait = math.ceil(self.cooldown_s - (now - last))  # rounded up: after waiting that long, it is accepted
            raise BusyError(f"please wait {wait} s before your next request")
        ahead = max(0, len(self._admitted) + self._abandoned - self.workers + 1)
        if ahead > self.max_waiting:
            raise BusyError(
                f"I'm busy right now: you would be number {ahead + 1} in the queue, which is full. "
                "Try again in a minute"
            )
        ticket = Ticket(user_id=user_id, number=next(self._numbers), ahead=ahead)
        self._admitted[user_id] = ticket
        if self.cooldown_s > 0:
            self._admitted_at[user_id] = now
        return ticket

    def release(self, ticket: Ticket) -> None:
        """The request left the system (answered, refused or given up)."""
        if self._admitted.get(ticket.user_id) is ticket:
            del self._admitted[ticket.user_id]

    async def run(self, ticket: Ticket, fn: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        """Run ``fn`` in a worker thread once a worker is free and no request admitted earlier waits for one."""
        await self._worker(ticket)
        job = asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.shield(job)
        finally:
            if job.done():
                self._hand_on()
            else:  # the request gave up (its timeout, the bot closing) while its thread works on
                self._abandoned += 1
                job.add_done_callback(self._abandoned_job_ended)

    async def _worker(self, ticket: Ticket) -> None:
        if self._busy < self.workers:
            self._busy += 1
            return
        turn = asyncio.get_running_loop().create_future()
        heapq.heappush(self._turns, (ticket.number, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # given the worker as it gave up: pass it on
                self._hand_on()
            else:
                self._turns.remove((ticket.number, turn))
                heapq.heapify(self._turns)
            raise

    def _hand_on(self) -> None:
        """A worker is free: to the earliest-admitted request waiting for one, else idle."""
        while self._turns:
            _, turn = heapq.heappop(self._turns)
            if not turn.done():
                turn.set_result(None)
                return
        self._busy -= 1

    def _abandoned_job_ended(self, job: asyncio.Future[Any]) -> None:
        self._abandoned -= 1
        self._hand_on()
        if not job.cancelled() and job.exception() is not None:  # retrieved here: nobody waits for it any more
            log.info("a request that was given up ended with %s", type(job.exception()).__name__)

    @property
    def pending(self) -> int:
        """Requests in the system: working, waiting, or downloading what they need."""
        return len(self._admitted)

    @property
    def waiting(self) -> int:
        """Requests waiting for a worker."""
        return sum(not turn.done() for _, turn in self._turns)

    @property
    def busy(self) -> int:
        """Workers running a job, those of requests that gave up included."""
        return self._busy

    def stop_admitting(self) -> None:
        """The bot is shutting down: a request that comes now is told so at once, before anything shows it as
        being worked on (a "thinking" message the closing connection could leave behind)."""
        self._stopped = True

    def shutdown(self) -> None:
        self._stopped = True
        self._executor.shutdown(wait=False, cancel_futures=True)
