"""``musrec library add | list | remove | check`` and ``musrec recommend INPUT --library NAME``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from musrec.config import Config
from musrec.errors import MusrecError
from musrec.timecode import format_timecode

if TYPE_CHECKING:
    from musrec.library import AddProgress, AddReport, CheckReport, Library, LibraryRecommendation, TrackInfo
    from musrec.recommend.results import Resolved

    Resolve = Callable[..., Resolved]

log = logging.getLogger("musrec")

LOG_INTERVAL_S = 15.0  # progress lines when stderr is not a terminal
FAILED_SHOWN = 50  # damaged files named one per line; the rest counted
DAMAGED_SHOWN = 50  # tracks that lost segments named one per line by `library check`; the rest counted


def _open(config: Config) -> Library:
    from musrec.library import Library

    return Library.from_config(config)


def _name(args: argparse.Namespace, config: Config) -> str:
    from musrec.library import valid_library_name

    return valid_library_name(args.library or config.library.default)


# ---- add ----------------------------------------------------------------------------------------------------


class AddMeter:
    """``library add``'s progress: a tqdm bar on stderr with tracks/min and the time left when stderr is a terminal,
    else a log line every :data:`LOG_INTERVAL_S`."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._last_log = time.monotonic()

    def __call__(self, p: AddProgress) -> None:
        if not self.enabled:
            return
        rate = f"{p.tracks_per_min:.1f} tracks/min"
        if self._bar is None and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(desc="adding", total=p.total, unit=" files", file=sys.stderr, mininterval=0.5,
                             leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} files "
                             "[{elapsed}<{remaining}{postfix}]")  # fmt: skip
        if self._bar is not None:
            self._bar.set_postfix_str(f"{rate}, {p.added} added, {p.present} there, {p.failed} failed", refresh=False)
            self._bar.update(p.done - self._bar.n)
        elif time.monotonic() - self._last_log >= LOG_INTERVAL_S:
            self._last_log = time.monotonic()
            left = (p.total - p.done) * p.seconds / p.done if p.done else 0.0
            log.warning("adding: %d of %d files, %s, about %s left", p.done, p.total, rate, format_timecode(left))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def library_add(args: argparse.Namespace, config: Config) -> int:
    from musrec.library.add import add_paths

    name = _name(args, config)
    meter = AddMeter(enabled=not args.no_progress)
    with _open(config) as lib:
        try:
            report = add_paths(lib, args.paths, library=name, progress=meter)
        finally:
            meter.close()
        total = lib.count(name)
        recall = lib.recall() if report.added else None
    index = {"index": recall.index, "recall_at_10": round(recall.recall_at_10, 4)} if recall else {}
    if args.json:
        print(json.dumps({"library": name, "tracks": total, **report.to_json(), **index}, indent=2, ensure_ascii=False))
    else:
        _summary(report, name, total, max_track_s=config.library.max_track_s)
        if recall is not None:
            measured = f" ({recall.queries} stored segments as queries)" if recall.queries else " (recorded)"
            print(f"index {recall.index}: recall@10 {recall.recall_at_10:.3f} against exact search{measured}")
    return 1 if report.failed and not (report.added or report.present) else 0


def _summary(report: AddReport, name: str, total: int, *, max_track_s: float) -> None:
    print(
        f"added {report.added} tracks ({report.segments} segments) to library {name} in "
        f"{format_timecode(report.seconds)} ({report.tracks_per_min:.1f} tracks/min); {total} tracks in it now"
    )
    notes = []
    if report.present:
        notes.append(f"{report.present} already there")
    if report.completed:
        notes.append(f"{report.completed} left unfinished by an interrupted add, now complete")
    if report.not_audio:
        notes.append(f"{report.not_audio} files skipped (not audio)")
    if report.cut:
        most = format_timecode(max_track_s)
        notes.append(f"{report.cut} longer than {most}: their first {most} stored ([library] max_track_s)")
    if notes:
        print("; ".join(notes))
    for file, reason in report.failed[:FAILED_SHOWN]:
        print(f"failed: {file}: {reason}", file=sys.stderr)
    if len(report.failed) > FAILED_SHOWN:
        print(f"failed: {len(report.failed) - FAILED_SHOWN} more files (run with -v to see them)", file=sys.stderr)


# ---- list / remove ------------------------------------------------------------------------------------------


def library_list(args: argparse.Namespace, config: Config) -> int:
    with _open(config) as lib:
        if args.library is None:
            counts = lib.counts()
            if args.json:
                print(json.dumps({"libraries": counts}, indent=2))
            elif not counts:
                print("no libraries yet: add tracks with `musrec library add PATH...`")
            else:
                width = max(len(n) for n in counts)
                for library, count in sorted(counts.items()):
                    print(f"{library:<{width}}  {count} tracks")
            return 0
        name = _name(args, config)
        tracks = lib.tracks(name)
    if args.json:
        print(json.dumps({"library": name, "tracks": [t.to_json() for t in tracks]}, indent=2, ensure_ascii=False))
        return 0
    if not tracks:
        print(f"library {name} has no tracks")
        return 0
    for t in tracks:
        print(_track_line(t))
    print(f"{len(tracks)} tracks in library {name}")
    return 0


def _track_line(t: TrackInfo) -> str:
    by = f" - {t.artist}" if t.artist else ""
    return f"{t.track_id}  {format_timecode(t.duration_s):>8}  {t.title}{by}  ({t.file})"


def library_remove(args: argparse.Namespace, config: Config) -> int:
    name = _name(args, config)
    with _open(config) as lib:
        removed = lib.remove(name, args.tracks)
    for t in removed:
        print(f"removed {_track_line(t)}")
    return 0


