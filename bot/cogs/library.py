"""/library add, /library remove, /library list: each server's own tracks, and what /recommend needs to search them.

Every member of a server may list its library and search it (``/recommend source:``); adding and removing need
*Manage Server*, or the role ``[library] manage_role`` names. A server's library holds at most
``[library] max_server_tracks`` tracks. An added file passes the checks every attachment passes (audio, within
``[bot] max_attachment_bytes``, from Discord's own file servers) before it is downloaded, into the spool like any
other, and the library's own limits (``[library] max_bytes`` and ``max_track_s``) when it is read; a link passes the
pipeline's host policy, and its first ``[library] max_track_s`` seconds are fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands
from discord.ext import commands

from bot import library_embeds
from bot.embeds import quoted
from bot.errors import InputError, user_message
from bot.host import Host
from bot.inputs import Link, TextOption, check_sound, read_attachment
from bot.replies import Reply, answer, fail, reject, what
from bot.work import Ticket
from musrec.errors import MusrecError
from musrec.recommend.results import Filters

log = logging.getLogger(__name__)

AUDIOSET, LIBRARY = "audioset", "library"
SOURCES = [
    app_commands.Choice(name="AudioSet (YouTube segments, the default)", value=AUDIOSET),
    app_commands.Choice(name="this server's library", value=LIBRARY),
]
TRACK_ID = re.compile(r"[0-9a-f]{6,16}")  # a track's id, or a prefix of it long enough to be told apart
CHOICES_MAX = 25  # autocomplete choices Discord shows
CHOICE_NAME_MAX = 100
ONLY_IN_SERVERS = "a library belongs to a server: use this in one"
NO_FILTERS = "the label and music-only filters apply to AudioSet, not to this server's library: leave them out"


class TrackOption(TextOption):
    """A ``track`` option: a track's id, or a unique prefix of it (autocomplete fills it in from titles)."""

    longest, what = 100, "track"

    def parse(self, interaction: discord.Interaction, value: str) -> str:
        text = value.strip().lower()
        if not TRACK_ID.fullmatch(text):
            raise InputError(
                f"'{quoted(value)}' is not a track: pick one from the titles offered as you type, or give its id "
                "(`/library list` shows them)"
            )
        return text


Track = app_commands.Transform[str, TrackOption]


