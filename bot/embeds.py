"""Rendering results as Discord embeds, always within Discord's limits however long the labels are."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import discord

from musrec.compare import Comparison
from musrec.pipeline import Manifest, StoreCounts
from musrec.recommend.results import Match, Query, Recommendation
from musrec.timecode import format_timecode

# Discord's embed limits.
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
EMBED_TOTAL_MAX = 6000
VIDEO_NAME_MAX = 100  # characters of a video's title or channel shown (fit() keeps the embed within its total)
QUOTE_MAX = 100  # characters of a user's own text shown at most

COLOUR = discord.Colour(0x5865F2)
GENERIC_LABELS = frozenset({"Music"})  # true of nearly every match: it explains nothing
WHY_LABELS = 3
LABELS_PER_MATCH = 4
NO_MATCHES = "No matches: try without the music-only filter, or another part of the clip."
NO_MORE = "No more matches."
ATTRIBUTION = (
    "Segments and labels: Google AudioSet (CC BY 4.0), embeddings by VGGish. Links open YouTube at the segment."
)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def escape(text: str) -> str:
    """Text shown inside a link's brackets: no markdown of its own."""
    return discord.utils.escape_markdown(text).replace("[", "(").replace("]", ")")


def quoted(text: str) -> str:
    """A user's own text (a file name, a start time) as shown: at most QUOTE_MAX characters, with no markdown or
    mention of its own (a file named ``@everyone.mp3`` or ``[x](https://...)`` shows as it is named)."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(clip(text, QUOTE_MAX)))


def percent(score: float) -> str:
    return f"{max(0.0, score) * 100:.0f}%"


def span(start_s: float, end_s: float) -> str:
    return f"{format_timecode(start_s)}–{format_timecode(end_s)}"


def why(matches: Sequence[Match]) -> str | None:
    """ "sounds like: Guitar, Jazz": the labels the matches share most, ignoring ones that say nothing."""
    counts = Counter(label for m in matches for label in set(m.labels))
    shared = [label for label, n in counts.most_common() if n >= 2 and label not in GENERIC_LABELS]
    if not shared:
        shared = [label for label, n in counts.most_common() if n >= 2]
    return "sounds like: " + ", ".join(shared[:WHY_LABELS]) if shared else None


def describe_query(query: Query) -> str:
    if query.kind == "audioset" and query.url is not None and query.start_s is not None:
        where = span(query.start_s, query.end_s or query.start_s)
        return f"AudioSet segment [{query.video_id}]({query.url}) at {where}"
    what = str(query.extra.get("title") or query.source)
    if query.kind == "url":
        what = f"[{escape(clip(what, 200))}]({query.source})"
    elif query.kind == "file":  # named by the user
        what = quoted(what)
    window = ""
    if query.start_s is not None and query.end_s is not None:
        window = f" ({span(query.start_s, query.end_s)})"
    return f"{what}{window}"


def recommendation_embed(result: Recommendation, *, index_size: int, first_rank: int = 1) -> discord.Embed:
    """The matches of a search; ``first_rank`` > 1 for its next results ("More")."""
    matches = result.matches
    lines = [clip(describe_query(result.query), 600)]
    lines += applied(result, first_rank=first_rank)
    reason = why(matches)
    if reason:
        lines.append(f"**{clip(reason, 300)}**")
    if not matches:
        lines.append(NO_MORE if first_rank > 1 else NO_MATCHES)
    embed = discord.Embed(title="Sounds like this", description="\n".join(lines), colour=COLOUR)
    for rank, m in enumerate(matches[: FIELDS_MAX - 1], start=first_rank):
        embed.add_field(name=match_name(rank, m), value=match_value(m), inline=False)
    embed.set_footer(text=clip(f"{index_size:,} AudioSet segments searched · similarity = cosine", FOOTER_MAX))
    return fit(embed)


def blend_embed(result: Recommendation, *, index_size: int, first_rank: int = 1) -> discord.Embed:
    """The matches of a blend, each with how close it is to every sound (numbered as in the description), ranked
    from ``first_rank`` (later pages of "More")."""
    lines = [clip(f"**{n}:** {describe_query(q)}", 600) for n, q in enumerate(result.inputs, start=1)]
    lines += applied(result, first_rank=first_rank)
    reason = why(result.matches)
    if reason:
        lines.append(f"**{clip(reason, 300)}**")
    if not result.matches:
        lines.append(NO_MATCHES)
    embed = discord.Embed(title="Sounds like all of them", description="\n".join(lines), colour=COLOUR)
    for rank, m in enumerate(result.matches[: FIELDS_MAX - 1], start=first_rank):
        each = " · ".join(f"{n}: {percent(s)}" for n, s in enumerate(m.similarities, start=1))
        value = match_value(m) + (f"\nclose to {each}" if each else "")
        embed.add_field(name=match_name(rank, m), value=clip(value, FIELD_VALUE_MAX), inline=False)
    embed.set_footer(
        text=clip(f"{index_size:,} AudioSet segments searched · score = cosine to the farthest sound", FOOTER_MAX)
    )
    return fit(embed)


def applied(result: Recommendation, *, first_rank: int = 1) -> list[str]:
    """What shaped the results beyond the sound (filters, a blend), one italic line each."""
    said = list(result.applied)
    if first_rank > 1:
        said.append(f"more results: from number {first_rank}, leaving out those already shown")
    return [f"*{clip(escape(line), 300)}*" for line in said]


def match_name(rank: int, m: Match) -> str:
    labels = ", ".join(m.labels[:LABELS_PER_MATCH]) or "unlabelled"
    if len(m.labels) > LABELS_PER_MATCH:
        labels += f" +{len(m.labels) - LABELS_PER_MATCH}"
    return clip(f"{rank}. {percent(m.score)} · {labels}", FIELD_NAME_MAX)


def match_value(m: Match) -> str:
    """The match's link, named by its video's title and channel when they are known, else by its id."""
    link = f"[youtu.be/{m.video_id}]({m.url})"
    if m.video is not None and m.video.title:  # YouTube's text: no markdown or mention of its own
        named = (escape(clip(m.video.title, VIDEO_NAME_MAX)), escape(clip(m.video.channel or "", VIDEO_NAME_MAX)))
        link = f"[{discord.utils.escape_mentions(named[0])}]({m.url})" + (
            f" · {discord.utils.escape_mentions(named[1])}" if named[1] else ""
        )
    return clip(f"{link} · {span(m.start_s, m.end_s)}", FIELD_VALUE_MAX)


def comparison_embed(comparison: Comparison, first: Query, second: Query, *, image: str | None) -> discord.Embed:
    embed = discord.Embed(
        title=f"{percent(comparison.score)} alike",
        description=clip(
            f"**A:** {describe_query(first)}\n**B:** {describe_query(second)}\n"
            "The picture compares them second by second: A down, B across; red is alike, blue is not.",
            DESCRIPTION_MAX,
        ),
        colour=COLOUR,
    )
    if image:
        embed.set_image(url=f"attachment://{image}")
    embed.set_footer(text="cosine similarity of the two 10-second windows' VGGish embeddings")
    return fit(embed)


def about_embed(manifest: Manifest, *, embedder: str, videos: StoreCounts | None = None) -> discord.Embed:
    embed = discord.Embed(
        title="musrec: find music that sounds like this",
        description=(
            "Send me a sound and I find the 10-second YouTube segments of Google AudioSet that sound most like it.\n"
            "• `/recommend clip:<file>` or `/recommend link:<YouTube link>` (with `start:1:30` for a part)\n"
            "• `/compare` two clips or links; `/blend` two or three: what sounds like all of them\n"
            "• the buttons under results: *More like N* searches from that match, *More* shows the next ones\n"
            "• `/library add` this server's own tracks, then `/recommend source:library` finds what sounds alike\n"
            "I embed a 10-second window with VGGish and search AudioSet's released embeddings by cosine similarity."
        ),
        colour=COLOUR,
    )
    embed.add_field(name="Index", value=f"{manifest.count:,} segments ({manifest.representation})", inline=True)
    embed.add_field(name="Recall@10", value=f"{manifest.recall_at_10:.2f} (measured)", inline=True)
    embed.add_field(name="Model", value=embedder, inline=True)
    if videos is not None:  # the check of matches' videos is on
        seen = f"{videos.checked:,} checked, {100 * videos.gone_share:.0f}% of them gone" if videos.checked else None
        value = f"{seen or 'none checked yet'}; gone ones are left out of answers"
        embed.add_field(name="Videos", value=value, inline=False)
    embed.set_footer(text=ATTRIBUTION)
    return fit(embed)


def fit(embed: discord.Embed) -> discord.Embed:
    """Trim field values, then drop trailing fields, until the embed is within Discord's total of 6000 characters."""
    while len(embed) > EMBED_TOTAL_MAX and embed.fields:
        sizes = [len(f.name or "") + len(f.value or "") for f in embed.fields]
        longest = sizes.index(max(sizes))
        f = embed.fields[longest]
        if len(f.name or "") > 64:
            embed.set_field_at(longest, name=clip(f.name or "", 64), value=f.value, inline=f.inline)
        else:
            embed.remove_field(len(embed.fields) - 1)
    if len(embed) > EMBED_TOTAL_MAX and embed.description:
        embed.description = clip(embed.description, max(1, len(embed.description) - (len(embed) - EMBED_TOTAL_MAX)))
    return embed
