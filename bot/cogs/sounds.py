"""/recommend, /blend, /compare, /about, and answering clips and links posted in chosen channels."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import replace
from typing import TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot import embeds, library_buttons, library_results, results
from bot.buttons import reply
from bot.cogs.library import SOURCES, library_search
from bot.errors import user_message
from bot.host import Host
from bot.inputs import Label, Link, Start, check_attachment, check_sound, is_audio, read_attachment
from bot.replies import FromMessage, Reply, answer, cycle, reject
from bot.work import Ticket
from musrec.compare import similarity_png
from musrec.errors import MusrecError
from musrec.pipeline import Filters, LinkTarget, Source

log = logging.getLogger(__name__)

T = TypeVar("T")

AUTOCOMPLETE_MAX = 25  # choices Discord shows
SIMILARITY_IMAGE = "similarity.png"


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
        label="only segments with this AudioSet label, or a kind of it (like Rock music)",
        exclude_label="no segments with this AudioSet label, nor a kind of it (like Speech)",
        search_in="where to search: AudioSet (the default), or this server's own library (/library add)",
    )
    @app_commands.rename(search_in="source")
    @app_commands.choices(search_in=SOURCES)
    async def recommend(
        self,
        interaction: discord.Interaction,
        clip: discord.Attachment | None = None,
        link: Link | None = None,
        start: Start = None,
        top_k: app_commands.Range[int, 1, 10] = 5,
        music_only: bool = False,
        label: Label | None = None,
        exclude_label: Label | None = None,
        search_in: app_commands.Choice[str] | None = None,
    ) -> None:
        """Find AudioSet sounds (or tracks of this server's library) that sound like a clip or a YouTube link."""
        musrec = self.bot.musrec
        try:
            check_sound(clip, link, self.bot.config.bot)
            filters = musrec.filters(music_only=music_only, label=_given(label), exclude_label=_given(exclude_label))
            guild_id = library_search(interaction, search_in, filters)
        except MusrecError as err:
            await reject(interaction, err)
            return

        async def work(ticket: Ticket) -> Reply:
            with contextlib.ExitStack() as files:
                source, name = await self._fetch(files, clip, link)
                if guild_id is not None:  # this server's library
                    found = await self.bot.queue.run(ticket, library_results.search_sound, musrec, self.bot.libraries,
                                                     self.bot.queries, guild_id, source, name=name, start_s=start,
                                                     k=top_k)  # fmt: skip
                    return library_buttons.reply(found)
                page = await self.bot.queue.run(ticket, self._search, source, name=name, start_s=start, k=top_k,
                                                filters=filters)  # fmt: skip
            return reply(page, index_size=len(musrec.index))

        await answer(self.bot, interaction, work)

    @app_commands.command(name="blend")
    @app_commands.describe(
        first_clip="the first sound, as a file",
        first_link="the first sound, as a YouTube link",
        second_clip="the second sound, as a file",
        second_link="the second sound, as a YouTube link",
        third_clip="a third sound, as a file",
        third_link="a third sound, as a YouTube link",
        first_start="where the first sound's 10 seconds start, like 1:30",
        second_start="where the second sound's 10 seconds start",
        third_start="where the third sound's 10 seconds start",
        top_k="how many matches (1-10)",
        music_only="only segments labelled as music",
        label="only segments with this AudioSet label, or a kind of it (like Rock music)",
        exclude_label="no segments with this AudioSet label, nor a kind of it (like Speech)",
    )
    async def blend(
        self,
        interaction: discord.Interaction,
        first_clip: discord.Attachment | None = None,
        first_link: Link | None = None,
        second_clip: discord.Attachment | None = None,
        second_link: Link | None = None,
        third_clip: discord.Attachment | None = None,
        third_link: Link | None = None,
        first_start: Start = None,
        second_start: Start = None,
        third_start: Start = None,
        top_k: app_commands.Range[int, 1, 10] = 5,
        music_only: bool = False,
        label: Label | None = None,
        exclude_label: Label | None = None,
    ) -> None:
        """Find AudioSet sounds that sound like all of two or three clips or links."""
        musrec = self.bot.musrec
        sounds = [(first_clip, first_link, first_start), (second_clip, second_link, second_start)]
        if third_clip is not None or third_link is not None:
            sounds.append((third_clip, third_link, third_start))
        try:
            for (clip, link, _), what in zip(sounds, ("first sound", "second sound", "third sound"), strict=False):
                check_sound(clip, link, self.bot.config.bot, what=what)
            filters = musrec.filters(music_only=music_only, label=_given(label), exclude_label=_given(exclude_label))
        except MusrecError as err:
            await reject(interaction, err)
            return

        async def work(ticket: Ticket) -> Reply:
            with contextlib.ExitStack() as files:
                fetched = await all_of(self._fetch(files, clip, link) for clip, link, _ in sounds)
                page = await self.bot.queue.run(
                    ticket,
                    self._blend,
                    [source for source, _ in fetched],
                    names=[name for _, name in fetched],
                    starts=[start for _, _, start in sounds],
                    k=top_k,
                    filters=filters,
                )
            return reply(page, index_size=len(musrec.index))

        await answer(self.bot, interaction, work)

    @recommend.autocomplete("label")
    @recommend.autocomplete("exclude_label")
    @blend.autocomplete("label")
    @blend.autocomplete("exclude_label")
    async def label_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = self.bot.musrec.labels.suggest(current, limit=AUTOCOMPLETE_MAX)
        return [app_commands.Choice(name=n, value=n) for n in names[:AUTOCOMPLETE_MAX]]

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
            check_sound(first_clip, first_link, self.bot.config.bot, what="first sound")
            check_sound(second_clip, second_link, self.bot.config.bot, what="second sound")
        except MusrecError as err:
            await reject(interaction, err)
            return

        async def work(ticket: Ticket) -> Reply:
            with contextlib.ExitStack() as files:
                (a, name_a), (b, name_b) = await all_of(
                    (self._fetch(files, first_clip, first_link), self._fetch(files, second_clip, second_link))
                )
                comparison, query_a, query_b = await self.bot.queue.run(
                    ticket, self.bot.musrec.compare, a, b, names=(name_a, name_b), starts=(first_start, second_start)
                )
            png = similarity_png(comparison.matrix)
            image = discord.File(io.BytesIO(png), filename=SIMILARITY_IMAGE)
            return Reply(embeds.comparison_embed(comparison, query_a, query_b, image=SIMILARITY_IMAGE), [image])

        await answer(self.bot, interaction, work)

    @app_commands.command(name="about")
    async def about(self, interaction: discord.Interaction) -> None:
        """What this bot does, the data it searches, and where that data comes from."""
        musrec = self.bot.musrec
        model = type(musrec.embedder).__name__.replace("Embedder", "") or "VGGish"
        videos = await asyncio.to_thread(lambda: musrec.videos.counts() if musrec.videos is not None else None)
        embed = embeds.about_embed(musrec.index.manifest, embedder=f"VGGish ({model.lower()})", videos=videos)
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
        request = FromMessage(message, in_thread=config.reply_mode == "thread")
        if clip is not None:
            try:
                check_attachment(clip, config)  # before admitting: a refused file starts no cooldown
            except MusrecError as err:
                await request.refuse(user_message(err))
                return

        async def work(ticket: Ticket) -> Reply:
            musrec = self.bot.musrec
            with contextlib.ExitStack() as files:
                source, name = await self._fetch(files, clip, url)
                page = await self.bot.queue.run(ticket, self._search, source, name=name, start_s=None, k=None,
                                                filters=None)  # fmt: skip
            return replace(reply(page, index_size=len(musrec.index)), name=name)

        await cycle(self.bot, request, work)

    # ---- the request cycle ----------------------------------------------------------------------------------

    async def _fetch(
        self, files: contextlib.ExitStack, clip: discord.Attachment | None, url: LinkTarget | None
    ) -> tuple[Source, str | None]:
        """A sound to resolve and the name to show it by: an attachment is downloaded into a file of the spool,
        removed when ``files`` closes (so however the request ends)."""
        if clip is not None:
            path = files.enter_context(self.bot.spool.file())
            await read_attachment(clip, self.bot.config.bot, self.bot.downloads, path)
            return path, clip.filename
        assert url is not None
        return url, None

    def _search(
        self, source: Source, *, name: str | None, start_s: float | None, k: int | None, filters: Filters | None
    ) -> results.Page:
        """Embed ``source`` and search it, remembered for its buttons (in a worker thread)."""
        musrec = self.bot.musrec
        resolved = musrec.resolve(source, name=name, start_s=start_s)
        k = musrec.config.recommend.top_k if k is None else k
        return results.search(musrec, self.bot.queries, resolved, k=k, filters=filters or musrec.filters())

    def _blend(
        self,
        sources: list[Source],
        *,
        names: list[str | None],
        starts: list[float | None],
        k: int,
        filters: Filters,
    ) -> results.Page:
        """Embed each of ``sources`` and blend them, remembered for the buttons (in a worker thread)."""
        musrec = self.bot.musrec
        sounds = musrec.resolve_sounds(sources, names=names, starts=starts)
        return results.blended(musrec, self.bot.queries, sounds, k=k, filters=filters)


def _given(label: str | None) -> tuple[str, ...]:
    return (label,) if label is not None and label.strip() else ()


async def all_of(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Their results, run at once. The first failure (or a cancellation) stops the others, and each has ended
    before it is raised: no download goes on into a file its request has already removed."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
