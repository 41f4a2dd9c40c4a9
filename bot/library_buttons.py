"""The buttons under results of a server's library: "More like N" (other tracks like the N-th match's segment) and
"More" (the next tracks of the same search).

As the AudioSet results' buttons (bot/buttons.py), they are dynamic items registered at start-up, whose custom ids
carry what a click needs: the key of the remembered search, and for "More like N" the track and its segment's start.
A click answers from the library of the server it is made in (never from another's), through the same queue and
per-user limits as a command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import discord

from bot import library_embeds, library_results
from bot.buttons import BUTTONS_PER_ROW, CUSTOM_ID_MAX, LIKE_BUTTONS_MAX, Button, start_text
from bot.errors import InputError
from bot.host import Host
from bot.library_results import LibraryPage
from bot.replies import Reply, answer, reject
from bot.work import Ticket
from musrec.library import LibraryMatch

_KEY = r"(?P<key>[A-Za-z0-9_-]{1,16})"
_TRACK = r"(?P<track>[0-9a-f]{16})"
_START = r"(?P<start>\d{1,9}(?:\.\d{1,3})?)"
ONLY_IN_SERVERS = "The library buttons work only in the server they were sent in"


class MoreLikeTrack(discord.ui.DynamicItem[Button], template=rf"musrec:tlike:{_KEY}:{_TRACK}@{_START}"):
    """Other tracks like one match of a library result."""

    def __init__(self, key: str, track_id: str, start: str, *, label: str, row: int | None = None) -> None:
        super().__init__(discord.ui.Button(label=label, custom_id=f"musrec:tlike:{key}:{track_id}@{start}", row=row))
        self.key, self.track_id, self.start = key, track_id, start

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> MoreLikeTrack:
        label = getattr(item, "label", None) or "More like this"
        return cls(match["key"], match["track"], match["start"], label=label)

    async def callback(self, interaction: discord.Interaction) -> None:
        top_k = cast(Host, interaction.client).config.recommend.top_k
        await _answer(interaction, library_results.more_like, self.key, self.track_id, self.start, default_k=top_k)


class MoreTracks(discord.ui.DynamicItem[Button], template=rf"musrec:tmore:{_KEY}"):
    """The next tracks of a library result's search."""

    def __init__(self, key: str, *, row: int | None = None) -> None:
        button: Button = discord.ui.Button(
            label="More", custom_id=f"musrec:tmore:{key}", style=discord.ButtonStyle.primary, row=row
        )
        super().__init__(button)
        self.key = key

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> MoreTracks:
        return cls(match["key"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _answer(interaction, library_results.more, self.key)


LIBRARY_ITEMS = (MoreLikeTrack, MoreTracks)


async def _answer(
    interaction: discord.Interaction, search: Callable[..., LibraryPage], *args: Any, **kwargs: Any
) -> None:
    """Answer a click with ``search(libraries, queries, guild_id, *args, **kwargs)``, in the server clicked in."""
    host = cast(Host, interaction.client)
    guild_id = interaction.guild_id
    if guild_id is None:
        await reject(interaction, InputError(ONLY_IN_SERVERS))
        return

    async def work(ticket: Ticket) -> Reply:
        return reply(await host.queue.run(ticket, search, host.libraries, host.queries, guild_id, *args, **kwargs))

    await answer(host, interaction, work)


def view_for(key: str, matches: Sequence[LibraryMatch], *, first_rank: int = 1) -> discord.ui.View:
    """A "More like N" button per match (N its rank, at most ten), then "More" when there were matches."""
    view = discord.ui.View(timeout=None)
    for i, m in enumerate(matches[:LIKE_BUTTONS_MAX]):
        item = MoreLikeTrack(key, m.track.track_id, start_text(m.start_s), label=f"More like {first_rank + i}",
                             row=i // BUTTONS_PER_ROW)  # fmt: skip
        if len(item.custom_id) <= CUSTOM_ID_MAX:
            view.add_item(item)
    if matches:
        view.add_item(MoreTracks(key, row=(min(len(matches), LIKE_BUTTONS_MAX) - 1) // BUTTONS_PER_ROW + 1))
    return view


def reply(page: LibraryPage) -> Reply:
    """A library result message: the embed and its buttons (none when its search could not be remembered)."""
    embed = library_embeds.library_embed(page.result, tracks=page.tracks, first_rank=page.first_rank)
    if page.key is None:
        return Reply(embed)
    return Reply(embed, view=view_for(page.key, page.result.matches, first_rank=page.first_rank))
