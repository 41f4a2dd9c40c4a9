"""The YouTube Data API's ``videos.list`` as a source of video states: up to 50 videos a call, with a key.

``GET <api_url>?part=status,snippet&id=A,B,...&key=KEY`` (REFERENCE.md section 9) costs one quota unit a call
(10,000 a day free). A video that no longer exists is simply missing from ``items``: gone; so is one listed as
private or whose upload was deleted, failed or rejected. A call that fails (a refused or exhausted key, 5xx, a
timeout) leaves all its videos unknown. The key is a secret: it never reaches a log or an error message.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from musrec.videos.oembed import USER_AGENT
from musrec.videos.status import VideoStatus

log = logging.getLogger(__name__)

IDS_PER_CALL = 50  # the API's maximum
BODY_MAX = 4 * 1024 * 1024  # 50 videos' snippets: descriptions included, well under this
_GONE_UPLOADS = frozenset({"deleted", "failed", "rejected"})


class DataApiSource:
    """Checks up to :data:`IDS_PER_CALL` videos per call at ``url`` (the Data API's videos endpoint, or a stand-in)."""

    batch = IDS_PER_CALL

    def __init__(self, url: str, *, key: str, timeout_s: float) -> None:
        self.url = url
        self._key = key
        self.timeout_s = timeout_s

    def check(self, video_ids: Sequence[str]) -> list[VideoStatus]:
        """The state of each video, in order (never raises: what cannot be learnt is unknown)."""
        ids = list(dict.fromkeys(video_ids))
        statuses: list[VideoStatus] = []
        for lo in range(0, len(ids), IDS_PER_CALL):
            statuses += self._call(ids[lo : lo + IDS_PER_CALL])
        return statuses

    def _call(self, ids: list[str]) -> list[VideoStatus]:
        query = urllib.parse.urlencode(
            {"part": "status,snippet", "id": ",".join(ids), "maxResults": IDS_PER_CALL, "key": self._key}
        )
        request = urllib.request.Request(f"{self.url}?{query}", headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                data = json.loads(response.read(BODY_MAX))
            items = data["items"]
            found = {item["id"]: item for item in items if isinstance(item, dict) and "id" in item}
        except urllib.error.HTTPError as err:
            err.close()
            # 400: a malformed key; 403: refused or out of quota. Either way nothing is learnt about the videos.
            log.warning("the YouTube Data API answered %d: %d videos left unchecked", err.code, len(ids))
            return [VideoStatus.unknown(video_id) for video_id in ids]
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.debug("the YouTube Data API did not answer (%s): %d videos unknown", type(err).__name__, len(ids))
            return [VideoStatus.unknown(video_id) for video_id in ids]
        return [_status(video_id, found.get(video_id)) for video_id in ids]


def _status(video_id: str, item: dict[str, object] | None) -> VideoStatus:
    if item is None:
        return VideoStatus.dead(video_id)
    status = item.get("status") if isinstance(item.get("status"), dict) else {}
    snippet = item.get("snippet") if isinstance(item.get("snippet"), dict) else {}
    assert isinstance(status, dict) and isinstance(snippet, dict)
    if status.get("privacyStatus") == "private" or status.get("uploadStatus") in _GONE_UPLOADS:
        return VideoStatus.dead(video_id)
    return VideoStatus.alive(video_id, title=snippet.get("title"), channel=snippet.get("channelTitle"))
