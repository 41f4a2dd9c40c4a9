"""Checking what users send before any work is done: attachments and start times (links: the pipeline's own
policy, :meth:`musrec.pipeline.Musrec.check_link`)."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
import discord
from discord import app_commands

from bot.embeds import quoted
from bot.errors import InputError
from bot.host import Host
from musrec.config import BotConfig
from musrec.errors import MusrecError, TooLongError
from musrec.pipeline import MAX_LINK_CHARS, LinkTarget
from musrec.timecode import parse_timecode

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".flac", ".webm", ".mp4", ".m4v", ".mov", ".mkv",
     ".wma", ".aif", ".aiff", ".amr", ".3gp"}
)  # fmt: skip
DOWNLOAD_CHUNK = 1 << 16
KIB, MIB = 1 << 10, 1 << 20


def is_audio(attachment: discord.Attachment) -> bool:
    kind = (attachment.content_type or "").split(";")[0].strip().lower()
    if kind.startswith(("audio/", "video/")):
        return True
    return PurePosixPath(attachment.filename.lower()).suffix in AUDIO_EXTENSIONS


def check_attachment(attachment: discord.Attachment, config: BotConfig) -> None:
    """Refuse, before downloading, a file that is not audio, too large, or not on Discord's CDN."""
    name = quoted(attachment.filename)
    if not is_audio(attachment):
        raise InputError(f"{name} does not look like audio or video: send an mp3, wav, ogg, m4a, flac …")
    limit = config.max_attachment_bytes
    if attachment.size > limit:
        raise TooLongError(f"{name} is {size_text(attachment.size, limit)}; the limit is {size_text(limit, limit)}")
    host = (urlsplit(attachment.url).hostname or "").lower()
    if host not in config.attachment_hosts:
        log.warning("attachment %s on unexpected host %s refused", attachment.id, host)
        raise InputError("I only read attachments from Discord's own file servers")


async def read_attachment(
    attachment: discord.Attachment, config: BotConfig, session: aiohttp.ClientSession, into: Path
) -> None:
    """Download the attachment into the file ``into`` (bot/spool.py: it waits for a worker on disk, not in memory),
    from its URL on an allowed host and nowhere else: a redirect is a failed download (it could lead anywhere), and no
    more than ``max_attachment_bytes`` is read, whatever size Discord announced.

    Raises InputError (not audio, another host, not downloaded) and TooLongError (over the limit), with messages for
    the user; OSError when the file cannot be written (a full disk: the bot's problem, not the user's)."""
    check_attachment(attachment, config)
    limit = config.max_attachment_bytes
    written = 0
    try:
        with into.open("wb") as out:
            async with session.get(attachment.url, allow_redirects=False) as response:
                if response.status != 200:
                    log.info("attachment %s download answered HTTP %d", attachment.id, response.status)
                    raise _not_downloaded()
                async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise TooLongError(f"{quoted(attachment.filename)} is larger than the limit")
                    await asyncio.to_thread(out.write, chunk)  # a slow or full disk never stalls the event loop
    except (aiohttp.ClientError, TimeoutError) as err:
        log.info("attachment %s download failed: %s", attachment.id, err)
        raise _not_downloaded() from None


def size_text(size: int, limit: int) -> str:
    """``size`` in the unit that shows ``limit`` best: MiB, or KiB under 1 MiB (never "0 MiB"), to a tenth. A size is
    rounded up and a limit down, so a file over the limit never reads as within it."""
    unit, name = (MIB, "MiB") if limit >= MIB else (KIB, "KiB")
    tenths = math.ceil(size * 10 / unit) if size > limit else math.floor(size * 10 / unit)
    return f"{tenths / 10:.1f}".removesuffix(".0") + f" {name}"


def _not_downloaded() -> InputError:
    return InputError("I could not download that attachment from Discord; try sending it again")


def parse_start(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return parse_timecode(text)
    except ValueError:
        raise InputError(f"'{quoted(text)}' is not a start time: write it like 90, 1:30 or 1m30s") from None


class TextOption(app_commands.Transformer):
    """A string option of at most ``longest`` characters: Discord's client keeps to it (the option's
    ``max_length``), and the bot refuses longer text itself, for a command registered before it had one."""

    longest: ClassVar[int]
    what: ClassVar[str]  # how a refusal names the option

    @property
    def max_value(self) -> int:  # a string option's max_length
        return self.longest

    async def transform(self, interaction: discord.Interaction, value: str) -> Any:
        if len(value) > self.longest:
            raise InputError(f"that {self.what} is too long: at most {self.longest} characters")
        return self.parse(interaction, value)

    def parse(self, interaction: discord.Interaction, value: str) -> Any:
        return value


class StartTime(TextOption):
    """A ``start`` option, written like 90, 1:30 or 1m30s, as seconds (None when left empty). A string option."""

    longest, what = 32, "start time"

    def parse(self, interaction: discord.Interaction, value: str) -> float | None:
        return parse_start(value)


class LinkOption(TextOption):
    """A ``link`` option: the link in the text, if the pipeline's host policy lets it be fetched. A string option.

    No network here: where its host resolves to is checked when it is fetched, in a worker thread.
    """

    longest, what = MAX_LINK_CHARS, "link"  # the pipeline's own bound

    def parse(self, interaction: discord.Interaction, value: str) -> LinkTarget:
        host: Host = interaction.client  # type: ignore[assignment]  # the cogs run only on a MusrecBot
        return host.musrec.check_link(value)


class LabelOption(TextOption):
    """A ``label`` or ``exclude_label`` option: an AudioSet label's name (checked with the filters it makes)."""

    longest, what = 100, "label"  # Discord's longest autocomplete value; AudioSet's names are far shorter


Start = app_commands.Transform[float | None, StartTime]
Link = app_commands.Transform[LinkTarget, LinkOption]
Label = app_commands.Transform[str, LabelOption]


def refusal(error: app_commands.AppCommandError) -> MusrecError | None:
    """The user's mistake behind an option that did not transform, if that is what ``error`` is."""
    cause = error.__cause__ if isinstance(error, app_commands.TransformerError) else None
    return cause if isinstance(cause, MusrecError) and cause.expected else None


def check_sound(clip: discord.Attachment | None, link: LinkTarget | None, config: BotConfig, *, what: str = "") -> None:
    """A sound's options, before any work: exactly one of a file and a link (the only check that spans two options),
    and a file that may be downloaded."""
    if (clip is None) == (link is None):
        prefix = f"{what}: " if what else ""
        raise InputError(f"{prefix}give exactly one of `clip` (a file) or `link` (a YouTube link)")
    if clip is not None:
        check_attachment(clip, config)
