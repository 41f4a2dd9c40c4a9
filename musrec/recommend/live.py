"""Answers with live videos only: a search that passes over the videos known to be gone, its matches checked, ``k``
kept.

The search passes over the videos already known to be gone (:attr:`VideoChecker.gone`), so an answer whose videos
are all known costs what it costs unchecked. When some of its matches were never checked, it is asked again for ``k``
plus a margin (about a sixth of AudioSet's videos are gone), the videos of those matches are checked within the
answer's budget, and the first ``k`` that are not known to be gone are kept, each with what is known of its video
(title, channel, or unknown). When too many were gone, the search is asked again with them left out. Pages of "more"
stay consistent and disjoint: a page leaves out what earlier pages showed, and what one page left out as gone the
next leaves out again (from the store, without asking YouTube).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Container
from dataclasses import replace

from musrec.recommend.results import Match, Recommendation
from musrec.videos.checker import VideoChecker
from musrec.videos.status import VideoStatus

# (how many, items to leave out, videos to pass over) -> a result
Search = Callable[[int, Collection[int], Container[str]], Recommendation]

MAX_ROUNDS = 4  # checks per answer at most; each search leaves out the gone videos the ones before found


def margin(k: int) -> int:
    """Candidates asked for beyond ``k`` when some were never checked: with a sixth of videos gone, ``k // 2 + 2``
    seldom needs a second round of checks."""
    return k // 2 + 2


def live_result(
    search: Search, *, k: int, exclude: Collection[int] = (), checker: VideoChecker | None, budget_s: float
) -> Recommendation:
    """``search``'s best ``k`` matches leaving out ``exclude`` and the videos known to be gone, each match with its
    video's state. Without a ``checker`` (the check is off), the search as it is, every video unknown."""
    if checker is None:
        result = search(k, exclude, frozenset())
        return replace(result, matches=tuple(_with(m, None) for m in result.matches))
    deadline = time.monotonic() + budget_s
    gone: list[int] = []
    wanted = k
    for _ in range(MAX_ROUNDS):
        result = search(wanted, (*exclude, *gone), checker.gone)
        if wanted == k and not _all_known(result, checker):
            wanted = k + margin(k)  # one round of checks, with room for the gone among them
            result = search(wanted, (*exclude, *gone), checker.gone)
        statuses = checker.statuses([m.video_id for m in result.matches], deadline=deadline)
        dead = {video_id for video_id, status in statuses.items() if status.gone}
        kept = [m for m in result.matches if m.video_id not in dead]
        gone += [m.item for m in result.matches if m.video_id in dead]
        if len(kept) >= k or len(result.matches) < wanted:
            break
    return replace(result, matches=tuple(_with(m, statuses.get(m.video_id)) for m in kept[:k]))


def _all_known(result: Recommendation, checker: VideoChecker) -> bool:
    ids = {m.video_id for m in result.matches}
    return len(checker.known(list(ids))) == len(ids)


def _with(match: Match, status: VideoStatus | None) -> Match:
    return replace(match, video=status or VideoStatus.unknown(match.video_id))
