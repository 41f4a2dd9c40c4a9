"""Rendering a server's library as Discord embeds: its results, a track added, the list of its tracks.

Titles, artists and file names come from the users' own files (their tags): each is shown through
:func:`bot.embeds.quoted` (no markdown or mention of its own, cut short), and every embed is kept within Discord's
limits by :func:`bot.embeds.fit`.
"""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.embeds import (
    COLOUR,
    DESCRIPTION_MAX,
    FIELD_NAME_MAX,
    FIELD_VALUE_MAX,
    FIELDS_MAX,
    FOOTER_MAX,
    NO_MORE,
    clip,
    describe_query,
    fit,
    percent,
    quoted,
    span,
)
from musrec.library import LibraryMatch, LibraryRecommendation, TrackInfo
from musrec.recommend.results import Query
from musrec.timecode import format_timecode

NAME_MAX = 80  # characters of a title, artist or file name in a line of a list
ID_SHOWN = 8  # hex digits of a track id shown (any unique prefix of 6 or more is accepted back)
LIST_PAGE = 20  # tracks per page of /library list
NO_MATCHES = "No tracks of this server's library match."


def track_name(track: TrackInfo) -> str:
    """ "Title — Artist", as the user's own text."""
    title = quoted(clip(track.title or track.file, NAME_MAX))
    return f"{title} — {quoted(clip(track.artist, NAME_MAX))}" if track.artist else title


def short_id(track: TrackInfo) -> str:
    return f"`{track.track_id[:ID_SHOWN]}`"


def describe_library_query(query: Query) -> str:
    """What was searched for: a track of the library by its title, anything else as an AudioSet search says it."""
    if query.kind in ("file", "url", "audioset"):
        return describe_query(query)
    what = quoted(str(query.extra.get("title") or query.source))
    window = f" ({span(query.start_s, query.end_s)})" if query.start_s is not None and query.end_s is not None else ""
    return f"{what}{window}"


def library_embed(result: LibraryRecommendation, *, tracks: int, first_rank: int = 1) -> discord.Embed:
    """The tracks of a server's library that sound most like the query, one match per track."""
    lines = [clip(describe_library_query(result.query), 600)]
    if first_rank > 1:
        lines.append(f"*more results: from number {first_rank}, leaving out those already shown*")
    if not result.matches:
        lines.append(NO_MORE if first_rank > 1 else NO_MATCHES)
    embed = discord.Embed(title="Sounds like this, in this server's library", description="\n".join(lines),
                          colour=COLOUR)  # fmt: skip
    for rank, m in enumerate(result.matches[: FIELDS_MAX - 1], start=first_rank):
        embed.add_field(name=match_name(rank, m), value=match_value(m), inline=False)
    embed.set_footer(text=clip(f"{tracks:,} tracks in this server's library · similarity = cosine", FOOTER_MAX))
    return fit(embed)


def match_name(rank: int, m: LibraryMatch) -> str:
    return clip(f"{rank}. {percent(m.score)} · {track_name(m.track)}", FIELD_NAME_MAX)


def match_value(m: LibraryMatch) -> str:
    return clip(f"{quoted(clip(m.track.file, NAME_MAX))} · {span(m.start_s, m.end_s)} · {short_id(m.track)}",
                FIELD_VALUE_MAX)  # fmt: skip


def added_embed(track: TrackInfo, *, added: bool, tracks: int, quota: int, cut: bool = False) -> discord.Embed:
    """A track added to the server's library (or found there already: the same content adds nothing); ``cut``: the
    recording is longer than a track may be, and only its first part was stored."""
    title = "Added to this server's library" if added else "Already in this server's library"
    lines = [
        f"**{track_name(track)}**",
        f"{quoted(clip(track.file, NAME_MAX))} · {format_timecode(track.duration_s)} · {track.segments} segments · "
        f"id {short_id(track)}",
    ]
    if track.album:
        lines.insert(1, f"from {quoted(clip(track.album, NAME_MAX))}")
    if cut:
        lines.append(f"Only its first {format_timecode(track.duration_s)} is stored: a track is at most that long.")
    embed = discord.Embed(title=title, description=clip("\n".join(lines), DESCRIPTION_MAX), colour=COLOUR)
    embed.set_footer(text=f"{tracks:,} of {quota:,} tracks · /recommend source:library finds what sounds like a clip")
    return fit(embed)


def removed_text(track: TrackInfo) -> str:
    return clip(f"Removed {track_name(track)} ({short_id(track)}) from this server's library.", 2000)


def list_embed(tracks: Sequence[TrackInfo], *, page: int, quota: int) -> discord.Embed:
    """Page ``page`` (from 1) of the server's tracks, sorted as the library sorts them."""
    pages = max(1, -(-len(tracks) // LIST_PAGE))
    page = min(max(page, 1), pages)
    shown = tracks[(page - 1) * LIST_PAGE : page * LIST_PAGE]
    lines = [f"{short_id(t)} {track_name(t)} · {format_timecode(t.duration_s)}" for t in shown]
    if not tracks:
        lines = ["No tracks yet: a member who may manage the library adds them with `/library add`."]
    embed = discord.Embed(title="This server's library", description=clip("\n".join(lines), DESCRIPTION_MAX),
                          colour=COLOUR)  # fmt: skip
    footer = f"{len(tracks):,} of {quota:,} tracks"
    if pages > 1:
        footer += f" · page {page} of {pages} (the `page` option shows the others)"
    embed.set_footer(text=footer)
    return fit(embed)


def choice_name(track: TrackInfo, limit: int) -> str:
    """A track as an autocomplete choice shows it (plain text: choices render no markdown)."""
    artist = f" — {track.artist}" if track.artist else ""
    return clip(f"{track.title or track.file}{artist} · {track.track_id[:ID_SHOWN]}", limit)
