"""Why a fetch failed, in words a user can be shown: yt-dlp's errors sorted into a fixed set of reasons.

yt-dlp reports most failures as an error message, not a type, so they are classified by the patterns of
:data:`FAILURE_PATTERNS`. The messages name no URLs, paths or internal tools.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Final

from musrec.errors import DownloadError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class FetchFailure(Enum):
    """Why a fetch failed; the value is the user-facing message."""

    BOT_CHECK = "YouTube refused this server (a bot check); upload the clip as a file instead: that works"
    AGE_RESTRICTED = "this video is age-restricted, so it cannot be fetched"
    PRIVATE = "this video is private"
    MEMBERS_ONLY = "this video is for channel members only"
    REGION_BLOCKED = "this video is not available in the country of this server"
    LIVE = "live streams and premieres cannot be used; try again once it has ended"
    DRM = "this video is copy-protected (DRM)"
    RATE_LIMITED = "YouTube is rate-limiting this server; try again in a few minutes"
    TIMEOUT = "the download timed out; try again"
    NOT_FOUND = "nothing was found at that link (HTTP 404)"
    FORBIDDEN = "the website refused the download (HTTP 403)"
    SERVER_ERROR = "the website had an error; try again later"
    TOO_LARGE = "the audio file is too large"
    TOO_MUCH_DATA = "that link sends far more data than a sound needs"
    NO_FFMPEG = "downloading is not available on this server"
    NO_AUDIO = "no audio could be found at that link"
    UNREADABLE = "the media at that link could not be read (no audio, or damaged)"
    UNAVAILABLE = "this video is unavailable (removed, or the link is wrong)"
    SIGN_IN = "this video can only be watched when signed in to YouTube"
    NETWORK = "could not connect to the website; try again later"
    UNSUPPORTED = "this link cannot be downloaded"
    EXTRACTION = "could not read the video page (YouTube may have changed it); try again later"
    FAILED = "the audio could not be downloaded"


# First match wins, on yt-dlp's message lower-cased with typographic apostrophes made plain: order matters
# ("Private video. Sign in if you've been granted access" is PRIVATE, not SIGN_IN).
FAILURE_PATTERNS: Final[tuple[tuple[re.Pattern[str], FetchFailure], ...]] = tuple(
    (re.compile(pattern), failure)
    for pattern, failure in (
        (r"not a bot|captcha|likely being blocked|unusual traffic", FetchFailure.BOT_CHECK),
        (r"confirm your age|age[- ]restricted|inappropriate for some|age[- ]verification", FetchFailure.AGE_RESTRICTED),
        (r"private video|video is private", FetchFailure.PRIVATE),
        (r"members[- ]only|channel's members|join this channel", FetchFailure.MEMBERS_ONLY),
        (r"in your country|from your location|geo[- ]?restrict", FetchFailure.REGION_BLOCKED),
        (r"live event|premieres? in|premiere will|live stream|livestream|\bis live\b", FetchFailure.LIVE),
        (r"\bdrm\b", FetchFailure.DRM),
        (r"http error 429|too many requests|rate[- ]limit|try again later", FetchFailure.RATE_LIMITED),
        (r"timed out|timeout", FetchFailure.TIMEOUT),
        (r"http error 404|404: not found", FetchFailure.NOT_FOUND),
        (r"http error 403|403: forbidden", FetchFailure.FORBIDDEN),
        (r"http error 5\d\d", FetchFailure.SERVER_ERROR),
        (r"max-filesize|max_filesize", FetchFailure.TOO_LARGE),
        (r"ffmpeg is not installed|ffmpeg not found|ffmpeg could not be found", FetchFailure.NO_FFMPEG),
        (r"requested format is not available|no video formats|no audio|no formats", FetchFailure.NO_AUDIO),
        # ffmpeg, run quiet, says only its exit status: the media (no audio stream, damaged), unless the address
        # guard stopped it (the fetch asks the guard first).
        (r"ffmpeg exited with code", FetchFailure.UNREADABLE),
        (r"unavailable|not available|has been removed|been terminated|does not exist", FetchFailure.UNAVAILABLE),
        (r"sign in|log in|login|registered users", FetchFailure.SIGN_IN),
        (r"unable to connect|connection (refused|reset|aborted)|name or service|name resolution", FetchFailure.NETWORK),
        (r"network is unreachable|no route to host|getaddrinfo|remote end closed|\bssl\b", FetchFailure.NETWORK),
        (r"unsupported url|no suitable extractor", FetchFailure.UNSUPPORTED),
        (
            r"unable to extract|failed to extract|player response|challenge|signature|javascript",
            FetchFailure.EXTRACTION,
        ),
    )
)


class FetchError(DownloadError):
    """A fetch failed for ``reason``; ``str(err)`` is its user-facing message."""

    def __init__(self, reason: FetchFailure) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.expected = reason is not FetchFailure.NO_FFMPEG  # a broken installation is a bug, not the user's


def classify_failure(message: str) -> FetchFailure:
    """The reason behind a yt-dlp error message, by :data:`FAILURE_PATTERNS`; FAILED if nothing matches."""
    text = _ANSI.sub("", message).replace("\u2019", "'").lower()
    return next((failure for pattern, failure in FAILURE_PATTERNS if pattern.search(text)), FetchFailure.FAILED)


def ytdlp_failure(err: Exception) -> FetchFailure:
    """The reason behind an exception yt-dlp raised: a geo-restriction by its type, anything else by its message."""
    from yt_dlp.utils import GeoRestrictedError

    cause = getattr(err, "exc_info", None)
    if isinstance(err, GeoRestrictedError) or (cause and isinstance(cause[1], GeoRestrictedError)):
        return FetchFailure.REGION_BLOCKED
    return classify_failure(str(err))