class LibraryCommands(commands.Cog, name="Library"):
    library = app_commands.Group(
        name="library", description="This server's own tracks, to search with /recommend", guild_only=True
    )

    def __init__(self, bot: Host) -> None:
        self.bot = bot

    @library.command(name="add")
    @app_commands.describe(
        clip="an audio or video file of the track (its tags give the title and artist)",
        link="a YouTube link to the track (its first minutes, titled by the video)",
    )
    async def add(
        self, interaction: discord.Interaction, clip: discord.Attachment | None = None, link: Link | None = None
    ) -> None:
        """Add a track to this server's library (Manage Server, or the library's role)."""
        libraries, config = self.bot.libraries, self.bot.config
        try:
            guild_id = managed_guild(interaction, config.library.manage_role)
            check_sound(clip, link, config.bot)
        except MusrecError as err:
            await reject(interaction, err)
            return

        async def work(ticket: Ticket) -> Reply:
            await asyncio.to_thread(libraries.check_room, guild_id)  # a full library downloads nothing
            with contextlib.ExitStack() as files:
                if link is not None:
                    added = await self.bot.queue.run(ticket, libraries.add_link, guild_id, link, options=config.youtube)
                else:
                    assert clip is not None
                    path = files.enter_context(self.bot.spool.file())
                    await read_attachment(clip, config.bot, self.bot.downloads, path)
                    added = await self.bot.queue.run(ticket, libraries.add, guild_id, path, name=clip.filename)
            tracks = await asyncio.to_thread(libraries.count, guild_id)
            embed = library_embeds.added_embed(
                added.track, added=added.added, tracks=tracks, quota=libraries.max_tracks, cut=added.cut
            )
            return Reply(embed)

        await answer(self.bot, interaction, work)

    @library.command(name="remove")
    @app_commands.describe(track="the track: start typing its title, or give its id")
    async def remove(self, interaction: discord.Interaction, track: Track) -> None:
        """Remove a track from this server's library (Manage Server, or the library's role)."""
        libraries = self.bot.libraries
        try:
            guild_id = managed_guild(interaction, self.bot.config.library.manage_role)
        except MusrecError as err:
            await reject(interaction, err)
            return

        async def work() -> Reply:
            removed = await asyncio.to_thread(libraries.remove, guild_id, track)
            return Reply(discord.Embed(description=library_embeds.removed_text(removed), colour=library_embeds.COLOUR))

        await respond(interaction, work, ephemeral=False)

    @library.command(name="list")
    @app_commands.describe(page="which page of the list (20 tracks a page)")
    async def list_tracks(self, interaction: discord.Interaction, page: app_commands.Range[int, 1, 1000] = 1) -> None:
        """The tracks of this server's library (only you see the list)."""
        libraries = self.bot.libraries
        try:
            guild_id = server_of(interaction)
        except MusrecError as err:
            await reject(interaction, err)
            return

        async def work() -> Reply:
            tracks = await asyncio.to_thread(libraries.tracks, guild_id)
            return Reply(library_embeds.list_embed(tracks, page=page, quota=libraries.max_tracks))

        await respond(interaction, work, ephemeral=True)

    @remove.autocomplete("track")
    async def track_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None:
            return []
        try:
            tracks = await asyncio.to_thread(self.bot.libraries.tracks, interaction.guild_id)
        except MusrecError:  # the store is not available: the command itself will say why
            return []
        needle = current.strip().casefold()
        found = [t for t in tracks if needle in f"{t.title} {t.artist or ''} {t.file} {t.track_id}".casefold()]
        return [
            app_commands.Choice(name=library_embeds.choice_name(t, CHOICE_NAME_MAX), value=t.track_id)
            for t in found[:CHOICES_MAX]
        ]


def server_of(interaction: discord.Interaction) -> int:
    """The guild a library command was used in (InputError elsewhere)."""
    if interaction.guild_id is None:
        raise InputError(ONLY_IN_SERVERS)
    return interaction.guild_id


def managed_guild(interaction: discord.Interaction, role: str) -> int:
    """The guild whose library the user may change: with Manage Server (or Administrator), or the role ``role``
    (a role's name or id; "" for none). InputError, naming what is needed, if they may not."""
    guild_id = server_of(interaction)
    permissions = interaction.permissions
    if permissions.manage_guild or permissions.administrator:
        return guild_id
    user = interaction.user
    if role and isinstance(user, discord.Member) and any(_is(r, role) for r in user.roles):
        return guild_id
    needed = f"Manage Server or the {quoted(role)} role" if role else "Manage Server"
    raise InputError(f"only members with {needed} may change this server's library")


def _is(role: discord.Role, wanted: str) -> bool:
    return str(role.id) == wanted or role.name.casefold() == wanted.casefold()


def library_search(
    interaction: discord.Interaction, source: app_commands.Choice[str] | None, filters: Filters
) -> int | None:
    """For /recommend: the guild whose library ``source`` asks to search, or None for AudioSet. InputError when it
    cannot be searched so (outside a server, or with AudioSet's filters)."""
    if source is None or source.value != LIBRARY:
        return None
    if filters.labels or filters.not_labels or filters.music_only:
        raise InputError(NO_FILTERS)
    return server_of(interaction)


async def respond(interaction: discord.Interaction, work: Callable[[], Awaitable[Reply]], *, ephemeral: bool) -> None:
    """A quick library request (no model work, so not through the queue): acknowledge, work in a thread, answer,
    or say why not (privately)."""
    await interaction.response.defer(thinking=True, ephemeral=ephemeral)
    try:
        reply = await work()
    except Exception as err:
        await fail(interaction, user_message(err, context=f"{what(interaction)} by {interaction.user.id}"))
        return
    try:
        await interaction.edit_original_response(content=None, embed=reply.embed)
    except discord.HTTPException:
        log.warning("could not answer %s", what(interaction), exc_info=True)
