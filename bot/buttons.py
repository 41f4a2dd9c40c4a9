"""The buttons under result messages: "More like N" (results like the N-th match) and "More" (the next results of
the same search).

They are discord.py dynamic items: each button's custom id carries what its click needs (at most 100 characters),
and the bot registers the templates at start-up, so buttons keep working after a restart. "More like N" carries
the segment itself; both carry the key of the search remembered in bot/queries.py. A click goes through the same
queue and per-user limits as a command, and is answered with a new message, under the one clicked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import discord

from bot import embeds, results
from bot.host import Host
from bot.replies import Reply, answer
from bot.results import Page
from bot.work import Ticket
from musrec.recommend.results import Match

log = logging.getLogger(__name__)

CUSTOM_ID_MAX = 100  # Discord's limit
BUTTONS_PER_ROW = 5
LIKE_BUTTONS_MAX = 10  # two rows of "More like N"; "More" has a row of its own
_KEY = r"(?P<key>[A-Za-z0-9_-]{1,16})"
_START = r"(?P<start>\d{1,9}(?:\.\d{1,3})?)"
_LIKE = rf"musrec:like:{_KEY}:(?P<video>[A-Za-z0-9_-]{{1,64}})@{_START}"


def start_text(start_s: float) -> str:
    """A segment's start as its custom id writes it: "30", "12.5" (milliseconds at most)."""
    return f"{start_s:.3f}".rstrip("0").rstrip(".")


Button = discord.ui.Button[discord.ui.View]


class MoreLike(
    discord.ui.DynamicItem[Button], template=rf"musrec:like:{_KEY}:(?P<video>[A-Za-z0-9_-]{{1,64}})@{_START}"
):
    """Results like one AudioSet segment of a result message."""

    def __init__(self, key: str, video_id: str, start: str, *, label: str, row: int | None = None) -> None:
        custom_id = f"musrec:like:{key}:{video_id}@{start}"
        super().__init__(discord.ui.Button(label=label, custom_id=custom_id, row=row))
        self.key, self.video_id, self.start = key, video_id, start

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> MoreLike:
        label = getattr(item, "label", None) or "More like this"
        return cls(match["key"], match["video"], match["start"], label=label)

    async def callback(self, interaction: discord.Interaction) -> None:
        host = cast(Host, interaction.client)

        async def work(ticket: Ticket) -> Reply:
            page = await host.queue.run(
                ticket, results.more_like, host.musrec, host.queries, self.key, self.video_id, self.start
            )
            return reply(page, index_size=len(host.musrec.index))

        await answer(host, interaction, work)


class More(discord.ui.DynamicItem[Button], template=rf"musrec:more:{_KEY}"):
    """The next results of a result message's search."""

    def __init__(self, key: str, *, row: int | None = None) -> None:
        button: Button = discord.ui.Button(
            label="More", custom_id=f"musrec:more:{key}", style=discord.ButtonStyle.primary, row=row
        )
        super().__init__(button)
        self.key = key

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /) -> More:
        return cls(match["key"])

    async def callback(self, interaction: discord.Interaction) -> None:
        host = cast(Host, interaction.client)

        async def work(ticket: Ticket) -> Reply:
            page = await host.queue.run(ticket, results.more, host.musrec, host.queries, self.key)
            return reply(page, index_size=len(host.musrec.index))

        await answer(host, interaction, work)


DYNAMIC_ITEMS = (MoreLike, More)


def view_for(key: str, matches: Sequence[Match], *, first_rank: int = 1) -> discord.ui.View:
    """A "More like N" button per match (N its rank, at most ten), then "More" when there were matches."""
    view = discord.ui.View(timeout=None)
    for i, m in enumerate(matches[:LIKE_BUTTONS_MAX]):
        item = MoreLike(key, m.video_id, start_text(m.start_s), label=f"More like {first_rank + i}",
                        row=i // BUTTONS_PER_ROW)  # fmt: skip
        if len(item.custom_id) <= CUSTOM_ID_MAX:
            view.add_item(item)
    if matches:
        view.add_item(More(key, row=(min(len(matches), LIKE_BUTTONS_MAX) - 1) // BUTTONS_PER_ROW + 1))
    return view


def reply(page: Page, *, index_size: int) -> Reply:
    """A result message: the embed and its buttons (none when its search could not be remembered)."""
    result = page.result
    if result.inputs:
        embed = embeds.blend_embed(result, index_size=index_size, first_rank=page.first_rank)
    else:
        embed = embeds.recommendation_embed(result, index_size=index_size, first_rank=page.first_rank)
    if page.key is None:
        return Reply(embed)
    return Reply(embed, view=view_for(page.key, result.matches, first_rank=page.first_rank))
