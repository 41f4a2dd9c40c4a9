"""What each ``musrec`` command does, given its arguments and the configuration with the flags applied."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from musrec.config import Config, find_config
from musrec.config.values import ENV_PREFIX
from musrec.errors import DecodeError, MusrecError, TooLongError, TooShortError

if TYPE_CHECKING:
    from musrec.pipeline import Musrec, Resolved

log = logging.getLogger("musrec")

EXIT_ERROR = 1


# ---- index build / info -------------------------------------------------------------------------------------


def index_build(args: argparse.Namespace, config: Config) -> int:
    from musrec.audioset.labels import default_labels
    from musrec.setup.provision import build_from_config

    out = config.index_path
    bar = _progress_bar(enabled=not args.no_progress)
    try:
        manifest, report = build_from_config(
            config,
            args.sources,
            out,
            labels=default_labels(),
            force=args.force,
            progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    print(f"indexed {manifest.count} segments into {out}")
    print(f"read: {report.summary()}")
    if report.damaged_files:
        shown = ", ".join(report.damaged_files[:5]) + (" ..." if len(report.damaged_files) > 5 else "")
        print(f"warning: {report.corrupt_records} corrupt records skipped; damaged: {shown}", file=sys.stderr)
    tuned = manifest.structure()
    loo = manifest.recall_leave_one_out
    print(
        f"{manifest.representation} ({manifest.dimension}-d), {tuned}: recall@10 {manifest.recall_at_10:.3f} on "
        f"{manifest.held_out} held-out segments"
        + (f", {loo:.3f} leave-one-out" if loo is not None else "")
        + f" (target {manifest.target_recall}); "
        f"default backend {manifest.preferred_backend} ({_format_ms(manifest.query_ms)})"
    )
    return 0


def _progress_bar(*, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit=" segments", unit_scale=True, desc="indexing", file=sys.stderr, mininterval=0.5)


def _format_ms(query_ms: dict[str, float]) -> str:
    return ", ".join(f"{name} {ms:.2f} ms/query" for name, ms in sorted(query_ms.items()))


def index_info(args: argparse.Namespace, config: Config) -> int:
    from musrec.index.layout import Manifest

    directory = args.directory or config.index_path
    m = Manifest.read(directory)
    if args.json:
        print(json.dumps({"path": str(directory), **json.loads(m.to_json())}, indent=2))
        return 0
    rows = [
        ("path", str(directory)),
        ("segments", f"{m.count:,}"),
        ("representation", f"{m.representation} ({m.dimension} dimensions)"),
        ("structure", m.structure()),
        (
            "recall@10",
            f"{m.recall_at_10:.3f} on {m.held_out} held-out segments"
            + (f", {m.recall_leave_one_out:.3f} leave-one-out" if m.recall_leave_one_out is not None else "")
            + f" (target {m.target_recall})",
        ),
        ("backend", f"{m.preferred_backend} by default; {_format_ms(m.query_ms)}"),
        ("splits", m.splits()),
        ("filters", ", ".join(f"{k}={v}" for k, v in sorted(m.filters.items()) if k != "splits") or "none"),
        ("sources", ", ".join(m.sources) or "-"),
        ("built", f"{m.built_at} in {m.build_seconds:.1f} s by musrec {m.musrec_version}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


# ---- recommend ----------------------------------------------------------------------------------------------


def recommend(args: argparse.Namespace, config: Config) -> int:
    from musrec.pipeline import Musrec

    if args.library is not None or args.inputs[0].startswith("library:"):
        from musrec.cli.library import recommend_library

        return recommend_library(args, config, resolve=_resolve)
    if len(args.inputs) > 1 and not args.blend:
        raise MusrecError("several INPUTs need --blend (the segments that sound like all of them)")
    if args.blend and not 2 <= len(args.inputs) <= 3:
        raise MusrecError("--blend takes two or three INPUTs")
    musrec = Musrec.from_config(config)
    try:
        filters = musrec.filters(label=args.label, exclude_label=args.exclude_label)
        if args.blend:
            starts = [args.start] * len(args.inputs)
            result = musrec.blend(args.inputs, starts=starts, filters=filters, method=args.blend_method)
        else:
            result = musrec.search(_resolve(musrec, args.inputs[0], start_s=args.start), filters=filters)
    finally:
        musrec.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return 0
    from musrec.render import render_table

    print(render_table(result))
    return 0


def embed(args: argparse.Namespace, config: Config) -> int:
    from musrec.pipeline import Musrec, is_link

    # A file: --duration seconds from --start, else all of it (up to audio.max_duration_s). A link: only the window
    # (10 s, or --duration) is fetched, never the whole video.
    duration = args.duration or (config.audio.window_s if is_link(args.input) else math.inf)
    musrec = Musrec.from_config(config)
    try:
        resolved = _resolve(musrec, args.input, start_s=args.start, duration_s=duration)
    finally:
        musrec.close()
    rows, query = resolved.rows, resolved.query
    if args.json:
        print(json.dumps({"embedding": rows.tolist()}))
        return 0
    start, end = query.start_s or 0.0, query.end_s or 0.0
    print(f"{len(rows)} rows x 128 (one per 0.96 s) from {start:g} s, {end - start:.2f} s of audio")
    for row in rows:
        print(" ".join(str(v) for v in row.tolist()))
    return 0


def _resolve(musrec: Musrec, text: str, *, start_s: float | None, duration_s: float | None = None) -> Resolved:
    """One INPUT as the user typed it, resolved; an error of its audio starts with that INPUT, and one of a file
    over a limit names the limit's setting. (A blend's errors say which of its sounds they are about.)"""
    try:
        return musrec.resolve(text, start_s=start_s, duration_s=duration_s)
    except (DecodeError, TooLongError, TooShortError) as err:
        message = str(err) if text in str(err) else f"{text}: {err}"
        if isinstance(err, TooLongError) and Path(text).is_file():
            message += f" ({_limit_of(Path(text), musrec.config)})"
        raise type(err)(message) from err


def _limit_of(path: Path, config: Config) -> str:
    """Which setting refused a file as too long: its size (checked first) or the audio's duration."""
    key = "audio.max_bytes" if path.stat().st_size > config.audio.max_bytes else "audio.max_duration_s"
    section, _, name = key.partition(".")
    return f"the limit is [{section}] {name} in the configuration, or {ENV_PREFIX}{section.upper()}_{name.upper()}"


