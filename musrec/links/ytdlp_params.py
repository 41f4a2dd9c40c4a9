"""What yt-dlp is given for one fetch: its parameters, from the fetch options and the fetch's guard and launchers.

Besides the fixed choices (a section's audio, bounded, quiet, through the guard), the operator's remedies for
YouTube's "Sign in to confirm you're not a bot" arrive here: cookies, the JavaScript runtimes, a PO-token
provider (``[youtube] pot_provider_url``: the bgutil-ytdlp-pot-provider plugin, the ``pot`` extra) and any
other extractor arguments (``[youtube] extractor_args``, in yt-dlp's own ``--extractor-args`` syntax).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Final

from musrec.links.guard import FFMPEG_PROTOCOLS
from musrec.links.options import FetchOptions, parse_extractor_args
from musrec.links.ytdlp_env import FetchEnvironment

log = logging.getLogger(__name__)

MICROSECONDS: Final = 1_000_000
# Direct http(s) streams first: ffmpeg cuts them to the millisecond, while a cut into HLS lands on a segment start.
_DIRECT = "[protocol^=http][protocol!*=dash]"
FORMAT: Final = f"bestaudio{_DIRECT}/bestaudio/best{_DIRECT}/best"
POT_PROVIDER_KEY: Final = "youtubepot-bgutilhttp"  # the bgutil plugin's HTTP provider, as yt-dlp names it
# Pages uncompressed: yt-dlp inflates a compressed page whole, past what the address guard counted.
HEADERS: Final = {"Accept-Encoding": "identity"}


def extractor_args(options: FetchOptions) -> dict[str, dict[str, list[str]]]:
    """yt-dlp's ``extractor_args``: ``options.extractor_args``, and the PO-token provider's URL."""
    args = parse_extractor_args(options.extractor_args)
    if options.pot_provider_url:
        args.setdefault(POT_PROVIDER_KEY, {})["base_url"] = [options.pot_provider_url]
    return args


def ydl_params(
    options: FetchOptions, tmp: Path, extractor: str, *, proxy: str, environment: FetchEnvironment
) -> dict[str, Any]:
    """The parameters of the ``YoutubeDL`` of one fetch that writes into ``tmp`` and connects through ``proxy``."""
    params: dict[str, Any] = {
        "format": FORMAT,
        "noplaylist": True,
        "allowed_extractors": [extractor],
        "force_keyframes_at_cuts": True,  # re-encode at the cuts: a copied section starts at an earlier keyframe
        "max_filesize": options.max_filesize,
        "socket_timeout": options.socket_timeout_s,
        "retries": options.retries,
        "fragment_retries": options.retries,
        "extractor_retries": options.retries,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "color": "never",
        "logger": YtdlpLogger(),
        "http_headers": dict(HEADERS),
        # ffmpeg's launcher, under the decoders' memory cap: it reads the media. yt-dlp finds no ffprobe beside it.
        "ffmpeg_location": environment.ffmpeg,
        "paths": {"home": str(tmp), "temp": str(tmp)},
        "outtmpl": {"default": "audio.%(ext)s"},
        "fixup": "never",
        "updatetime": False,
        "cachedir": str(options.ytdlp_cache_dir) if options.ytdlp_cache_dir else False,
        "js_runtimes": environment.js_runtimes,
        "extractor_args": extractor_args(options),
        "proxy": proxy,  # the address guard: every request, redirect and media download of yt-dlp's
        # ffmpeg fetches the section itself: through the guard too, which its environment names as http_proxy (its
        # http and tls protocols read it; the launcher and yt-dlp both set it; not -http_proxy, which would show the
        # guard's credentials to every local user in its command line), only over http(s), with its stalls and its
        # output bounded like yt-dlp's own downloads. It keeps only the audio: re-encoding a video at the cuts is
        # wasted work, and at 720p more memory than its cap.
        "external_downloader_args": {
            "ffmpeg_i": [
                *("-rw_timeout", str(round(options.socket_timeout_s * MICROSECONDS))),
                *("-protocol_whitelist", FFMPEG_PROTOCOLS),
            ],
            "ffmpeg_o": ["-vn", "-sn", "-dn", "-fs", str(options.max_filesize)],
        },
    }
    if options.cookies is not None:
        # yt-dlp writes its cookie jar back to the file: give it a private copy.
        try:
            params["cookiefile"] = str(shutil.copyfile(options.cookies, tmp / "cookies.txt"))
        except OSError as err:
            log.error("cannot read the cookies file, fetching without cookies: %s", err)
    return params


class YtdlpLogger:
    """Routes yt-dlp's output into logging; its errors are raised too, and logged once by the fetch."""

    def debug(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

    def warning(self, message: str) -> None:
        log.info("yt-dlp: %s", message)  # mostly notes ("falling back on generic"); what matters is raised

    info = error = debug