def library_check(args: argparse.Namespace, config: Config) -> int:
    """``library check``: every library (or ``--library``'s) checked for tracks that lost segments; ``--repair``
    removes them. 1 while a library has such tracks (not repaired), else 0."""
    with _open(config) as lib:
        names = [_name(args, config)] if args.library is not None else sorted(lib.counts())
        reports = [lib.check(name, repair=args.repair) for name in names]
    failed = 1 if any(r.damaged and not r.repaired for r in reports) else 0
    if args.json:
        print(json.dumps({"libraries": [r.to_json() for r in reports]}, indent=2, ensure_ascii=False))
        return failed
    if not reports:
        print("no libraries yet: add tracks with `musrec library add PATH...`")
    for report in reports:
        _check_summary(report)
    return failed


def _check_summary(report: CheckReport) -> None:
    name = report.library
    unfinished = ""
    if report.unfinished:
        unfinished = (f"; {report.unfinished_segments} segments of {report.unfinished} unfinished adds (never found; "
                      "adding their files again replaces them)")  # fmt: skip
    if not report.damaged:
        print(f"library {name}: {report.tracks} tracks, each with all its segments{unfinished}")
        return
    print(f"library {name}: {report.tracks} tracks, {len(report.damaged)} of them missing segments (the store lost "
          f"them){unfinished}:")  # fmt: skip
    for d in report.damaged[:DAMAGED_SHOWN]:
        print(f"  {d.stored} of {d.track.segments} segments: {_track_line(d.track)}")
    if len(report.damaged) > DAMAGED_SHOWN:
        print(f"  and {len(report.damaged) - DAMAGED_SHOWN} more (--json lists them all)")
    if report.repaired:
        print(f"removed those {len(report.damaged)} tracks: add their files again to store them whole")
    else:
        print(f"to remove them, so that adding their files again stores them whole: musrec library check --library "
              f"{name} --repair")  # fmt: skip


# ---- recommend --library ------------------------------------------------------------------------------------


def recommend_library(args: argparse.Namespace, config: Config, *, resolve: Resolve) -> int:
    """``recommend INPUT --library NAME``: INPUT is a file, a link, ``audioset:ID`` or ``library:TRACK[@S]``, resolved
    by ``resolve`` as ``recommend`` resolves it for AudioSet (the same errors)."""
    from musrec.library import LIBRARY_PREFIX

    if args.blend or len(args.inputs) > 1:
        raise MusrecError("--library searches with one INPUT (no --blend)")
    if args.label or args.exclude_label or config.recommend.music_only:
        raise MusrecError("--label, --exclude-label and --music-only filter AudioSet's labels: a library has none")
    name = _name(args, config)
    text = args.inputs[0]
    k, one_per_track = config.recommend.top_k, config.recommend.one_per_video
    with _open(config) as lib:
        if text.startswith(LIBRARY_PREFIX):
            result = lib.recommend_track(lib.resolve_track(text, library=name), library=name, k=k,
                                         one_per_track=one_per_track)  # fmt: skip
        else:
            from musrec.pipeline import Musrec

            musrec = Musrec.from_config(config)
            try:
                resolved = resolve(musrec, text, start_s=args.start)
            finally:
                musrec.close()
            result = lib.recommend(resolved.rows, resolved.query, library=name, k=k, one_per_track=one_per_track)
        empty = lib.count(name) == 0
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return 0
    print(render_library(result, empty=empty))
    return 0


def render_library(result: LibraryRecommendation, *, empty: bool = False) -> str:
    q = result.query
    title = q.extra.get("title")
    where = f"  {q.start_s:g}-{q.end_s:g} s" if q.start_s is not None and q.end_s is not None else ""
    lines = [f"query: {q.source}{f' ({title})' if title else ''}{where}", f"library: {result.library}"]
    if not result.matches:
        lines.append("no tracks in this library yet: add some with `musrec library add`" if empty else "no matches")
        return "\n".join(lines)
    lines += ["", f"{'#':>2}  {'score':>6}  {'segment':<13}  track"]
    for rank, m in enumerate(result.matches, start=1):
        t = m.track
        by = f" - {t.artist}" if t.artist else ""
        segment = f"{format_timecode(m.start_s)}-{format_timecode(m.end_s)}"
        lines.append(f"{rank:>2}  {m.score:>6.3f}  {segment:<13}  {t.title}{by}  [{t.track_id}]")
        lines.append(f"{'':>25}{t.file}")
    return "\n".join(lines)


def add_parsers(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """The ``library`` command's parsers, under ``commands`` (the top level's subparsers)."""
    library = commands.add_parser("library", help="your own recordings, searched like AudioSet")
    actions = library.add_subparsers(dest="library_command", required=True, parser_class=parser_class,
                                     metavar="ACTION")  # fmt: skip
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument("--library", metavar="NAME", help="which library (default: [library] default, 'default')")
    add = actions.add_parser("add", parents=[named], help="add recordings: files and folders (recursively)")
    add.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="audio or video files, or folders of them")
    add.add_argument("--no-progress", action="store_true", help="no progress bar")
    add.add_argument("--json", action="store_true", help="print the summary as JSON")
    listing = actions.add_parser("list", help="the libraries, or the tracks of one (--library)")
    listing.add_argument("--library", metavar="NAME", help="list this library's tracks")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    remove = actions.add_parser("remove", parents=[named], help="remove tracks and all their segments")
    remove.add_argument("tracks", nargs="+", metavar="TRACK", help="track ids (or 6+ first digits), as list shows")
    check = actions.add_parser("check", help="find tracks whose segments a damaged store lost (every library, or one)")
    check.add_argument("--library", metavar="NAME", help="check this library only")
    check.add_argument("--repair", action="store_true", help="remove those tracks, to add their files again")
    check.add_argument("--json", action="store_true", help="machine-readable output")
