"""/recommend, /compare, /about, and answering clips and links posted in chosen channels."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands
from discord.ext import commands

from bot import embeds
from bot.errors import TIMEOUT, user_message
from bot.host import Host
from bot.inputs import Link, Start, check_attachment, is_audio, one_source, read_attachment
from bot.work import Ticket
from musrec.compare import similarity_png
from musrec.errors import BusyError, MusrecError
from musrec.pipeline import LinkSource, Source

log = logging.getLogger(__name__)

Reply = tuple[discord.Embed, list[discord.File]]
SIMILARITY_IMAGE = "similarity.png"
THREAD_NAME_MAX = 100


class Sounds(commands.Cog):
    def __init__(self, bot: Host) -> None:
        self.bot = bot

    # ---- commands -------------------------------------------------------------------------------------------

    @app_commands.command(name="recommend")
    @app_commands.describe(
        clip="an audio or video file",
        link="a YouTube link",
        start="where the 10 seconds start, like 1:30 (default: the loudest part of the first minutes)",
        top_k="how many matches (1-10)",
        music_only="only segments labelled as music",
    )
    async def recommend(
        self,
        interaction: discord.Interaction,
        clip: discord.Attachment | None = None,
        link: Link | None = None,
        start: Start = None,
        top_k: app_commands.Range[int, 1, 10] = 5,
        music_only: bool = False,
    ) -> None:
        """Find AudioSet sounds that sound like a clip or a YouTube link."""
        try:
            one_source(clip, link)
            if clip is not None:
                check_attachment(clip, self.bot.config.bot)
        except MusrecError as err:
            await self._reject(interaction, err)
            return

        async def work(ticket: Ticket) -> Reply:
            source, name = await self._fetch(clip, link)
            musrec = self.bot.musrec
            result = await self.bot.queue.run(
                ticket, musrec.recommend, source, name=name, start_s=start, k=top_k, music_only=music_only
            )
            return embeds.recommendation_embed(result, index_size=len(musrec.index)), []

        await self._answer(interaction, work)

    @app_commands.command(name="compare")
    @app_commands.describe(
        first_clip="the first sound, as a file",
        first_link="the first sound, as a YouTube link",
        second_clip="the second sound, as a file",
        second_link="the second sound, as a YouTube link",
        first_start="where the first sound's 10 seconds start, like 1:30",
        second_start="where the second sound's 10 seconds start",
    )
    async def compare(
        self,
        interaction: discord.Interaction,
        first_clip: discord.Attachment | None = None,
        first_link: Link | None = None,
        second_clip: discord.Attachment | None = None,
        second_link: Link | None = None,
        first_start: Start = None,
        second_start: Start = None,
    ) -> None:
        """How alike two clips or links sound, with a second-by-second picture."""
        try:
            one_source(first_clip, first_link, what="first sound")
            one_source(second_clip, second_link, what="second sound")
            for clip in (first_clip, second_clip):
                if clip is not None:
                    check_attachment(clip, self.bot.config.bot)
        except MusrecError as err:
            await self._reject(interaction, err)
            return

        async def work(ticket: Ticket) -> Reply:
            (a, name_a), (b, name_b) = await asyncio.gather(
                self._fetch(first_clip, first_link), self._fetch(second_clip, second_link)
            )
            comparison, query_a, query_b = await self.bot.queue.run(
                ticket, self.bot.musrec.compare, a, b, names=(name_a, name_b), starts=(first_start, second_start)
            )
            png = similarity_png(comparison.matrix)
            image = discord.File(io.BytesIO(png), filename=SIMILARITY_IMAGE)
            return embeds.comparison_embed(comparison, query_a, query_b, image=SIMILARITY_IMAGE), [image]

        await self._answer(interaction, work)

    @app_commands.command(name="about")
    async def about(self, interaction: discord.Interaction) -> None:
        """What this bot does, the data it searches, and where that data comes from."""
        musrec = self.bot.musrec
        model = type(musrec.embedder).__name__.replace("Embedder", "") or "VGGish"
        embed = embeds.about_embed(musrec.index.manifest, embedder=f"VGGish ({model.lower()})")
        await interaction.response.send_message(embed=embed)

    # ---- posted clips and links -----------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        config = self.bot.config.bot
        if message.author.bot or str(message.channel.id) not in config.listen_channels:
            return
        clip = next((a for a in message.attachments if is_audio(a)), None)
        url = None
        if clip is None:
            try:
                url = self.bot.musrec.check_link(message.content) if message.content else None
            except MusrecError:
                url = None
        if clip is None and url is None:
            return
        queue = self.bot.queue
        try:
            ticket = queue.admit(message.author.id)
        except BusyError as err:
            await _quietly(message.reply(user_message(err), mention_author=False))
            return
        try:
            if ticket.ahead:
                log.info("message %s queued behind %d requests", message.id, ticket.ahead)
            async with message.channel.typing():
                if clip is not None:
                    check_attachment(clip, config)
                source, name = await self._fetch(clip, url)
                musrec = self.bot.musrec
                result = await asyncio.wait_for(
                    queue.run(ticket, musrec.recommend, source, name=name), timeout=queue.timeout_s
                )
            embed = embeds.recommendation_embed(result, index_size=len(musrec.index))
            if config.reply_mode == "thread" and isinstance(message.channel, discord.TextChannel):
                title = embeds.clip(f"Sounds like {name or 'this'}", THREAD_NAME_MAX)
                thread = await message.create_thread(name=title)
                await thread.send(embed=embed)
            else:
                await message.reply(embed=embed, mention_author=False)
        except TimeoutError:
            await _quietly(message.reply(TIMEOUT, mention_author=False))
        except Exception as err:
            await _quietly(message.reply(user_message(err, context=f"message {message.id}"), mention_author=False))
        finally:
            queue.release(ticket)

    # ---- the request cycle ----------------------------------------------------------------------------------

    async def _fetch(self, clip: discord.Attachment | None, url: LinkSource | None) -> tuple[Source, str | None]:
        if clip is not None:
            return await read_attachment(clip, self.bot.config.bot, self.bot.downloads), clip.filename
        assert url is not None
        return url, None

    async def _reject(self, interaction: discord.Interaction, err: MusrecError) -> None:
        await interaction.response.send_message(user_message(err), ephemeral=True)

    async def _answer(self, interaction: discord.Interaction, work: Callable[[Ticket], Awaitable[Reply]]) -> None:
        """Admit, acknowledge at once, work off the event loop, answer, or say why not (ephemerally)."""
        user = interaction.user.id
        queue = self.bot.queue
        try:
            ticket = queue.admit(user)
        except BusyError as err:
            await self._reject(interaction, err)
            return
        try:
            await interaction.response.defer(thinking=True)
            if ticket.ahead:
                await interaction.edit_original_response(content=f"You are number {ticket.ahead + 1} in the queue …")
            embed, files = await asyncio.wait_for(work(ticket), timeout=queue.timeout_s)
            await interaction.edit_original_response(content=None, embed=embed, attachments=files)
        except TimeoutError:
            await self._fail(interaction, TIMEOUT)
        except Exception as err:
            await self._fail(interaction, user_message(err, context=f"/{_command_name(interaction)} by {user}"))
        finally:
            queue.release(ticket)

    async def _fail(self, interaction: discord.Interaction, text: str) -> None:
        """Replace the public "thinking" message by a message only the user sees."""
        try:
            if interaction.response.is_done():
                await _quietly(interaction.delete_original_response())
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the user about a failed request", exc_info=True)


def _command_name(interaction: discord.Interaction) -> str:
    return interaction.command.name if interaction.command is not None else "command"


async def _quietly(awaitable: Awaitable[object]) -> None:
    try:
        await awaitable
    except discord.HTTPException:
        log.warning("Discord refused a message", exc_info=True)
