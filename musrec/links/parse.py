"""Links people paste: finding them in text, reading YouTube links, and the address policy for fetching.

Pure parsing, no network. :func:`is_public_address` is the address policy: private, loopback, link-local, multicast
and reserved addresses are refused, so a link can never make the server reach into its own network
(:mod:`musrec.links.guard` applies it to every connection made for a link).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from musrec.errors import UnsupportedLinkError
from musrec.timecode import parse_timecode

YOUTUBE_HOSTS: Final = (
    "youtube.com",
    "www.youtube.com",
    "m.youtube.com",
    "music.youtube.com",
    "youtu.be",
    "youtube-nocookie.com",
    "www.youtube-nocookie.com",
)

CANONICAL_URL: Final = "https://www.youtube.com/watch?v={}"

DEFAULT_PORTS: Final = (None, 80, 443)

MAX_LINK_CHARS: Final = 2048

_VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{11}")

_ID_IN_PATH = frozenset({"shorts", "live", "embed", "v", "e", "watch"})

_START_KEYS = ("t", "start", "time_continue")

# A YouTube link written without its scheme ("youtu.be/ID", "www.youtube.com/watch?v=ID").
_BARE_YOUTUBE = r"(?:(?:www|m|music)\.)?(?:youtube\.com|youtu\.be|youtube-nocookie\.com)/"
_URL_IN_TEXT = re.compile(
    rf"https?://[^\s<>|`\"']+|(?<![\w.@/-]){_BARE_YOUTUBE}[^\s<>|`\"']+",
    re.IGNORECASE,
)
_A_LINK = re.compile(rf"<?(?:https?://|{_BARE_YOUTUBE})", re.IGNORECASE)

_TRAILING = ".,;:!?)]}*~"  # not "_" or "-": a video id may end with either


@dataclass(frozen=True)
class YouTubeLink:
    """One YouTube video: its id, the start time carried by the link (None if none), and its canonical URL."""

    video_id: str
    start_s: float | None
    url: str


def youtube_url(video_id: str, start_s: float) -> str:
    """The watch link of a video at a time (whole seconds, as YouTube's ``t=`` takes them)."""
    return f"https://www.youtube.com/watch?v={video_id}&t={int(start_s)}s"


def is_link(text: str) -> bool:
    """Whether ``text`` is meant as a link rather than a file name: it starts with ``http://`` or ``https://``
    (in Discord's ``<...>`` too), or is a YouTube link written without them (``youtu.be/ID``)."""
    return _A_LINK.match(text.strip()) is not None


def find_link(text: str) -> str | None:
    """The first YouTube link in ``text`` (Discord's ``<...>`` and trailing punctuation removed), else the first
    http(s) link, else None. A YouTube link written without ``https://`` is returned with it."""
    found = [m.group(0).rstrip(_TRAILING) for m in _URL_IN_TEXT.finditer(text)]
    links = [u if "://" in u else "https://" + u for u in found]
    for link in links:
        try:
            parse_youtube_url(link)
        except UnsupportedLinkError:
            continue
        return link
    return links[0] if links else None


def parse_timestamp(text: str) -> float | None:
    """Seconds from ``90``, ``90s``, ``1m30s``, ``1h2m3s``, ``1:30`` or ``01:02:03``; None if it is none of these."""
    try:
        return parse_timecode(text)
    except ValueError:
        return None


def parse_youtube_url(url: str) -> YouTubeLink:
    """The video a YouTube link points to. UnsupportedLinkError for other hosts, playlists, channels and garbage.

    A link into a playlist (``watch?v=ID&list=...``) means that one video. ``t=``/``start=`` in the query or
    the fragment gives the start time.
    """
    parts, host = split_link(url)
    if host not in YOUTUBE_HOSTS:
        raise UnsupportedLinkError("only YouTube links are supported")
    if parts.port not in DEFAULT_PORTS:
        raise UnsupportedLinkError("this is not a usable YouTube link")
    query = parse_qs(parts.query)
    fragment = parse_qs(parts.fragment)
    segments = [s for s in parts.path.split("/") if s]
    if host == "youtu.be":
        candidate = segments[0] if segments else None
    elif segments == ["watch"]:
        candidate = query.get("v", [None])[0]
    elif len(segments) >= 2 and segments[0] in _ID_IN_PATH and segments[1] != "videoseries":
        candidate = segments[1]
    else:
        candidate = None
    if candidate is None:
        if "list" in query or segments[:1] == ["playlist"]:
            raise UnsupportedLinkError("playlists are not supported; send a link to one video")
        raise UnsupportedLinkError("this YouTube link does not point to a video")
    if not _VIDEO_ID.fullmatch(candidate):
        raise UnsupportedLinkError("this YouTube link has no valid video id")
    start_s = None
    for value in (*(query.get(k, [""])[0] for k in _START_KEYS), *(fragment.get(k, [""])[0] for k in _START_KEYS)):
        if value and (start_s := parse_timestamp(value)) is not None:
            break
    return YouTubeLink(candidate, start_s, CANONICAL_URL.format(candidate))


def split_link(url: str) -> tuple[Any, str]:
    """``urlsplit`` of a link and its normalised host; UnsupportedLinkError for what is not an http(s) link."""
    text = url.strip().removeprefix("<").removesuffix(">")
    if len(text) > MAX_LINK_CHARS:
        raise UnsupportedLinkError("this link is too long")
    if "://" not in text and text.lower().startswith(tuple(f"{h}/" for h in YOUTUBE_HOSTS)):
        text = "https://" + text
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise UnsupportedLinkError("this is not a valid link") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UnsupportedLinkError("only http and https links are supported")
    if "@" in parts.netloc:
        raise UnsupportedLinkError("links with a user name or password are not accepted")
    host = normal_host(parts.hostname or "")
    if not host:
        raise UnsupportedLinkError("this is not a valid link")
    return parts, host


def normal_host(host: str) -> str:
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_public_address(embedded)
    return address.is_global and not (address.is_multicast or address.is_reserved)
