"""What the cogs and buttons need from the bot that hosts them: its configuration, its work queue, the musrec
pipeline, the servers' libraries, the searches behind result messages, the HTTP session attachments are downloaded
with and the directory they wait in.

The cogs see the bot through this protocol, never through its class, so the bot may import the cogs to register
them without an import circle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp

from bot.libraries import ServerLibraries
from bot.queries import QueryStore
from bot.spool import Spool
from bot.work import WorkQueue
from musrec.config import Config
from musrec.pipeline import Musrec

# How to tell a request's user something after the fact (a shutdown dropping it), where the request came from.
Notify = Callable[[str], Awaitable[None]]
# The requests being answered, by task; None once the work is over and the answer is going out.
Answering = dict[asyncio.Task[None], Notify | None]


class Host(Protocol):
    config: Config
    queue: WorkQueue
    # The requests being answered, so that a shutdown can tell their users to send them again.
    answering: Answering

    @property
    def musrec(self) -> Musrec:
        """The loaded pipeline (RuntimeError before the bot's set-up finished)."""
        ...

    @property
    def downloads(self) -> aiohttp.ClientSession:
        """The session attachments are read with (RuntimeError before the bot's set-up finished)."""
        ...

    @property
    def queries(self) -> QueryStore:
        """The searches behind result messages' buttons (RuntimeError before the bot's set-up finished)."""
        ...

    @property
    def libraries(self) -> ServerLibraries:
        """Each server's library of its own tracks (RuntimeError before the bot's set-up finished)."""
        ...

    @property
    def spool(self) -> Spool:
        """Where attachments wait for a worker (RuntimeError before the bot's set-up finished)."""
        ...
