"""YouTube links in, the exact query window out: parse the link, refuse what must not be fetched, download a section.

Only hosts on an allow-list (YouTube's by default) are ever fetched, and only at public addresses, so a link can
never make the server reach into its own network: the link's host is checked before yt-dlp sees the URL, media
URLs must be http(s) (and on allowed hosts, for other media than YouTube's), and every connection that yt-dlp and
ffmpeg make goes through the address guard (:mod:`musrec.links.guard`), which checks the address it actually
connects to, whatever DNS answers and wherever redirects point. yt-dlp, used as a library, fetches only the
window plus ``margin_s`` on either side (ffmpeg re-encodes at the cuts, so the section starts where asked),
then :func:`musrec.audio.decode.decode` reads it and the window is cut exactly. The ffmpeg that yt-dlp starts runs
under the decoders' memory cap (:mod:`musrec.links.ytdlp_env`), like musrec's own. Direct http(s) streams are
preferred to HLS, where a cut lands on a segment start (logged when it happens). Live streams, premieres and videos
longer than ``max_video_s`` are refused after a metadata request and before any media is downloaded.

Default window (no start given, none in the link): it starts at ``min(default_start_s, duration / 3)``, kept
inside the video, which skips most silent intros while fetching only 14 seconds; a video no longer than the
window is used whole. When the duration is unknown until the media is read (a plain media file), the first
``default_start_s`` plus the window is fetched and the same rule is applied to what arrived.

Every yt-dlp failure becomes a :class:`~musrec.links.errors.FetchError` whose message is short and safe to show a
user.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from musrec.audio.decode import decode, ffmpeg_executable
from musrec.audio.limits import AudioLimits
from musrec.audio.resample import TARGET_RATE
from musrec.audio.window import WINDOW_S, Window, choose_window, cut
from musrec.errors import DecodeError, MusrecError, TooLongError, TooShortError, UnsupportedLinkError
from musrec.links.addresses import AddressPolicy
from musrec.links.errors import FetchError, FetchFailure, ytdlp_failure
from musrec.links.guard import GuardProxy
from musrec.links.options import DEFAULT_START_S, FetchOptions
from musrec.links.parse import YOUTUBE_HOSTS, find_link, parse_youtube_url, split_link
from musrec.links.upstream import upstream_proxy
from musrec.links.ytdlp_env import fetch_environment
from musrec.links.ytdlp_params import ydl_params
from musrec.timecode import format_timecode as clock

log = logging.getLogger(__name__)

# What a fetch may receive besides the media (max_filesize): YouTube's watch page, player script and API answers
# come to a few MB; yt-dlp holds pages whole in memory, so a page that never ends must not be read for ever.
PAGES_BYTES: Final = 64 * 2**20
BOT_CHECK_NOTICE_EVERY_S: Final = 3600.0
BOT_CHECK_REMEDIES: Final = (
    "YouTube asks this server to sign in to confirm it is not a bot, so links fail here; the remedies, in the"
    " order that usually works: an egress proxy ([youtube] proxy), a PO-token provider ([youtube]"
    " pot_provider_url, pip install 'musrec[pot]' and the provider's server: compose profile 'pot'), cookies"
    " of a throwaway account ([youtube] cookies), a JavaScript runtime (deno) and a current yt-dlp"
    " (pip install -U 'yt-dlp[default]'); see the README. Said at most once an hour"
)
REFUSED_LIVE_STATUSES: Final = frozenset({"is_live", "is_upcoming", "post_live"})
SECTION_TOLERANCE_S: Final = 0.5  # a section this much shorter than asked for means the media ended
GENERIC_KEY_PREFIX: Final = "url:"  # cache keys of non-YouTube media; YouTube ids never contain ':'
PUBLIC_ONLY: Final = AddressPolicy()
# A yt-dlp failure that may only be the guard's answer (502/504, ffmpeg's exit): the guard says what it was.
_GUARD_ANSWERS: Final = frozenset(
    {
        FetchFailure.SERVER_ERROR,
        FetchFailure.NETWORK,
        FetchFailure.TIMEOUT,
        FetchFailure.UNREADABLE,
        FetchFailure.FAILED,
    }
)


@dataclass(frozen=True, eq=False)
class FetchedAudio:
    """The exact window: 16 kHz mono float32 samples (read-only) and where they lie in the video.

    ``video_id`` is None for media that is not a YouTube video; ``duration_s`` is the video's length, if known.
    """

    samples: npt.NDArray[np.float32]
    window: Window
    url: str
    video_id: str | None
    title: str | None
    duration_s: float | None
    sample_rate: int = TARGET_RATE


@dataclass(frozen=True)
class LinkTarget:
    """A link that passed the host policy: what yt-dlp is given, the video and start it names, and the one yt-dlp
    extractor allowed for it. Whether its host resolves to public addresses is checked when it is fetched."""

    url: str
    video_id: str | None
    start_s: float | None
    extractor: str

    @property
    def cache_id(self) -> str:
        """Names the media for the embedding cache: the video id, or the URL of other media."""
        return self.video_id or GENERIC_KEY_PREFIX + self.url


def link_target(text: str, *, options: FetchOptions) -> LinkTarget:
    """The link in ``text`` (pasted text, Discord's angle brackets), checked against the host policy: the one place
    that decides whether a link may be fetched, before any network. UnsupportedLinkError says why not."""
    link = find_link(text)
    if link is None:
        raise UnsupportedLinkError("that is not a link: paste a YouTube link like https://youtu.be/VIDEO_ID")
    host, _ = _check_host_policy(link, options=options)
    if host in YOUTUBE_HOSTS:
        parsed = parse_youtube_url(link)
        return LinkTarget(parsed.url, parsed.video_id, parsed.start_s, "youtube")
    return LinkTarget(link, None, None, "generic")


def check_url_allowed(url: str, *, options: FetchOptions, addresses: AddressPolicy = PUBLIC_ONLY) -> None:
    """Refuse (UnsupportedLinkError) a URL whose host is not allowed or resolves to an address ``addresses`` does
    not allow (FetchError if it does not resolve). This resolves the host name (DNS) once, as an early answer: the
    guard checks again, on each connection, when the URL is fetched."""
    host, port = _check_host_policy(url, options=options)
    _policy(options, addresses).addresses(host, port)


def _policy(options: FetchOptions, addresses: AddressPolicy) -> AddressPolicy:
    return addresses.allowing_private() if options.allow_private_addresses else addresses


def default_start(duration_s: float, *, window_s: float = WINDOW_S, preferred_s: float = DEFAULT_START_S) -> float:
    """Where the default window starts in media of ``duration_s``: ``min(preferred, duration / 3)``, kept inside."""
    if duration_s <= window_s:
        return 0.0
    return round(min(preferred_s, duration_s / 3, duration_s - window_s), 3)


def fetch_window(
    link: str | LinkTarget,
    *,
    start_s: float | None = None,
    duration_s: float = WINDOW_S,
    options: FetchOptions,
    limits: AudioLimits = AudioLimits(),  # noqa: B008 - frozen, so one shared default is safe
    addresses: AddressPolicy = PUBLIC_ONLY,
) -> FetchedAudio:
    """Download and decode the ``duration_s`` window of a link starting at ``start_s`` (seconds).

    ``link`` is a URL (or text holding one), or a :class:`LinkTarget` that :func:`link_target` already checked.
    ``start_s`` wins over a ``t=`` in the link; with neither, see the module docstring. A YouTube link is
    fetched as that one video; another URL (its host must be allowed explicitly) as one media file. Every
    connection goes to an address that ``addresses`` allows (any, with ``options.allow_private_addresses``); its
    resolver and classifier are injectable for tests. Raises UnsupportedLinkError, FetchError (a DownloadError),
    TooLongError, TooShortError and DecodeError, all with user-safe messages. Blocking: run it off an event loop.
    """
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    if start_s is not None and not start_s >= 0:
        raise ValueError(f"start_s must not be negative, got {start_s}")
    target = link if isinstance(link, LinkTarget) else link_target(link, options=options)
    start = start_s if start_s is not None else target.start_s
    policy = _policy(options, addresses)
    upstream = upstream_proxy(options.proxy, os.environ)
    parts, host = split_link(target.url)
    try:
        policy.addresses(host, parts.port or (443 if parts.scheme.lower() == "https" else 80))  # an early answer
    except FetchError:
        if upstream is None or not upstream.resolves_names:  # else the proxy may know the name where this host cannot
            raise
    from yt_dlp import YoutubeDL
    from yt_dlp.utils import YoutubeDLError, download_range_func

    with (
        tempfile.TemporaryDirectory(prefix="musrec-yt-") as tmp,
        GuardProxy(
            policy,
            timeout_s=options.socket_timeout_s,
            deadline_s=options.fetch_timeout_s,
            max_bytes=options.max_filesize + PAGES_BYTES,
            upstream=upstream,
        ) as guard,
        fetch_environment(ffmpeg_executable(), proxy=guard.url, js_runtimes=options.js_runtimes) as environment,
    ):
        params = ydl_params(options, Path(tmp), target.extractor, proxy=guard.url, environment=environment)
        try:
            with YoutubeDL(params) as ydl:
                info = ydl.extract_info(target.url, download=False, process=False)
                duration = _check_info(info, target, options)
                start, first, last = _section(start, duration, duration_s, options)
                ydl.params["download_ranges"] = download_range_func([], [(first, last)])
                done = ydl.process_ie_result(info, download=True)
        except YoutubeDLError as err:
            raise _failure(err, guard) from None
        stopped = guard.stopped()
        if stopped is not None:  # a refusal or the guard's end, even if yt-dlp got past it (an HLS segment skipped)
            raise stopped
        if str(done.get("protocol", "")).startswith("m3u8"):
            log.warning("%s: only HLS was offered; the window may start up to a segment early", target.cache_id)
        path = _downloaded_file(Path(tmp), options)
        try:
            audio = decode(path, duration_s=min(last - first + 1.0, limits.max_duration_s), limits=limits)
        except DecodeError:
            if duration is None and first > 0:  # an empty section: most likely the start is past the end
                at = clock(start if start is not None else first)
                raise TooShortError(f"there is no audio at {at}; the start may be past the end") from None
            raise
    got_s = audio.duration_s
    # The media ended inside the section: the decode reached the end of the file (it did not stop at the duration
    # limit, which can be shorter than the section) before the section's end.
    if duration is None and audio.source_duration_s is not None and got_s < last - first - SECTION_TOLERANCE_S:
        duration = first + got_s  # the media ended inside the section
    if start is None:
        preferred = options.default_start_s
        start = preferred if duration is None else default_start(duration, window_s=duration_s, preferred_s=preferred)
    if start >= first + got_s:
        raise TooShortError(f"the start time {clock(start)} is past the end of the audio ({clock(first + got_s)})")
    local = choose_window(audio.samples, start_s=start - first, duration_s=duration_s)
    samples = np.array(cut(audio.samples, local), dtype=np.float32)
    samples.setflags(write=False)
    window = Window(round(first + local.start_s, 3), round(first + local.end_s, 3))
    log.info("fetched %s window %.1f-%.1f s", target.cache_id, window.start_s, window.end_s)
    return FetchedAudio(samples, window, target.url, target.video_id, info.get("title"), duration)


def _check_host_policy(url: str, *, options: FetchOptions) -> tuple[str, int]:
    parts, host = split_link(url)
    if host not in options.allowed_hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if options.allowed_hosts == YOUTUBE_HOSTS:
                raise UnsupportedLinkError("only YouTube links are supported") from None
            raise UnsupportedLinkError(f"links to {host} are not supported") from None
        raise UnsupportedLinkError("links to IP addresses are not accepted")
    return host, parts.port or (443 if parts.scheme.lower() == "https" else 80)


def _check_info(info: Mapping[str, Any], target: LinkTarget, options: FetchOptions) -> float | None:
    """Refuse playlists, live streams, premieres, over-long videos and media that is not http(s) or (other than
    YouTube's) not on an allowed host; the duration. Addresses are the guard's to check, on each connection."""
    if info.get("_type", "video") != "video":
        raise UnsupportedLinkError("this link does not lead to a single video")
    if info.get("is_live") or info.get("live_status") in REFUSED_LIVE_STATUSES:
        raise FetchError(FetchFailure.LIVE)
    duration = info.get("duration")
    duration = float(duration) if isinstance(duration, int | float) and duration > 0 else None
    if duration is not None and duration > options.max_video_s:
        raise TooLongError(f"this video is {clock(duration)} long; the limit is {clock(options.max_video_s)}")
    media = {str(f.get(k)) for f in (info.get("formats") or [info]) for k in ("url", "manifest_url") if f.get(k)}
    for url in sorted(media):
        # Only http(s) goes through the guard; other media must stay on allowed hosts (YouTube's is on its CDN).
        if target.extractor == "generic":
            _check_host_policy(url, options=options)
        else:
            split_link(url)
    return duration


def _section(
    start: float | None, duration: float | None, window_s: float, options: FetchOptions
) -> tuple[float | None, float, float]:
    """The window's start (None: decide once the audio is in) and the span to download, widened by ``margin_s``."""
    if duration is None:
        if start is None:  # unknown length: fetch up to the preferred window, decide when the audio is in
            return None, 0.0, options.default_start_s + window_s + options.margin_s
    elif start is None:
        start = default_start(duration, window_s=window_s, preferred_s=options.default_start_s)
    elif start >= duration:
        raise TooShortError(f"the start time {clock(start)} is past the end of the video ({clock(duration)})")
    else:
        start = max(0.0, min(start, duration - window_s))
    return start, max(0.0, start - options.margin_s), start + window_s + options.margin_s


def _downloaded_file(tmp: Path, options: FetchOptions) -> Path:
    files = [p for p in tmp.iterdir() if p.name.startswith("audio.") and not p.name.endswith(".part")]
    if not files:
        log.warning("yt-dlp finished without writing a file")
        raise FetchError(FetchFailure.FAILED)
    if files[0].stat().st_size >= options.max_filesize:
        raise FetchError(FetchFailure.TOO_LARGE)
    return files[0]


def _failure(err: Exception, guard: GuardProxy) -> MusrecError:
    reason = ytdlp_failure(err)
    blocked = guard.error()
    if blocked is not None and (guard.stopped() is not None or reason in _GUARD_ANSWERS):
        log.info("yt-dlp failed (%s), the guard answered: %s", reason.name, blocked)
        return blocked
    level = logging.ERROR if reason in (FetchFailure.NO_FFMPEG, FetchFailure.FAILED) else logging.INFO
    log.log(level, "yt-dlp failed (%s): %s", reason.name, err)
    if reason is FetchFailure.BOT_CHECK:
        bot_check_notice()
    return FetchError(reason)


class _BotCheckNotice:
    """Says what an operator can do about YouTube's bot check, at most once per ``every_s``: each refused request
    would otherwise repeat it."""

    def __init__(self, every_s: float = BOT_CHECK_NOTICE_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._said_at: float | None = None
        self._lock = threading.Lock()  # fetches run in worker threads

    def __call__(self) -> None:
        with self._lock:
            now = self.clock()
            if self._said_at is not None and now - self._said_at < self.every_s:
                return
            self._said_at = now
        log.warning(BOT_CHECK_REMEDIES)


bot_check_notice = _BotCheckNotice()
