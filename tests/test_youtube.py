"""musrec.links: link parsing, the fetch policy, error classification, and real yt-dlp against a loopback server."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from youtube_fixtures import (
    LOOPBACK,
    MediaServer,
    ToneEmbedder,
    dead_url,
    dominant_hz,
    first_change_s,
    hls,
    loopback_options,
    media_server,
    step_hz,
    stepped_tones,
    video_only,
)

from musrec.audio.limits import AudioLimits
from musrec.cache import CacheKey, EmbeddingCache
from musrec.config import load_config
from musrec.configured import embedder_identity
from musrec.errors import DecodeError, DownloadError, TooLongError, TooShortError, UnsupportedLinkError
from musrec.links.errors import FAILURE_PATTERNS, FetchError, FetchFailure, classify_failure
from musrec.links.fetch import FetchOptions, check_url_allowed, default_start, fetch_window
from musrec.links.parse import YOUTUBE_HOSTS, find_link, parse_timestamp, parse_youtube_url
from musrec.pipeline import Musrec

pytestmark = pytest.mark.timeout(120)

ID = "dQw4w9WgXcQ"
ID2 = "jNQXAC9IVRw"
PLAYLIST = "PLx0sYbCqOb8TBPRdmBHs5Iftvv9TPboYG"
RATE = 16000

# --- links ---------------------------------------------------------------------------------------------------

VALID_LINKS = [
    (f"https://www.youtube.com/watch?v={ID}", ID, None),
    (f"http://youtube.com/watch?v={ID}", ID, None),
    (f"https://m.youtube.com/watch?v={ID}&feature=youtu.be", ID, None),
    (f"https://music.youtube.com/watch?v={ID}&list=RDAMVM{ID}", ID, None),
    (f"https://www.youtube.com/watch?v={ID}&list={PLAYLIST}&index=2", ID, None),
    (f"https://www.youtube.com/watch?feature=share&v={ID}", ID, None),
    (f"https://www.youtube.com/watch?v={ID}&v={ID2}", ID, None),
    (f"https://www.youtube.com/watch/{ID}", ID, None),
    (f"https://youtu.be/{ID}", ID, None),
    (f"https://youtu.be/{ID}?si=AbCdEfGhIjKlMnOp", ID, None),
    (f"https://youtu.be/{ID}?t=42", ID, 42.0),
    (f"https://youtu.be/{ID}?si=x&t=1m30s", ID, 90.0),
    (f"https://www.youtube.com/watch?v={ID}&t=1h2m3s", ID, 3723.0),
    (f"https://www.youtube.com/watch?v={ID}#t=90", ID, 90.0),
    (f"https://www.youtube.com/watch?v={ID}#t=1:30", ID, 90.0),
    (f"https://www.youtube.com/watch?v={ID}&t=0", ID, 0.0),
    (f"https://www.youtube.com/watch?v={ID}&t=bogus", ID, None),
    (f"https://m.youtube.com/watch?v={ID}&time_continue=15", ID, 15.0),
    (f"https://www.youtube.com/shorts/{ID2}", ID2, None),
    (f"https://youtube.com/shorts/{ID2}?feature=share", ID2, None),
    (f"https://www.youtube.com/live/{ID2}?si=abc&t=600", ID2, 600.0),
    (f"https://www.youtube.com/embed/{ID2}?start=30", ID2, 30.0),
    (f"https://www.youtube-nocookie.com/embed/{ID2}?start=45&autoplay=1", ID2, 45.0),
    (f"https://youtube-nocookie.com/embed/{ID2}", ID2, None),
    (f"https://www.youtube.com/v/{ID2}", ID2, None),
    ("HTTPS://WWW.YOUTUBE.COM/watch?v=a-b_c1D2e3F", "a-b_c1D2e3F", None),
    (f"https://www.youtube.com./watch?v={ID}", ID, None),
    (f"https://www.youtube.com:443/watch?v={ID}", ID, None),
    ("<https://youtu.be/abcdefghij_>", "abcdefghij_", None),
    (f"youtu.be/{ID}", ID, None),
    (f"www.youtube.com/watch?v={ID}&t=01:02:03", ID, 3723.0),
]

REFUSED_LINKS = [
    (f"https://www.youtube.com/playlist?list={PLAYLIST}", "playlist"),
    (f"https://www.youtube.com/watch?list={PLAYLIST}", "playlist"),
    (f"https://www.youtube.com/embed/videoseries?list={PLAYLIST}", "playlist"),
    ("https://music.youtube.com/playlist?list=OLAK5uy_kHx", "playlist"),
    ("https://www.youtube.com/@SomeChannel", "does not point to a video"),
    ("https://www.youtube.com/channel/UC38IQsAvIsxxjztdMZQtwHA", "does not point to a video"),
    ("https://www.youtube.com/results?search_query=jazz", "does not point to a video"),
    ("https://www.youtube.com/", "does not point to a video"),
    ("https://youtu.be/", "does not point to a video"),
    ("https://www.youtube.com/watch?v=short", "no valid video id"),
    ("https://www.youtube.com/watch?v=", "does not point to a video"),
    ("https://vimeo.com/123456", "only YouTube"),
    (f"https://youtube.com.evil.example/watch?v={ID}", "only YouTube"),
    (f"https://evil.example/?u=https://www.youtube.com/watch?v={ID}", "only YouTube"),
    (f"https://www.y\u03bfutube.com/watch?v={ID}", "only YouTube"),  # a Greek omicron
    (f"http://127.0.0.1/watch?v={ID}", "only YouTube"),
    (f"https://youtube.com@evil.example/watch?v={ID}", "user name"),
    (f"https://user:pass@www.youtube.com/watch?v={ID}", "user name"),
    (f"ftp://www.youtube.com/watch?v={ID}", "http and https"),
    ("javascript:alert(1)", "http and https"),
    ("not a link at all", "http and https"),
    (f"https://www.youtube.com:8080/watch?v={ID}", "not a usable"),
    (f"https://www.youtube.com:99999/watch?v={ID}", "not a valid link"),
]


@pytest.mark.parametrize(("url", "video_id", "start_s"), VALID_LINKS)
def test_parse_youtube_url(url: str, video_id: str, start_s: float | None) -> None:
    link = parse_youtube_url(url)
    assert (link.video_id, link.start_s) == (video_id, start_s)
    assert link.url == f"https://www.youtube.com/watch?v={video_id}"


@pytest.mark.parametrize(("url", "reason"), REFUSED_LINKS)
def test_parse_youtube_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(UnsupportedLinkError, match=reason) as caught:
        parse_youtube_url(url)
    assert "evil" not in str(caught.value) and "127.0.0.1" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0), ("90s", 90.0), ("1m30s", 90.0), ("1h2m3s", 3723.0), ("1:30", 90.0), ("01:02:03", 3723.0),
        ("0", 0.0), ("1h", 3600.0), ("2m", 120.0), ("1M30S", 90.0), ("90.5", 90.5), (" 45 ", 45.0), ("0:05", 5.0),
        ("", None), ("abc", None), ("1:2:3:4", None), ("-5", None), ("1m30x", None), ("s", None), ("1.5.2", None),
    ],
)  # fmt: skip
def test_parse_timestamp(text: str, seconds: float | None) -> None:
    assert parse_timestamp(text) == seconds


@pytest.mark.parametrize(
    ("text", "link"),
    [
        (f"check this out <https://youtu.be/{ID}>", f"https://youtu.be/{ID}"),
        (f"https://youtu.be/{ID}.", f"https://youtu.be/{ID}"),
        (f"(see https://www.youtube.com/watch?v={ID}&t=30)", f"https://www.youtube.com/watch?v={ID}&t=30"),
        (f"first https://example.com/a then https://youtu.be/{ID} !", f"https://youtu.be/{ID}"),
        ("only https://example.com/song.mp3!", "https://example.com/song.mp3"),
        (f"try youtu.be/{ID} please", f"https://youtu.be/{ID}"),
        (f"||https://youtu.be/{ID}||", f"https://youtu.be/{ID}"),
        ("**https://youtu.be/abcdefghij_**", "https://youtu.be/abcdefghij_"),
        (f"[song](https://youtu.be/{ID})", f"https://youtu.be/{ID}"),
        ("me@youtube.com/x and nothing else", None),
        ("no links here", None),
    ],
)
def test_find_link(text: str, link: str | None) -> None:
    assert find_link(text) == link


def test_default_start() -> None:
    assert default_start(3600.0) == 30.0  # long: 30 s in
    assert default_start(60.0) == 20.0  # short: a third in
    assert default_start(15.0) == 5.0  # the window must fit
    assert default_start(8.0) == 0.0  # shorter than the window: all of it


# --- the fetch policy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed", "reason"),
    [
        ("https://example.com/x.mp3", YOUTUBE_HOSTS, "only YouTube"),
        ("http://127.0.0.1/x.mp3", YOUTUBE_HOSTS, "IP addresses"),
        ("http://[::1]/x.mp3", YOUTUBE_HOSTS, "IP addresses"),
        ("http://2130706433/x.mp3", YOUTUBE_HOSTS, "only YouTube"),  # 127.0.0.1 as one number
        ("https://youtube.com@127.0.0.1/", YOUTUBE_HOSTS, "user name"),
        ("http://localhost:8080/a.mp3", ("localhost",), "private network"),
        ("http://LOCALHOST./a.mp3", ("localhost",), "private network"),
        ("http://127.0.0.1:8080/a.mp3", ("127.0.0.1",), "private network"),
        ("http://[::1]:8080/a.mp3", ("::1",), "private network"),
        ("http://[::ffff:127.0.0.1]/a.mp3", ("::ffff:127.0.0.1",), "private network"),
        ("http://[2002:7f00:1::1]/a.mp3", ("2002:7f00:1::1",), "private network"),  # 6to4 around 127.0.0.1
        ("http://[fe80::1]/a.mp3", ("fe80::1",), "private network"),
        ("http://169.254.169.254/latest/meta-data/", ("169.254.169.254",), "private network"),
        ("http://10.1.2.3/a.mp3", ("10.1.2.3",), "private network"),
        ("http://192.168.1.1/a.mp3", ("192.168.1.1",), "private network"),
        ("http://100.64.0.1/a.mp3", ("100.64.0.1",), "private network"),
        ("http://0.0.0.0/a.mp3", ("0.0.0.0",), "private network"),
        ("http://224.0.0.251/a.mp3", ("224.0.0.251",), "private network"),
        ("http://240.0.0.1/a.mp3", ("240.0.0.1",), "private network"),
    ],
)
def test_check_url_allowed_refuses(url: str, allowed: tuple[str, ...], reason: str) -> None:
    with pytest.raises(UnsupportedLinkError, match=reason):
        check_url_allowed(url, options=FetchOptions(allowed_hosts=allowed))


def test_check_url_allowed_accepts() -> None:
    check_url_allowed("http://8.8.8.8/a.mp3", options=FetchOptions(allowed_hosts=("8.8.8.8",)))  # public, no DNS
    check_url_allowed(
        "http://localhost:8/a.mp3", options=FetchOptions(allowed_hosts=("localhost",), allow_private_addresses=True)
    )
    with pytest.raises(UnsupportedLinkError, match="IP addresses"):  # the opt-in does not widen the allow-list
        check_url_allowed(
            "http://127.0.0.1/", options=FetchOptions(allowed_hosts=("localhost",), allow_private_addresses=True)
        )


def test_private_addresses_are_refused_by_default() -> None:
    assert FetchOptions().allow_private_addresses is False
    assert FetchOptions().allowed_hosts == YOUTUBE_HOSTS


# --- error classification ------------------------------------------------------------------------------------

YT = "ERROR: [youtube] dQw4w9WgXcQ: "
COOKIES = (
    " Use --cookies-from-browser or --cookies for the authentication. See  https://github.com/yt-dlp/yt-dlp/wiki/FAQ"
)
YT_DLP_MESSAGES = [
    (YT + "Sign in to confirm you\u2019re not a bot." + COOKIES, FetchFailure.BOT_CHECK),
    (YT + "All player responses are invalid. Your IP is likely being blocked by Youtube", FetchFailure.BOT_CHECK),
    (YT + "Sign in to confirm your age. This video may be inappropriate for some users." + COOKIES,
     FetchFailure.AGE_RESTRICTED),
    (YT + "Private video. Sign in if you've been granted access to this video." + COOKIES, FetchFailure.PRIVATE),
    (YT + "Video unavailable. This video is private", FetchFailure.PRIVATE),
    (YT + "Video unavailable", FetchFailure.UNAVAILABLE),
    (YT + "Video unavailable. This video has been removed by the uploader", FetchFailure.UNAVAILABLE),
    (YT + "Video unavailable. This video is no longer available because the YouTube account associated with this "
     "video has been terminated.", FetchFailure.UNAVAILABLE),
    (YT + "This video has been removed for violating YouTube's Terms of Service", FetchFailure.UNAVAILABLE),
    (YT + "Video unavailable. The uploader has not made this video available in your country",
     FetchFailure.REGION_BLOCKED),
    (YT + "The uploader has not made this video available in your country\nThis video is available in Germany.\n"
     "You might want to use a VPN or a proxy server (with --proxy) to workaround.", FetchFailure.REGION_BLOCKED),
    (YT + "This live event will begin in 3 hours.", FetchFailure.LIVE),
    (YT + "Premieres in 2 days", FetchFailure.LIVE),
    (YT + "This live stream recording is not available.", FetchFailure.LIVE),
    (YT + "Join this channel to get access to members-only content like this video, and other exclusive perks.",
     FetchFailure.MEMBERS_ONLY),
    (YT + "This video is available to this channel's members on level: Tier 1 (or any higher level).",
     FetchFailure.MEMBERS_ONLY),
    (YT + "This video is DRM protected", FetchFailure.DRM),
    (YT + "Unable to download API page: HTTP Error 429: Too Many Requests (caused by <HTTPError 429: Too Many "
     "Requests>)", FetchFailure.RATE_LIMITED),
    (YT + "This content isn\u2019t available, try again later. The current session has been rate-limited by YouTube "
     "for up to an hour.", FetchFailure.RATE_LIMITED),
    (YT + "Unable to download webpage: The read operation timed out (caused by TransportError('The read operation "
     "timed out'))", FetchFailure.TIMEOUT),
    ("ERROR: [generic] Unable to download webpage: HTTP Error 404: Not Found (caused by <HTTPError 404: Not Found>)",
     FetchFailure.NOT_FOUND),
    ("ERROR: unable to download video data: HTTP Error 403: Forbidden", FetchFailure.FORBIDDEN),
    ("ERROR: [generic] Unable to download webpage: HTTP Error 503: Service Unavailable", FetchFailure.SERVER_ERROR),
    (YT + "Requested format is not available. Use --list-formats for a list of available formats",
     FetchFailure.NO_AUDIO),
    ("ERROR: You have requested downloading the video partially, but ffmpeg is not installed. Aborting",
     FetchFailure.NO_FFMPEG),
    (YT + "This video is only available for registered users", FetchFailure.SIGN_IN),
    (YT + "Unable to download webpage: [Errno 111] Connection refused (caused by TransportError('[Errno 111] "
     "Connection refused'))", FetchFailure.NETWORK),
    (YT + "Unable to download webpage: [Errno -3] Temporary failure in name resolution", FetchFailure.NETWORK),
    ("ERROR: Unsupported URL: https://example.com/page", FetchFailure.UNSUPPORTED),
    (YT + "Failed to extract any player response; please report this issue on  https://github.com/yt-dlp/yt-dlp/issues",
     FetchFailure.EXTRACTION),
    ("\x1b[0;31mERROR:\x1b[0m [youtube] dQw4w9WgXcQ: Private video", FetchFailure.PRIVATE),
    ("ERROR: [download] File is larger than max-filesize (31457280 bytes > 20971520 bytes). Aborting.",
     FetchFailure.TOO_LARGE),
    ("ERROR: ffmpeg exited with code 1", FetchFailure.UNREADABLE),
    ("something nobody has seen before", FetchFailure.FAILED),
]  # fmt: skip


@pytest.mark.parametrize(("message", "reason"), YT_DLP_MESSAGES)
def test_classify_failure(message: str, reason: FetchFailure) -> None:
    assert classify_failure(message) is reason


def test_every_failure_is_reachable_and_user_safe() -> None:
    classified = {reason for _, reason in YT_DLP_MESSAGES}
    assert {reason for _, reason in FAILURE_PATTERNS} <= classified
    for reason in FetchFailure:
        message = str(FetchError(reason))
        assert message == reason.value and len(message) < 90
        assert not any(bad in message.lower() for bad in ("http:", "https:", "/", "yt-dlp", "ffmpeg", "traceback"))
    assert isinstance(FetchError(FetchFailure.PRIVATE), DownloadError)
    assert FetchError(FetchFailure.PRIVATE).expected and not FetchError(FetchFailure.NO_FFMPEG).expected


# --- the download path, with real yt-dlp and ffmpeg against a loopback server -------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaServer]:
    root = tmp_path_factory.mktemp("media")
    for codec in ("m4a", "webm"):
        stepped_tones(root / f"tones.{codec}", seconds=60, codec=codec)
    stepped_tones(root / "short.m4a", seconds=15, codec="m4a")
    hls(root / "vod", stepped_tones(root / "long.m4a", seconds=120, codec="m4a"))
    hls(root / "live", root / "long.m4a", live=True)
    video_only(root / "silent-film.mp4")
    (root / "notes.txt").write_text("not audio\n" * 100)
    with media_server(root) as served:
        yield served


@pytest.fixture
def clean_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every temporary file and directory at an empty directory, to see that fetches leave nothing."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def _tone_at(samples: np.ndarray, second: int) -> float:
    return dominant_hz(samples[second * RATE : (second + 1) * RATE])


@pytest.mark.parametrize("codec", ["m4a", "webm"])
def test_fetch_window_cuts_exactly(server: MediaServer, codec: str) -> None:
    got = fetch_window(server.media(f"tones.{codec}"), start_s=15.0, options=loopback_options())
    assert (got.window.start_s, got.window.end_s) == (15.0, 25.0)
    assert got.samples.dtype == np.float32 and len(got.samples) == 10 * RATE and got.sample_rate == RATE
    assert not got.samples.flags.writeable
    assert _tone_at(got.samples, 0) == step_hz(1) and _tone_at(got.samples, 9) == step_hz(2)
    assert first_change_s(got.samples, step_hz(1), step_hz(2)) == pytest.approx(5.0, abs=0.03)
    assert got.video_id is None and got.title == "tones" and got.url == server.media(f"tones.{codec}")


def test_default_window_skips_the_intro(server: MediaServer) -> None:
    got = fetch_window(server.media("tones.m4a"), options=loopback_options())
    assert (got.window.start_s, got.window.end_s) == (30.0, 40.0)
    assert {_tone_at(got.samples, s) for s in range(10)} == {step_hz(3)}


def test_default_window_of_a_short_file(server: MediaServer) -> None:
    got = fetch_window(server.media("short.m4a"), options=loopback_options())
    assert (got.window.start_s, got.window.end_s) == (5.0, 15.0)  # a third in would not fit; the last 10 s
    assert got.duration_s == pytest.approx(15.0, abs=0.1)


def test_a_duration_limit_shorter_than_the_section_says_nothing_of_the_length(server: MediaServer) -> None:
    """A window as long as the duration limit (as a library fetches a track's first ``max_track_s``): the decode
    stops at the limit, inside the section, so the media's length stays unknown rather than taken to be the limit;
    media that does end inside the section still gives its length."""
    limits = AudioLimits(max_duration_s=20.0)
    got = fetch_window(server.media("tones.m4a"), start_s=0.0, duration_s=20.0, options=loopback_options(),
                       limits=limits)  # fmt: skip
    assert (got.window.start_s, got.window.end_s) == (0.0, 20.0) and got.duration_s is None
    short = fetch_window(server.media("short.m4a"), start_s=0.0, duration_s=20.0, options=loopback_options(),
                         limits=limits)  # fmt: skip
    assert short.duration_s == pytest.approx(15.0, abs=0.1) and short.window.end_s == pytest.approx(15.0, abs=0.1)


def test_window_moves_back_to_fit_before_the_end(server: MediaServer) -> None:
    known = fetch_window(server.media("vod/index.m3u8"), start_s=115.0, options=loopback_options())
    assert (known.window.start_s, known.window.end_s) == (110.0, 120.0) and len(known.samples) == 10 * RATE
    # Length unknown until the media is read: the window can only move back into the margin that was fetched.
    unknown = fetch_window(server.media("tones.m4a"), start_s=55.0, options=loopback_options())
    assert (unknown.window.start_s, unknown.window.end_s) == (53.0, 60.0) and len(unknown.samples) == 7 * RATE
    assert _tone_at(unknown.samples, 6) == step_hz(5)


def test_start_past_the_end(server: MediaServer) -> None:
    with pytest.raises(TooShortError, match="1:40; the start may be past the end"):
        fetch_window(server.media("tones.m4a"), start_s=100.0, options=loopback_options())
    with pytest.raises(TooShortError, match="past the end of the video"):  # known duration: refused before media
        fetch_window(server.media("vod/index.m3u8"), start_s=500.0, options=loopback_options())


def test_only_the_section_is_downloaded(server: MediaServer) -> None:
    before = len(server.requests)
    got = fetch_window(server.media("vod/index.m3u8"), options=loopback_options())
    assert got.duration_s == pytest.approx(120.0, abs=0.1)
    assert (got.window.start_s, got.window.end_s) == (30.0, 40.0)  # known length: default start without media
    segments = {path.rsplit("/", 1)[1] for path, _ in server.requests[before:] if path.endswith(".ts")}
    assert segments and segments <= {"seg0.ts", "seg1.ts", "seg2.ts", "seg3.ts", "seg4.ts"}  # of 12


def test_live_stream_is_refused_before_download(server: MediaServer) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_window(server.media("live/index.m3u8"), options=loopback_options())
    assert caught.value.reason is FetchFailure.LIVE
    assert server.count("/media/live/seg") == 0


def test_long_video_is_refused_before_download(server: MediaServer) -> None:
    before = server.count("/media/vod/seg")
    with pytest.raises(TooLongError, match="2:00 long; the limit is 1:00"):
        fetch_window(server.media("vod/index.m3u8"), start_s=0.0, options=loopback_options(max_video_s=60))
    assert server.count("/media/vod/seg") == before


@pytest.mark.parametrize(
    ("status", "reason"),
    [(404, FetchFailure.NOT_FOUND), (403, FetchFailure.FORBIDDEN), (500, FetchFailure.SERVER_ERROR)],
)
def test_http_errors(server: MediaServer, status: int, reason: FetchFailure) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_window(f"{server.url}/status/{status}", options=loopback_options())
    assert caught.value.reason is reason and LOOPBACK not in str(caught.value)


def test_nothing_listening(server: MediaServer) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_window(dead_url(), options=loopback_options())
    assert caught.value.reason is FetchFailure.NETWORK


@pytest.mark.parametrize("name", ["notes.txt", "silent-film.mp4"])
def test_no_audio(server: MediaServer, name: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), pytest.raises((FetchError, DecodeError)) as caught:
        fetch_window(server.media(name), start_s=0.0, options=loopback_options())
    assert LOOPBACK not in str(caught.value) and "/" not in str(caught.value)
    if isinstance(caught.value, FetchError):  # the user's media, not a fault of the server: no error logged
        assert caught.value.reason is FetchFailure.UNREADABLE
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_too_large(server: MediaServer) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_window(server.media("tones.m4a"), start_s=0.0, options=loopback_options(max_filesize_mb=20_000 / 2**20))
    assert caught.value.reason is FetchFailure.TOO_LARGE


def test_loopback_needs_the_explicit_opt_in(server: MediaServer) -> None:
    before = len(server.requests)
    for options in (FetchOptions(allowed_hosts=(LOOPBACK,)), FetchOptions(allowed_hosts=("localhost",))):
        url = server.media("tones.m4a").replace(LOOPBACK, options.allowed_hosts[0])
        with pytest.raises(UnsupportedLinkError, match="private network"):
            fetch_window(url, options=options)
    with pytest.raises(UnsupportedLinkError, match="IP addresses"):
        fetch_window(server.media("tones.m4a"), options=FetchOptions())
    with pytest.raises(UnsupportedLinkError, match="playlist"):
        fetch_window(f"https://www.youtube.com/playlist?list={PLAYLIST}", options=FetchOptions())
    assert len(server.requests) == before


def test_nothing_is_left_behind(server: MediaServer, clean_tmp: Path) -> None:
    path = os.environ["PATH"]
    fetch_window(server.media("tones.webm"), start_s=5.0, options=loopback_options())
    for url in (f"{server.url}/status/404", server.media("live/index.m3u8")):
        with pytest.raises(FetchError):
            fetch_window(url, options=loopback_options())
    assert list(clean_tmp.iterdir()) == []
    assert os.environ["PATH"] == path


def test_concurrent_fetches(server: MediaServer) -> None:
    path = os.environ["PATH"]
    results: dict[int, float] = {}

    def fetch(step: int) -> None:
        got = fetch_window(server.media("tones.m4a"), start_s=10.0 * step, options=loopback_options())
        results[step] = _tone_at(got.samples, 5)

    threads = [threading.Thread(target=fetch, args=(step,)) for step in (1, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {1: step_hz(1), 4: step_hz(4)}
    assert os.environ["PATH"] == path


def test_cookies_file_is_used_but_never_written(server: MediaServer, tmp_path: Path) -> None:
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"# Netscape HTTP Cookie File\n{LOOPBACK}\tFALSE\t/\tFALSE\t0\tsession\tabc\n")
    before = cookies.read_bytes()
    fetch_window(server.media("tones.m4a"), start_s=0.0, options=loopback_options(cookies=cookies))
    assert cookies.read_bytes() == before
    missing = loopback_options(cookies=tmp_path / "missing.txt")  # logged, then fetched without cookies
    assert fetch_window(server.media("tones.m4a"), start_s=0.0, options=missing).window.start_s == 0.0


# --- embeddings and the cache --------------------------------------------------------------------------------


def link_pipeline(tmp_path: Path, embedder: Any, *, embedder_kind: str = "local", **youtube: Any) -> Musrec:
    """The pipeline with only what links need: a link policy, an embedder and a cache (no index, no model files)."""
    config = load_config(None, environ={})
    options = {"cache_path": tmp_path / "cache.sqlite3", **youtube}
    config = replace(
        config,
        youtube=replace(config.youtube, **options),
        embedder=replace(config.embedder, kind=embedder_kind),
        max=replace(config.max, urls=(f"http://{LOOPBACK}:9",)),
    )
    return Musrec(config=config, embedder=embedder)


def test_cache_hit_does_not_touch_the_server(server: MediaServer, tmp_path: Path) -> None:
    embedder = ToneEmbedder()
    url = server.media("tones.webm")
    loopback = {"allowed_hosts": (LOOPBACK,), "allow_private_addresses": True, "socket_timeout_s": 5.0, "retries": 0}
    musrec = link_pipeline(tmp_path, embedder, **loopback)
    first = musrec.resolve(url, start_s=20.0)
    before = len(server.requests)
    again = musrec.resolve(url, start_s=20.0)
    assert len(server.requests) == before and embedder.calls == 1
    assert (first.query.extra["cached"], again.query.extra["cached"]) == (False, True)
    assert np.array_equal(first.rows, again.rows) and first.rows.shape == (10, 128)
    assert set(first.rows.ravel()) == {round(step_hz(2) / 10)}
    assert (again.query.start_s, again.query.end_s) == (first.query.start_s, first.query.end_s)
    assert again.query.extra["title"] == "tones"
    musrec.close()
    # Another embedding space (MAX servers here) never reuses these rows.
    other = link_pipeline(tmp_path, embedder, embedder_kind="max", **loopback)
    assert other.resolve(url, start_s=20.0).query.extra["cached"] is False and len(server.requests) > before
    other.close()


def test_youtube_link_answered_from_the_cache(tmp_path: Path) -> None:
    """No network here: a cached YouTube window answers without yt-dlp; an explicit start beats t=."""
    embedder = ToneEmbedder()
    musrec = link_pipeline(tmp_path, embedder)
    identity = embedder_identity(musrec.config)
    codes = np.full((10, 128), 7, dtype=np.uint8)
    with EmbeddingCache(tmp_path / "cache.sqlite3") as cache:
        for start in (90.0, 10.0, None):
            key = CacheKey(video_id=ID, start_s=start, duration_s=10.0, embedder=identity)
            cache.put(key, codes + int(start or 0), window_start_s=start or 30.0, window_end_s=(start or 30.0) + 10)
    link = musrec.resolve(f"https://youtu.be/{ID}?t=1m30s")
    assert link.query.extra["cached"] and link.query.start_s == 90.0 and link.rows[0, 0] == 97
    explicit = musrec.resolve(f"https://youtu.be/{ID}?t=90", start_s=10.0)
    assert explicit.query.extra["cached"] and explicit.query.start_s == 10.0
    default = musrec.resolve(f"https://www.youtube.com/watch?v={ID}")
    assert default.query.extra["cached"] and default.query.start_s == 30.0 and default.query.video_id == ID
    assert embedder.calls == 0
    musrec.close()


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        FetchOptions(max_video_s=0)
    with pytest.raises(ValueError):
        FetchOptions(margin_s=-1)
    assert FetchOptions(allowed_hosts=("Example.COM.", "[::1]")).allowed_hosts == ("example.com", "::1")
    assert replace(FetchOptions(), retries=3).retries == 3