def serve(args: argparse.Namespace, config: Config) -> int:
    from musrec.configured import make_embedder
    from musrec.embedding.listen import listen
    from musrec.embedding.server import run_server

    if config.embedder.kind != "local":
        raise MusrecError("musrec serve runs VGGish in this process: use --embedder local")
    srv = config.server
    # The server's own lines (loading, ready, refusals) are what a user who runs it watches: shown without -v.
    for name in ("musrec.configured", "musrec.embedding"):
        logging.getLogger(name).setLevel(min(logging.INFO, logging.getLogger().getEffectiveLevel()))
    sockets = listen(srv.host, srv.port)  # before the model loads: a busy port is one line, at once
    # [audio] limits what a clip may be (size, duration), as for every other input; [server] max_bytes the request.
    run_server(
        make_embedder(config),
        sockets=sockets,
        limits=config.audio,
        max_bytes=srv.max_bytes,
        concurrency=srv.concurrency,
        max_pending=srv.max_pending,
        max_connections=srv.max_connections,
        header_timeout_s=srv.header_timeout_s,
    )
    return 0


def library(args: argparse.Namespace, config: Config) -> int:
    from musrec.cli.library import library_add, library_check, library_list, library_remove

    run = {"add": library_add, "list": library_list, "remove": library_remove, "check": library_check}
    return run[args.library_command](args, config)


# ---- videos -------------------------------------------------------------------------------------------------


def videos_check(args: argparse.Namespace, config: Config) -> int:
    from musrec.index.layout import SEGMENTS_FILE, check
    from musrec.index.store import SegmentStore
    from musrec.progress import Meter
    from musrec.videos.bulk import check_index, to_check
    from musrec.videos.checker import VideoChecker

    if args.limit is not None and args.limit < 1:
        raise MusrecError("--limit must be at least 1")
    if not config.videos.check:
        raise MusrecError("videos.check is off in the configuration: nothing is checked")
    check(config.index_path)
    segments = SegmentStore(config.index_path / SEGMENTS_FILE)
    checker = VideoChecker.from_config(config.videos, path=config.videos_path)
    try:
        videos, known = to_check(segments, checker)
        total = videos - known if args.limit is None else min(videos - known, args.limit)
        meter = Meter("checking videos", total=total, enabled=not args.no_progress, unit="videos")
        try:
            report = check_index(segments, checker, rate_per_s=config.videos.rate_per_s, limit=args.limit,
                                 counted=(videos, known), progress=meter.update)  # fmt: skip
        finally:
            meter.close()
        counts = checker.counts()
    finally:
        segments.close()
        checker.close()
    print(f"checked {report.checked:,} videos: {report.gone:,} gone, {report.unknown:,} unknown (asked again later)")
    print(f"{counts.checked:,} videos known of {videos:,} in the index, {100 * counts.gone_share:.1f}% of them gone")
    if report.stopped:
        print("YouTube stopped answering: run `musrec videos check` again later to go on", file=sys.stderr)
    return 0


# ---- setup / doctor -----------------------------------------------------------------------------------------


def setup(args: argparse.Namespace, config: Config) -> int:
    from musrec.setup.provision import SetupOptions, check_ready, setup

    options = SetupOptions(
        features=not (args.models_only or args.skip_features),
        index=not args.models_only,
        source=args.source,
        rebuild=args.rebuild,
        recheck=args.recheck,
        progress=not args.no_progress,
        chosen=frozenset(
            k.removeprefix("build.") for k, v in vars(args).items() if k.startswith("build.") and v is not None
        ),
    )
    print(f"data directory: {config.data_dir}", flush=True)
    setup(config, options, on_step=lambda step: print(step, flush=True))
    if not check_ready(config):
        print("ready: try `musrec recommend FILE`")
    return 0


def doctor(args: argparse.Namespace) -> int:
    from musrec.setup.doctor import diagnose, failed

    checks = diagnose(find_config(args.config), quick=args.quick, bot=args.bot)
    for check in checks:
        if not args.quiet or check.status != "ok":
            print(check)
    return EXIT_ERROR if failed(checks) else 0
