"""What ``musrec doctor`` says about fetching links from this server: the remedies for YouTube's bot check in place,
and each working.

- yt-dlp's age: YouTube changes often and old releases stop working within weeks (a warning past
  :data:`YTDLP_MAX_AGE_DAYS`, naming the upgrade command);
- the JavaScript runtime (deno or node) that solves YouTube's player challenges actually runs;
- the cookies file parses, and holds YouTube's cookies;
- the egress proxy (``[youtube] proxy``) answers and connects through;
- the PO-token provider (``[youtube] pot_provider_url``) answers, its plugin is installed, and their versions match.

Each check gives a :class:`Finding`; the doctor shows them with its own.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from musrec.childenv import child_environment
from musrec.links.options import FetchOptions
from musrec.links.upstream import UpstreamRefused, upstream_proxy
from musrec.links.ytdlp_env import find_js_runtimes

OK, WARN, PROBLEM = "ok", "warn", "problem"
YTDLP_MAX_AGE_DAYS: Final = 60
UPGRADE: Final = "pip install -U 'yt-dlp[default]'"
POT_PLUGIN: Final = "bgutil-ytdlp-pot-provider"
RUN_TIMEOUT_S: Final = 30.0
ANSWER_TIMEOUT_S: Final = 5.0
PROBE: Final = ("www.youtube.com", 443)  # what the proxy is asked to connect to
YOUTUBE_COOKIE_DOMAIN: Final = "youtube.com"


@dataclass(frozen=True)
class Finding:
    """One check: ``status`` is ok, warn or problem; ``detail`` says what to do about anything but ok."""

    name: str
    status: str
    detail: str


def link_findings(
    options: FetchOptions,
    environ: Mapping[str, str],
    *,
    today: dt.date | None = None,
    probe: tuple[str, int] = PROBE,
) -> list[Finding]:
    """Every check above, for the fetch ``options`` (the configuration's ``[youtube]``); the proxy's credentials
    come from ``environ``. ``today`` and ``probe`` are for tests."""
    findings = [ytdlp_age(today or dt.date.today()), js_runtime(options.js_runtimes), cookies(options)]
    if options.proxy:
        findings.append(proxy(options, environ, probe=probe))
    if options.pot_provider_url:
        findings.append(pot_provider(options.pot_provider_url))
    return findings


def ytdlp_age(today: dt.date) -> Finding:
    from yt_dlp.version import __version__

    try:
        released = dt.date(*(int(part) for part in __version__.split(".")[:3]))
    except (TypeError, ValueError):
        return Finding("yt-dlp", WARN, f"{__version__}: its age is unknown; keep it current ({UPGRADE})")
    age = (today - released).days
    if age > YTDLP_MAX_AGE_DAYS:
        return Finding(
            "yt-dlp", WARN, f"{__version__} is {age} days old; YouTube breaks old releases: {UPGRADE}, then restart"
        )
    return Finding("yt-dlp", OK, f"{__version__} ({age} days old)")


def js_runtime(names: tuple[str, ...]) -> Finding:
    found = find_js_runtimes(names)
    if not found:
        return Finding(
            "js runtime", WARN, f"none of {', '.join(names) or 'none'} found: YouTube links fail; pip install deno"
        )
    problems = []
    for name, path in found.items():
        try:
            done = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=child_environment()
            )
        except (OSError, subprocess.SubprocessError) as err:
            problems.append(f"{name} ({path}) does not run: {err}")
            continue
        if done.returncode == 0:
            version = (done.stdout.strip().splitlines() or ["unknown version"])[0]
            return Finding("js runtime", OK, f"{name} runs: {version} ({path})")
        problems.append(f"{name} ({path}) exits with status {done.returncode}")
    return Finding("js runtime", PROBLEM, "; ".join(problems) + ": YouTube links fail; reinstall it")


def cookies(options: FetchOptions) -> Finding:
    from yt_dlp.cookies import YoutubeDLCookieJar

    if options.cookies is None:
        return Finding("cookies", OK, "none (youtube.cookies: optional, for when YouTube asks this server to sign in)")
    jar = YoutubeDLCookieJar(str(options.cookies))
    try:
        jar.load(ignore_discard=True, ignore_expires=True)
    except OSError as err:
        return Finding("cookies", PROBLEM, f"{options.cookies} cannot be read: {err.strerror or err}")
    except Exception as err:  # the parser raises several kinds (LoadError, ValueError...)
        return Finding(
            "cookies",
            PROBLEM,
            f"{options.cookies} is not a Netscape cookies file ({type(err).__name__}): export it again",
        )
    youtube = [c for c in jar if c.domain.lstrip(".").endswith(YOUTUBE_COOKIE_DOMAIN)]
    if not youtube:
        return Finding("cookies", WARN, f"{options.cookies} holds {len(jar)} cookies, none of YouTube's")
    return Finding("cookies", OK, f"{options.cookies}: {len(youtube)} of YouTube's cookies")


def proxy(options: FetchOptions, environ: Mapping[str, str], *, probe: tuple[str, int] = PROBE) -> Finding:
    upstream = upstream_proxy(options.proxy, environ)
    assert upstream is not None
    try:
        upstream.open(*probe, timeout_s=ANSWER_TIMEOUT_S).close()
    except UpstreamRefused as err:
        return Finding("proxy", PROBLEM, f"{upstream} refuses: {err} (its credentials: see the README)")
    except OSError as err:
        return Finding("proxy", PROBLEM, f"{upstream} does not answer: {err}")
    return Finding("proxy", OK, f"{upstream} connects to {probe[0]} port {probe[1]}")


def pot_provider(url: str) -> Finding:
    try:
        plugin = importlib.metadata.version(POT_PLUGIN)
    except importlib.metadata.PackageNotFoundError:
        plugin = None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the provider is reached directly
    try:
        with opener.open(url.rstrip("/") + "/ping", timeout=ANSWER_TIMEOUT_S) as response:
            server = str(json.loads(response.read(1 << 16)).get("version", "unknown"))
    except (OSError, ValueError, AttributeError, urllib.error.URLError) as err:
        return Finding("pot provider", PROBLEM, f"{url} does not answer /ping: {getattr(err, 'reason', err)}")
    if plugin is None:
        return Finding(
            "pot provider", PROBLEM, f"{url} answers (server {server}), but its yt-dlp plugin is not installed: "
            "pip install 'musrec[pot]'"
        )  # fmt: skip
    if plugin != server:
        return Finding("pot provider", WARN, f"{url}: server {server}, plugin {plugin}: they must be the same version")
    return Finding("pot provider", OK, f"{url}: server and plugin {server}")
