"""The ``musrec`` command line: build and inspect indexes, and ask for recommendations.

Configuration comes from ``--config FILE`` (or ``$MUSREC_CONFIG``, or ``./config.toml`` when present), then
``MUSREC_*`` environment variables, then the flags below. Errors print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from musrec import __version__
from musrec.config import BACKENDS, EMBEDDERS, REPRESENTATIONS, SHORT_SEGMENT_POLICIES, SPLITS, Config, load_config
from musrec.errors import MusrecError
from musrec.timecode import parse_timecode

log = logging.getLogger("musrec")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_CONFIG = Path("config.toml")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from musrec.config import BUILD_BACKENDS

    parser = _Parser(prog="musrec", description="Find sounds that sound like this one, in Google AudioSet.")
    parser.add_argument("--version", action="version", version=f"musrec {__version__}")
    parser.add_argument("--config", type=Path, help="TOML config file (default: $MUSREC_CONFIG or ./config.toml)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    index = commands.add_parser("index", help="build and inspect indexes")
    index_commands = index.add_subparsers(dest="index_command", required=True, parser_class=_Parser, metavar="ACTION")

    build = index_commands.add_parser("build", help="build an index from AudioSet feature TFRecords")
    build.add_argument(
        "sources",
        nargs="+",
        type=Path,
        metavar="SOURCE",
        help="TFRecord files, directories of them, or features.tar.gz (read as a stream)",
    )
    build.add_argument("--out", type=Path, help="index directory (default: index.path from the config)")
    build.add_argument("--splits", nargs="+", choices=SPLITS, help="AudioSet splits to read (default: all)")
    build.add_argument(
        "--music-only",
        action="store_true",
        default=None,
        help="keep only segments labelled within the ontology's Music subtree",
    )
    build.add_argument("--include-labels", nargs="+", metavar="LABEL", help="keep segments with any of these labels")
    build.add_argument("--exclude-labels", nargs="+", metavar="LABEL", help="drop segments with any of these labels")
    build.add_argument("--min-seconds", type=int, help="drop segments with fewer embedding rows (seconds)")
    build.add_argument(
        "--short-segments",
        choices=SHORT_SEGMENT_POLICIES,
        help="segments under 10 s: repeat their rows to 10 (pad) or drop them (skip)",
    )
    build.add_argument("--representation", choices=REPRESENTATIONS, help="how 10x128 rows become one vector")
    build.add_argument("--trees", type=int, help="Annoy trees (more: better recall, bigger file)")
    build.add_argument("--target-recall", type=float, help="recall@10 that the tuned search_k must reach")
    build.add_argument("--recall-queries", type=int, help="held-out queries used to measure recall")
    build.add_argument(
        "--backend",
        choices=BUILD_BACKENDS,
        help="approximate structure: annoy, ivf (faiss, for 1M+ segments) or auto (by size; default from the config)",
    )
    build.add_argument("--ivf-lists", type=int, metavar="N", help="IVF inverted lists (default: about 2 sqrt(count))")
    build.add_argument("--rerank", type=int, metavar="N", help="IVF candidates re-scored exactly per 10 results")
    build.add_argument("--force", action="store_true", help="replace an existing index")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")

    info = index_commands.add_parser("info", help="describe an index")
    info.add_argument("directory", type=Path, nargs="?", metavar="DIR", help="index directory (default: from config)")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")

    model = _Parser(add_help=False)
    group = model.add_argument_group("embedding model")
    group.add_argument("--embedder", choices=EMBEDDERS, help="VGGish in this process (local) or MAX servers (max)")
    group.add_argument("--checkpoint", type=Path, metavar="PATH", help="VGGish checkpoint (vggish_model.ckpt)")
    group.add_argument("--pca-params", type=Path, metavar="PATH", help="PCA parameters (vggish_pca_params.npz)")
    group.add_argument(
        "--relu",
        action="store_true",
        default=None,
        help="ReLU on the embedding layer, as IBM's MAX (default: pre-activation, as AudioSet)",
    )
    group.add_argument("--max-url", action="append", metavar="URL", help="MAX server URL (repeat for several)")

    embed = commands.add_parser("embed", parents=[model], help="print the VGGish embedding of audio")
    embed.add_argument("input", metavar="INPUT", help="an audio or video file, or a YouTube link")
    embed.add_argument("--start", type=_timecode, metavar="TIME", help="start at TIME (90, 1:30, 1m30s)")
    embed.add_argument("--duration", type=_timecode, metavar="TIME", help="embed this much (default: to the end)")
    embed.add_argument("--json", action="store_true", help='print {"embedding": [[128 ints], ...]}')

    serve = commands.add_parser(
        "serve", parents=[model], help="run a MAX-compatible embedding server backed by VGGish in this process"
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 5000, as MAX)")

    rec = commands.add_parser("recommend", parents=[model], help="find segments that sound like INPUT")
    rec.add_argument(
        "input", metavar="INPUT", help="an audio or video file, a YouTube link, or audioset:VIDEO_ID[@START]"
    )
    rec.add_argument(
        "--start",
        type=_timecode,
        metavar="TIME",
        help="start of the 10-s window (default: the loudest 10 s of the first 3 minutes)",
    )
    rec.add_argument("--index", type=Path, dest="index_dir", metavar="DIR", help="index directory")
    rec.add_argument("--top-k", type=int, help="number of results (default 10)")
    rec.add_argument("--music-only", action="store_true", default=None, help="only segments labelled as music")
    rec.add_argument(
        "--all-segments",
        action="store_true",
        help="allow several segments of one video (default: the best one per video)",
    )
    rec.add_argument("--backend", choices=BACKENDS, help="search backend (default: what the index measured fastest)")
    rec.add_argument("--json", action="store_true", help="machine-readable output")

    setup = commands.add_parser(
        "setup", help="download and verify the VGGish files and AudioSet's features, then build the default index"
    )
    setup.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="DIR",
        help="use files you already have in DIR (vggish_model.ckpt, vggish_pca_params.npz, assets.tar.gz, "
        "features.tar.gz or audioset_v1_embeddings/) instead of downloading them",
    )
    scope = setup.add_mutually_exclusive_group()
    scope.add_argument("--models-only", action="store_true", help="only the VGGish files (an index built elsewhere)")
    scope.add_argument(
        "--skip-features",
        action="store_true",
        help="never download the 2.4 GB features (builds the index only from features already here or in --from)",
    )
    setup.add_argument("--splits", nargs="+", choices=SPLITS, help="AudioSet splits to index (default: build.splits)")
    setup.add_argument(
        "--music-only", action="store_true", default=None, help="index only segments labelled within the Music subtree"
    )
    setup.add_argument(
        "--rebuild", action="store_true", help="rebuild the index, even one up to date or built elsewhere"
    )
    setup.add_argument("--recheck", action="store_true", help="re-hash files even if they were verified before")
    setup.add_argument("--no-progress", action="store_true", help="no progress bars")

    doctor = commands.add_parser("doctor", help="check that everything musrec needs is in place")
    doctor.add_argument("--quiet", action="store_true", help="print only what is not ok (the exit status tells)")
    doctor.add_argument("--quick", action="store_true", help="skip the slow checks (importing TensorFlow)")
    doctor.add_argument("--bot", action="store_true", help="a missing Discord token is a problem, not a warning")
    return parser


def _timecode(text: str) -> float:
    try:
        return parse_timecode(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        if args.command == "doctor":  # a configuration that does not load is one of its findings
            return _doctor(args)
        config = _load(args)
        if args.command == "setup":
            return _setup(args, config)
        if args.command == "index" and args.index_command == "build":
            return _index_build(args, config)
        if args.command == "index" and args.index_command == "info":
            return _index_info(args, config)
        if args.command == "recommend":
            return _recommend(args, config)
        if args.command == "embed":
            return _embed(args, config)
        if args.command == "serve":
            return _serve(args, config)
        parser.error(f"unknown command {args.command}")
    except MusrecError as err:
        log.debug("error", exc_info=True)
        sys.stderr.write(f"musrec: error: {err}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("musrec: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug: one line for the user, the traceback with -v
        log.debug("unexpected error", exc_info=True)
        sys.stderr.write(f"musrec: internal error: {type(err).__name__}: {err} (run with -v for details)\n")
        if args.verbose:
            raise
        return EXIT_ERROR
    return 0


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbosity < 2:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


def _config_path(args: argparse.Namespace) -> Path | None:
    path: Path | None = args.config or (Path(os.environ["MUSREC_CONFIG"]) if os.environ.get("MUSREC_CONFIG") else None)
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return path


# ---- index build / info -------------------------------------------------------------------------------------


def _index_build(args: argparse.Namespace, config: Config) -> int:
    from musrec.audioset.labels import default_labels
    from musrec.index.build import build_from_config

    config = config.with_overrides(
        {
            "build.splits": tuple(args.splits) if args.splits else None,
            "build.music_only": args.music_only,
            "build.include_labels": tuple(args.include_labels) if args.include_labels else None,
            "build.exclude_labels": tuple(args.exclude_labels) if args.exclude_labels else None,
            "build.min_seconds": args.min_seconds,
            "build.short_segments": args.short_segments,
            "build.representation": args.representation,
            "build.trees": args.trees,
            "build.target_recall": args.target_recall,
            "build.recall_queries": args.recall_queries,
            "build.backend": args.backend,
            "build.ivf_lists": args.ivf_lists,
            "build.rerank": args.rerank,
        }
    )
    out = args.out or config.index_path
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


def _index_info(args: argparse.Namespace, config: Config) -> int:
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
        ("filters", ", ".join(f"{k}={v}" for k, v in sorted(m.filters.items())) or "none"),
        ("sources", ", ".join(m.sources) or "-"),
        ("built", f"{m.built_at} in {m.build_seconds:.1f} s by musrec {m.musrec_version}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


# ---- recommend ----------------------------------------------------------------------------------------------


def _model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "embedder.kind": args.embedder,
        "embedder.checkpoint": args.checkpoint,
        "embedder.pca_params": args.pca_params,
        "embedder.relu": args.relu,
        "max.urls": tuple(args.max_url) if args.max_url else None,
    }


def _recommend(args: argparse.Namespace, config: Config) -> int:
    from musrec.index.loaded import Index
    from musrec.pipeline import Musrec, is_link, make_embedder
    from musrec.recommend import AUDIOSET_PREFIX

    config = config.with_overrides(
        {
            **_model_overrides(args),
            "index.path": args.index_dir,
            "index.backend": args.backend,
            "recommend.top_k": args.top_k,
            "recommend.music_only": args.music_only,
            "recommend.one_per_video": False if args.all_segments else None,
        }
    )
    by_segment = args.input.startswith(AUDIOSET_PREFIX)
    if not by_segment and not is_link(args.input):
        _check_input_file(args.input)
    index = Index(config.index_path, backend=config.index.backend)
    try:
        if by_segment:
            musrec = Musrec(config=config, index=index, embedder=_NoEmbedder())
        else:
            import_tensorflow_quietly(config)
            musrec = Musrec(config=config, index=index, embedder=make_embedder(config))
        result = musrec.recommend(args.input, start_s=args.start)
    finally:
        index.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return 0
    from musrec.render import render_table

    print(render_table(result))
    return 0


class _NoEmbedder:
    """Stands in for the model when the query is an indexed segment (nothing to embed, no model to load)."""

    def embed(self, samples: Any, sample_rate: int = 16000) -> Any:
        raise AssertionError("segment queries never embed audio")


def _check_input_file(text: str) -> None:
    path = Path(text)
    if not path.exists():
        raise MusrecError(f"no such file: {text} (expected an audio file, a YouTube link or audioset:VIDEO_ID[@START])")
    if path.is_dir():
        raise MusrecError(f"{text} is a directory, not an audio file")


def import_tensorflow_quietly(config: Config) -> None:
    if config.embedder.kind == "local":
        from musrec.vggish.tfutil import import_tensorflow

        import_tensorflow()


def _embed(args: argparse.Namespace, config: Config) -> int:
    from musrec.audio.decode import Audio, decode
    from musrec.pipeline import audio_limits, fetch_options, is_link, make_embedder

    config = config.with_overrides(_model_overrides(args))
    if is_link(args.input):
        from musrec.links.fetch import fetch_window

        # A link: only the window is fetched (10 s, or --duration), never the whole video.
        fetched = fetch_window(
            args.input,
            start_s=args.start,
            duration_s=args.duration or config.audio.window_s,
            options=fetch_options(config),
            limits=audio_limits(config),
        )
        audio = Audio(fetched.samples, offset_s=fetched.window.start_s)
    else:
        _check_input_file(args.input)
        audio = decode(Path(args.input), start_s=args.start, duration_s=args.duration, limits=audio_limits(config))
    import_tensorflow_quietly(config)
    embedder = make_embedder(config)
    try:
        rows = embedder.embed(audio.samples, audio.sample_rate)
    finally:
        close = getattr(embedder, "close", None)
        if callable(close):
            close()
    if args.json:
        print(json.dumps({"embedding": rows.tolist()}))
        return 0
    print(f"{len(rows)} rows x 128 (one per 0.96 s) from {audio.offset_s:g} s, {audio.duration_s:.2f} s of audio")
    for row in rows:
        print(" ".join(str(v) for v in row.tolist()))
    return 0


def _serve(args: argparse.Namespace, config: Config) -> int:
    from musrec.embedding.server import run_server
    from musrec.pipeline import make_embedder

    config = config.with_overrides({**_model_overrides(args), "server.host": args.host, "server.port": args.port})
    if config.embedder.kind != "local":
        raise MusrecError("musrec serve runs VGGish in this process: use --embedder local")
    import_tensorflow_quietly(config)
    embedder = make_embedder(config)
    srv = config.server
    log.warning("serving the MAX embedding API on http://%s:%d (relu=%s)", srv.host, srv.port, config.embedder.relu)
    run_server(embedder, host=srv.host, port=srv.port, max_bytes=srv.max_bytes, concurrency=srv.concurrency)
    return 0


# ---- setup / doctor -----------------------------------------------------------------------------------------


def _setup(args: argparse.Namespace, config: Config) -> int:
    from musrec.setup.provision import SetupOptions, check_ready, setup

    config = config.with_overrides(
        {"build.splits": tuple(args.splits) if args.splits else None, "build.music_only": args.music_only}
    )
    options = SetupOptions(
        features=not (args.models_only or args.skip_features),
        index=not args.models_only,
        source=args.source,
        rebuild=args.rebuild,
        recheck=args.recheck,
        progress=not args.no_progress,
    )
    print(f"data directory: {config.data_dir}", flush=True)
    setup(config, options, on_step=lambda step: print(step, flush=True))
    if not check_ready(config):
        print("ready: try `musrec recommend FILE`")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from musrec.setup.doctor import diagnose, failed

    checks = diagnose(_config_path(args), quick=args.quick, bot=args.bot)
    for check in checks:
        if not args.quiet or check.status != "ok":
            print(check)
    return EXIT_ERROR if failed(checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
