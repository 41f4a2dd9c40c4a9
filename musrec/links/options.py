"""What may be fetched for a link and how: :class:`FetchOptions`, the library's own option type that the
configuration's ``[youtube]`` section extends. The defaults are the production policy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from musrec.links.parse import YOUTUBE_HOSTS, normal_host
from musrec.links.upstream import check_proxy_url

DEFAULT_START_S: Final = 30.0
MARGIN_S: Final = 2.0  # fetched on either side of the window, then trimmed away
MAX_VIDEO_S: Final = 3 * 3600.0
MAX_FILESIZE_MB: Final = 20.0  # a 14-second section is a few hundred kB; this only stops runaways
SOCKET_TIMEOUT_S: Final = 15.0
# A whole fetch (yt-dlp's requests, then ffmpeg's download of the section) takes a few seconds; a server that keeps
# a download trickling would otherwise hold a worker for as long as it likes (see musrec.links.guard).
FETCH_TIMEOUT_S: Final = 120.0
RETRIES: Final = 1


def parse_extractor_args(text: str) -> dict[str, dict[str, list[str]]]:
    """yt-dlp's ``--extractor-args`` syntax, several separated by spaces: ``KEY:ARG=V1,V2;ARG2=V`` ->
    ``{key: {arg: [v1, v2], arg2: [v]}}`` (keys lower-cased, ``-`` in argument names read as ``_``, as yt-dlp
    does). ValueError, naming the part, for what is not that."""
    parsed: dict[str, dict[str, list[str]]] = {}
    for part in text.split():
        key, colon, args = part.partition(":")
        if not colon or not key or not args:
            raise ValueError(f"{part!r} is not KEY:ARG=VALUE")
        into = parsed.setdefault(key.lower(), {})
        for arg in args.split(";"):
            name, equals, values = arg.partition("=")
            if not equals or not name.strip():
                raise ValueError(f"{arg!r} in {part!r} is not ARG=VALUE")
            into[name.strip().lower().replace("-", "_")] = values.split(",")
    return parsed


@dataclass(frozen=True, kw_only=True)
class FetchOptions:
    """What may be fetched and how. The defaults are the production policy: YouTube only, public addresses only.

    ``allowed_hosts`` are exact host names (or IP literals). ``allow_private_addresses`` lets connections reach
    any address (the guard stays in the path): only for tests against a loopback server, never in production.
    ``js_runtimes`` names JavaScript runtimes yt-dlp may use for YouTube's player challenges.
    ``ytdlp_cache_dir`` keeps yt-dlp's player cache between fetches (None: no cache, nothing written).
    ``proxy`` is an egress proxy that the guard connects through (:mod:`musrec.links.upstream`; its credentials
    come from the environment). ``pot_provider_url`` is a PO-token provider's server (bgutil-ytdlp-pot-provider)
    and ``extractor_args`` more of yt-dlp's extractor arguments (:mod:`musrec.links.ytdlp_params`).
    """

    allowed_hosts: tuple[str, ...] = YOUTUBE_HOSTS
    allow_private_addresses: bool = False
    max_video_s: float = MAX_VIDEO_S
    max_filesize_mb: float = MAX_FILESIZE_MB
    margin_s: float = MARGIN_S
    socket_timeout_s: float = SOCKET_TIMEOUT_S
    fetch_timeout_s: float = FETCH_TIMEOUT_S
    retries: int = RETRIES
    default_start_s: float = DEFAULT_START_S
    cookies: Path | None = None
    js_runtimes: tuple[str, ...] = ("deno", "node")
    ytdlp_cache_dir: Path | None = None
    proxy: str | None = None
    pot_provider_url: str | None = None
    extractor_args: str = ""

    def __post_init__(self) -> None:
        if self.proxy:
            check_proxy_url(self.proxy)
        parse_extractor_args(self.extractor_args)
        if min(self.max_video_s, self.max_filesize_mb, self.socket_timeout_s, self.fetch_timeout_s) <= 0:
            raise ValueError("max_video_s, max_filesize_mb, socket_timeout_s and fetch_timeout_s must be positive")
        if self.margin_s < 0 or self.retries < 0 or self.default_start_s < 0:
            raise ValueError("margin_s, retries and default_start_s must not be negative")
        object.__setattr__(self, "allowed_hosts", tuple(normal_host(h) for h in self.allowed_hosts))

    @property
    def max_filesize(self) -> int:
        """The largest download, in bytes."""
        return int(self.max_filesize_mb * 2**20)
