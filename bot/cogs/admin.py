"""Owner-only maintenance: syncing the slash commands, by mentioning the bot ("@musrec sync")."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord.ext import commands

from bot.embeds import clip
from bot.errors import CONTENT_MAX
from musrec.config import BotConfig

log = logging.getLogger(__name__)


class Admin(commands.Cog):
    def __init__(self, bot: commands.Bot, config: BotConfig) -> None:
        self.bot = bot
        self.config = config

    @commands.command(name="sync")
    @commands.is_owner()
    async def sync(self, ctx: commands.Context[Any], scope: str = "") -> None:
        """Register the slash commands: "sync" (configured guild, else this one), "sync global", "sync <guild id>"."""
        guild: discord.abc.Snowflake | None
        if scope == "global":
            guild = None
        elif scope.isdigit():
            guild = discord.Object(id=int(scope))
        elif self.config.sync_guild:
            guild = discord.Object(id=int(self.config.sync_guild))
        else:
            guild = ctx.guild
        if guild is not None:
            self.bot.tree.copy_global_to(guild=guild)
        synced = await self.bot.tree.sync(guild=guild)
        where = "globally (may take up to an hour to show)" if guild is None else f"to guild {guild.id}"
        log.info("synced %d commands %s", len(synced), where)
        await ctx.reply(f"Synced {len(synced)} commands {where}.", mention_author=False)

    @commands.Cog.listener()
    async def on_command_error(self, ctx: commands.Context[Any], error: commands.CommandError) -> None:
        if isinstance(error, commands.CommandNotFound):
            return
        if isinstance(error, commands.NotOwner):
            await ctx.reply("Only the bot's owner can do that.", mention_author=False)
            return
        if isinstance(error, commands.UserInputError):
            await ctx.reply(clip(f"{error}", CONTENT_MAX), mention_author=False)
            return
        log.error("command %s failed", ctx.command, exc_info=error)
        await ctx.reply("That failed; see the bot's log.", mention_author=False)
