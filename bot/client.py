"""The bot object: loads the musrec pipeline once, in a thread, then serves commands from it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.admin import Admin
from bot.cogs.sounds import Sounds
from bot.errors import GENERIC
from bot.work import WorkQueue
from musrec.config import Config
from musrec.pipeline import Musrec

log = logging.getLogger(__name__)


def intents_for(config: Config) -> discord.Intents:
    """Slash commands need no privileged intent; reading posted clips and links needs message content."""
    intents = discord.Intents.default()
    intents.message_content = bool(config.bot.listen_channels)
    return intents


class _MusrecBotMixin:
    """Shared by the plain and the auto-sharded bot."""

    config: Config
    queue: WorkQueue
    _musrec: Musrec | None
    _factory: Callable[[], Musrec]
    tree: app_commands.CommandTree[Any]

    def _init_musrec(self, config: Config, factory: Callable[[], Musrec] | None) -> None:
        self.config = config
        self._musrec = None
        self._factory = factory or (lambda: _load(config))
        self.queue = WorkQueue(
            workers=config.bot.workers, max_waiting=config.bot.max_waiting, cooldown_s=config.bot.cooldown_s
        )

    @property
    def musrec(self) -> Musrec:
        if self._musrec is None:
            raise RuntimeError("the musrec pipeline is not loaded yet")
        return self._musrec

    async def add_cogs(self) -> None:
        bot: Any = self
        await bot.add_cog(Sounds(bot))
        await bot.add_cog(Admin(bot))
        self.tree.on_error = self._on_tree_error  # type: ignore[method-assign]

    async def setup_hook(self) -> None:
        # Loading TensorFlow and the model takes seconds: never on the event loop.
        self._musrec = await asyncio.to_thread(self._factory)
        await self.add_cogs()
        log.info("ready: %d segments, %s", len(self.musrec.index), type(self.musrec.embedder).__name__)

    async def is_owner(self, user: discord.abc.User) -> bool:
        if str(user.id) in self.config.bot.owner_ids:
            return True
        return bool(await super().is_owner(user))  # type: ignore[misc]

    async def _on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        log.error("command %s failed", interaction.command and interaction.command.name, exc_info=error)
        send = interaction.followup.send if interaction.response.is_done() else interaction.response.send_message
        with contextlib.suppress(discord.HTTPException):
            await send(GENERIC, ephemeral=True)

    async def close(self) -> None:
        self.queue.shutdown()
        await super().close()  # type: ignore[misc]
        if self._musrec is not None:
            await asyncio.to_thread(self._musrec.close)


def _load(config: Config) -> Musrec:
    musrec = Musrec.from_config(config)
    musrec.warm_up()
    return musrec


class MusrecBot(_MusrecBotMixin, commands.Bot):
    def __init__(self, config: Config, *, musrec_factory: Callable[[], Musrec] | None = None, **options: Any) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned, intents=intents_for(config), help_command=None, **options
        )
        self._init_musrec(config, musrec_factory)


class ShardedMusrecBot(_MusrecBotMixin, commands.AutoShardedBot):
    def __init__(self, config: Config, *, musrec_factory: Callable[[], Musrec] | None = None, **options: Any) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned, intents=intents_for(config), help_command=None, **options
        )
        self._init_musrec(config, musrec_factory)


def make_bot(
    config: Config, *, musrec_factory: Callable[[], Musrec] | None = None, **options: Any
) -> MusrecBot | ShardedMusrecBot:
    cls = ShardedMusrecBot if config.bot.sharded else MusrecBot
    return cls(config, musrec_factory=musrec_factory, **options)


async def command_payload(config: Config) -> list[dict[str, Any]]:
    """Exactly what ``tree.sync()`` sends, computed offline."""
    bot = make_bot(config)
    await bot.add_cogs()
    return [command.to_dict(bot.tree) for command in bot.tree.get_commands()]
