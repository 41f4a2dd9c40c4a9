"""Checking what users send before any work is done: attachments and start times (links: the pipeline's own
policy, :meth:`musrec.pipeline.Musrec.check_link`)."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import aiohttp
import discord
from discord import app_commands

from bot.errors import InputError
from bot.host import Host
from musrec.config import BotConfig
from musrec.errors import MusrecError, TooLongError
from musrec.pipeline import LinkSource
from musrec.timecode import parse_timecode

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".flac", ".webm", ".mp4", ".m4v", ".mov", ".mkv",
     ".wma", ".aif", ".aiff", ".amr", ".3gp"}
)  # fmt: skip
DOWNLOAD_CHUNK = 1 << 16


def is_audio(attachment: discord.Attachment) -> bool:
    kind = (attachment.content_type or "").split(";")[0].strip().lower()
    if kind.startswith(("audio/", "video/")):
        return True
    return PurePosixPath(attachment.filename.lower()).suffix in AUDIO_EXTENSIONS


def check_attachment(attachment: discord.Attachment, config: BotConfig) -> None:
    """Refuse, before downloading, a file that is not audio, too large, or not on Discord's CDN."""
    if not is_audio(attachment):
        raise InputError(f"{attachment.filename} does not look like audio or video: send an mp3, wav, ogg, m4a, flac …")
    if attachment.size > config.max_attachment_bytes:
        limit = config.max_attachment_bytes / 2**20
        raise TooLongError(f"{attachment.filename} is {attachment.size / 2**20:.1f} MiB; the limit is {limit:.0f} MiB")
    host = (urlsplit(attachment.url).hostname or "").lower()
    if host not in config.attachment_hosts:
        log.warning("attachment %s on unexpected host %s refused", attachment.id, host)
        raise InputError("I only read attachments from Discord's own file servers")


async def read_attachment(attachment: discord.Attachment, config: BotConfig, session: aiohttp.ClientSession) -> bytes:
    """The attachment's bytes, from its URL on an allowed host and nowhere else: a redirect is a failed download (it
    could lead anywhere), and no more than ``max_attachment_bytes`` is read, whatever size Discord announced."""
    check_attachment(attachment, config)
    limit = config.max_attachment_bytes
    data = bytearray()
    try:
        async with session.get(attachment.url, allow_redirects=False) as response:
            if response.status != 200:
                log.info("attachment %s download answered HTTP %d", attachment.id, response.status)
                raise _not_downloaded()
            async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                data += chunk
                if len(data) > limit:
                    raise TooLongError(f"{attachment.filename} is larger than the limit")
    except (aiohttp.ClientError, TimeoutError) as err:
        log.info("attachment %s download failed: %s", attachment.id, err)
        raise _not_downloaded() from None
    return bytes(data)


def _not_downloaded() -> InputError:
    return InputError("I could not download that attachment from Discord; try sending it again")


def parse_start(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return parse_timecode(text)
    except ValueError:
        raise InputError(f"{text!r} is not a start time: write it like 90, 1:30 or 1m30s") from None


class StartTime(app_commands.Transformer):
    """A ``start`` option, written like 90, 1:30 or 1m30s, as seconds (None when left empty). A string option."""

    async def transform(self, interaction: discord.Interaction, value: str) -> float | None:
        return parse_start(value)


class LinkOption(app_commands.Transformer):
    """A ``link`` option: the link in the text, if the pipeline's host policy lets it be fetched. A string option.

    No network here: where its host resolves to is checked when it is fetched, in a worker thread.
    """

    async def transform(self, interaction: discord.Interaction, value: str) -> LinkSource:
        host: Host = interaction.client  # type: ignore[assignment]  # the cogs run only on a MusrecBot
        return host.musrec.check_link(value)


Start = app_commands.Transform[float | None, StartTime]
Link = app_commands.Transform[LinkSource, LinkOption]


def refusal(error: app_commands.AppCommandError) -> MusrecError | None:
    """The user's mistake behind an option that did not transform, if that is what ``error`` is."""
    cause = error.__cause__ if isinstance(error, app_commands.TransformerError) else None
    return cause if isinstance(cause, MusrecError) and cause.expected else None


def check_sound(clip: discord.Attachment | None, link: LinkSource | None, config: BotConfig, *, what: str = "") -> None:
    """A sound's options, before any work: exactly one of a file and a link (the only check that spans two options),
    and a file that may be downloaded."""
    if (clip is None) == (link is None):
        prefix = f"{what}: " if what else ""
        raise InputError(f"{prefix}give exactly one of `clip` (a file) or `link` (a YouTube link)")
    if clip is not None:
        check_attachment(clip, config)
