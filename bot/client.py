"""The bot object: loads the musrec pipeline once, in a thread, then serves commands from it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.buttons import DYNAMIC_ITEMS
from bot.cogs.admin import Admin
from bot.cogs.library import LibraryCommands
from bot.cogs.sounds import Sounds
from bot.errors import GENERIC, user_message
from bot.host import Answering
from bot.inputs import refusal
from bot.libraries import ServerLibraries
from bot.library_buttons import LIBRARY_ITEMS
from bot.queries import FILENAME, QueryStore
from bot.replies import drop_unanswered
from bot.spool import Spool
from bot.startup import Startup
from bot.work import WorkQueue
from musrec.config import Config
from musrec.configured import model_threads
from musrec.library import Library
from musrec.pipeline import Musrec

log = logging.getLogger(__name__)

# Attachments come from Discord's CDN over a connection of their own: no redirects, bounded waits (the request's
# own timeout bounds the whole download).
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=60.0)
SHUTDOWN_NOTICE_S = 5.0  # at most this long (twice: stopping, then telling) for requests dropped at shutdown


def intents_for(config: Config) -> discord.Intents:
    """Slash commands need no privileged intent; reading posted clips and links needs message content."""
    intents = discord.Intents.default()
    intents.message_content = bool(config.bot.listen_channels)
    return intents


class MusrecTree(app_commands.CommandTree[Any]):
    """Slash commands whose options the user got wrong are answered with the reason, and whose unexpected failures
    are logged with their traceback and answered generically."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        send = interaction.followup.send if interaction.response.is_done() else interaction.response.send_message
        refused = refusal(error)  # an option the user got wrong: say why, only to them, before any work
        if refused is None:
            log.error("command %s failed", interaction.command and interaction.command.name, exc_info=error)
        with contextlib.suppress(discord.HTTPException):
            await send(user_message(refused) if refused is not None else GENERIC, ephemeral=True)


class MusrecBot(commands.Bot):
    """The bot: its configuration, a work queue, and the pipeline, loaded in ``setup_hook`` off the event loop.

    ``queue`` replaces the one ``[bot]`` describes (tests inject one with a clock of their own or a short timeout).
    """

    def __init__(
        self,
        config: Config,
        *,
        musrec_factory: Callable[[], Musrec] | None = None,
        queue: WorkQueue | None = None,
        **options: Any,
    ) -> None:
        # What it asks Discord while it starts, seen by the start that watches it (bot/startup.py).
        self.startup = Startup()
        super().__init__(
            http_trace=self.startup.trace,
            command_prefix=commands.when_mentioned,
            intents=intents_for(config),
            help_command=None,
            tree_cls=MusrecTree,
            # Its messages quote what users sent (a file named "@everyone.mp3"): none of them may ping anyone.
            allowed_mentions=discord.AllowedMentions.none(),
            **options,
        )
        self.config = config
        self._musrec: Musrec | None = None
        self._factory = musrec_factory or (lambda: _load(config))
        self._downloads: aiohttp.ClientSession | None = None
        self._queries: QueryStore | None = None
        self._spool: Spool | None = None
        self._libraries: ServerLibraries | None = None
        self.queue = queue or WorkQueue.from_config(config.bot)
        self.answering: Answering = {}

    @property
    def musrec(self) -> Musrec:
        if self._musrec is None:
            raise RuntimeError("the musrec pipeline is not loaded yet")
        return self._musrec

    @property
    def downloads(self) -> aiohttp.ClientSession:
        if self._downloads is None:
            raise RuntimeError("the bot is not set up yet")
        return self._downloads

    @property
    def queries(self) -> QueryStore:
        if self._queries is None:
            raise RuntimeError("the bot is not set up yet")
        return self._queries

    @property
    def spool(self) -> Spool:
        if self._spool is None:
            raise RuntimeError("the bot is not set up yet")
        return self._spool

    @property
    def libraries(self) -> ServerLibraries:
        if self._libraries is None:
            raise RuntimeError("the bot is not set up yet")
        return self._libraries

    async def add_cogs(self) -> None:
        await self.add_cog(Sounds(self))
        await self.add_cog(Admin(self, self.config.bot))
        await self.add_cog(LibraryCommands(self))

    async def setup_hook(self) -> None:
        with self.startup.unbounded():  # loading the model takes what it takes: no deadline of Discord's
            await self._set_up()

    async def _set_up(self) -> None:
        # Loading TensorFlow and the model takes seconds: never on the event loop.
        self._musrec = await asyncio.to_thread(self._factory)
        self._downloads = aiohttp.ClientSession(
            timeout=DOWNLOAD_TIMEOUT, proxy=self.http.proxy, proxy_auth=self.http.proxy_auth
        )
        self._queries = await asyncio.to_thread(QueryStore, self.config.data_dir / FILENAME)
        self._spool = await asyncio.to_thread(Spool)
        # The servers' libraries share the loaded model; their store opens at the first library request.
        musrec, config = self._musrec, self.config
        self._libraries = ServerLibraries(
            lambda: Library.from_config(config, embedder=musrec.embedder), max_tracks=config.library.max_server_tracks
        )
        # The buttons of every result message, those sent before this start included.
        self.add_dynamic_items(*DYNAMIC_ITEMS, *LIBRARY_ITEMS)
        await self.add_cogs()
        log.info(
            "ready: %d segments, %s, %d workers of %d model threads",
            len(self.musrec.index),
            type(self.musrec.embedder).__name__,
            self.queue.workers,
            model_threads(self.config, self.queue.workers),
        )

    async def is_owner(self, user: discord.abc.User) -> bool:
        if str(user.id) in self.config.bot.owner_ids:
            return True
        return await super().is_owner(user)

    async def close(self) -> None:
        # Before the connection closes: the users of requests still being answered are told to send them again,
        # and those of requests that come meanwhile, at once.
        self.queue.stop_admitting()
        await drop_unanswered(self.answering, timeout_s=SHUTDOWN_NOTICE_S)
        self.queue.shutdown()
        await super().close()
        if self._downloads is not None:
            await self._downloads.close()
        if self._spool is not None:
            await asyncio.to_thread(self._spool.close)
        if self._libraries is not None:
            await asyncio.to_thread(self._libraries.close)
        if self._musrec is not None:
            await asyncio.to_thread(self._musrec.close)


class ShardedMusrecBot(MusrecBot, commands.AutoShardedBot):
    """The same bot on discord.py's AutoShardedBot (``bot.sharded``): several gateway shards in one process."""


def _load(config: Config) -> Musrec:
    musrec = Musrec.from_config(config)
    musrec.warm_up()
    return musrec


def make_bot(
    config: Config,
    *,
    musrec_factory: Callable[[], Musrec] | None = None,
    queue: WorkQueue | None = None,
    **options: Any,
) -> MusrecBot:
    cls = ShardedMusrecBot if config.bot.sharded else MusrecBot
    return cls(config, musrec_factory=musrec_factory, queue=queue, **options)


async def command_payload(config: Config) -> list[dict[str, Any]]:
    """Exactly what ``tree.sync()`` sends, computed offline."""
    bot = make_bot(config)
    await bot.add_cogs()
    return [command.to_dict(bot.tree) for command in bot.tree.get_commands()]
