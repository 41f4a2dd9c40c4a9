"""Checking what users send before any work is done: attachments, links, start times."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import discord

from bot.errors import InputError
from musrec.config import BotConfig
from musrec.errors import TooLongError, UnsupportedLinkError
from musrec.timecode import parse_timecode

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".flac", ".webm", ".mp4", ".m4v", ".mov", ".mkv",
     ".wma", ".aif", ".aiff", ".amr", ".3gp"}
)  # fmt: skip


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


async def read_attachment(attachment: discord.Attachment, config: BotConfig) -> bytes:
    check_attachment(attachment, config)
    try:
        data = await attachment.read()
    except (discord.HTTPException, discord.NotFound) as err:
        log.info("attachment %s download failed: %s", attachment.id, err)
        raise InputError("I could not download that attachment from Discord; try sending it again") from None
    if len(data) > config.max_attachment_bytes:
        raise TooLongError(f"{attachment.filename} is larger than the limit")
    return data


def parse_start(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return parse_timecode(text)
    except ValueError:
        raise InputError(f"{text!r} is not a start time: write it like 90, 1:30 or 1m30s") from None


def check_link(text: str, *, allowed_hosts: tuple[str, ...]) -> str:
    """The link in ``text``: a YouTube video, or a host the configuration allows. No network here: where the host
    resolves to is checked when it is fetched, in a worker thread."""
    from musrec.links.parse import find_link, parse_youtube_url

    link = find_link(text)
    if link is None:
        raise UnsupportedLinkError("that is not a link: paste a YouTube link like https://youtu.be/VIDEO_ID")
    try:
        parse_youtube_url(link)
    except UnsupportedLinkError:
        host = (urlsplit(link).hostname or "").lower()
        if host not in allowed_hosts or host.endswith(("youtube.com", "youtu.be")):
            raise
    return link


def one_source(clip: discord.Attachment | None, link: str | None, *, what: str = "") -> None:
    if (clip is None) == (link is None or not link.strip()):
        prefix = f"{what}: " if what else ""
        raise InputError(f"{prefix}give exactly one of `clip` (a file) or `link` (a YouTube link)")
