"""YouTube's oEmbed endpoint as a source of video states: one request per video, no key.

``GET <oembed_url>?url=<watch URL>&format=json`` (REFERENCE.md section 9): 200 gives the title and the channel;
401 means embedding is disabled, and the video still plays on YouTube: alive; 400, 403 and 404 mean malformed,
private and removed: gone. Anything else (429 when YouTube thinks the traffic unusual, 5xx, a timeout, a page that
is not JSON) leaves the video unknown.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from musrec.links.parse import youtube_url
from musrec.videos.status import VideoStatus

log = logging.getLogger(__name__)

BODY_MAX = 64 * 1024  # an oEmbed answer is a few hundred bytes
ALIVE_CODES = frozenset({200, 401})
GONE_CODES = frozenset({400, 403, 404})
USER_AGENT = "musrec (video availability check)"


class OEmbedSource:
    """Checks one video per request at ``url`` (YouTube's oEmbed endpoint, or a stand-in)."""

    batch = 1

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def check(self, video_ids: Sequence[str]) -> list[VideoStatus]:
        """The state of each video (never raises: what cannot be learnt is unknown)."""
        return [self._one(video_id) for video_id in video_ids]

    def _one(self, video_id: str) -> VideoStatus:
        query = urllib.parse.urlencode({"url": youtube_url(video_id, 0), "format": "json"})
        request = urllib.request.Request(f"{self.url}?{query}", headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read(BODY_MAX)
        except urllib.error.HTTPError as err:
            err.close()
            if err.code in ALIVE_CODES:
                return VideoStatus.alive(video_id)
            if err.code in GONE_CODES:
                return VideoStatus.dead(video_id)
            log.debug("oEmbed answered %d for %s: unknown", err.code, video_id)
            return VideoStatus.unknown(video_id)
        except (OSError, ValueError) as err:  # refused, reset, timed out, a malformed URL in the configuration
            log.debug("oEmbed did not answer for %s (%s): unknown", video_id, err)
            return VideoStatus.unknown(video_id)
        try:
            data = json.loads(body)
        except ValueError:
            return VideoStatus.unknown(video_id)
        if not isinstance(data, dict):
            return VideoStatus.unknown(video_id)
        return VideoStatus.alive(video_id, title=data.get("title"), channel=data.get("author_name"))
