"""What is known of a YouTube video: alive (with its title and channel), gone, or unknown.

The one fact every part of the video check shares: a video is *gone* only on YouTube's own word (oEmbed 400, 403
or 404; missing from the Data API's answer); a refusal to answer (429), a server error or a timeout leaves it
*unknown*, which is shown and never recorded.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass

ALIVE, GONE, UNKNOWN = "alive", "gone", "unknown"
STATES = (ALIVE, GONE, UNKNOWN)

# YouTube's own endpoints (REFERENCE.md section 9): the defaults of [videos] oembed_url and api_url.
YOUTUBE_OEMBED_URL = "https://www.youtube.com/oembed"
YOUTUBE_DATA_API_URL = "https://www.googleapis.com/youtube/v3/videos"
API_KEY_ENV = "MUSREC_YOUTUBE_API_KEY"  # a secret: from the environment only, never the configuration file

TEXT_MAX = 200  # a title or channel name is cut here: Discord's field names hold 256, a table line less
_DROPPED = frozenset({"Cc", "Cf", "Co", "Cs"})  # controls, bidi overrides and format marks, private use, surrogates


@dataclass(frozen=True)
class VideoStatus:
    """A video's state (``alive``, ``gone`` or ``unknown``), with its title and channel when alive and known."""

    video_id: str
    state: str
    title: str | None = None
    channel: str | None = None
    checked_at: float | None = None  # seconds since the epoch; None: not checked

    @property
    def available(self) -> bool | None:
        """True when alive, False when gone, None when unknown."""
        return None if self.state == UNKNOWN else self.state == ALIVE

    @property
    def gone(self) -> bool:
        return self.state == GONE

    @classmethod
    def unknown(cls, video_id: str) -> VideoStatus:
        return cls(video_id, UNKNOWN)

    @classmethod
    def alive(cls, video_id: str, *, title: object = None, channel: object = None) -> VideoStatus:
        return cls(video_id, ALIVE, clean_text(title), clean_text(channel), time.time())

    @classmethod
    def dead(cls, video_id: str) -> VideoStatus:
        return cls(video_id, GONE, checked_at=time.time())


def clean_text(text: object) -> str | None:
    """A title or name from YouTube as plain one-line text: control and format characters (terminal escapes,
    bidi overrides) dropped, runs of white space made one space, at most :data:`TEXT_MAX` characters; None when
    nothing is left."""
    if not isinstance(text, str):
        return None
    kept = "".join(" " if c.isspace() else c for c in text if c.isspace() or unicodedata.category(c) not in _DROPPED)
    one_line = " ".join(kept.split())
    if len(one_line) > TEXT_MAX:
        one_line = one_line[: TEXT_MAX - 1].rstrip() + "…"
    return one_line or None
