"""The ``musrec`` command line's arguments. A flag that sets a configuration key is stored under that key's name
(``--top-k`` as ``recommend.top_k``), so :func:`config_overrides` applies every command's flags in one place."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from musrec import __version__
from musrec.cli.library import add_parsers as add_library_parsers
from musrec.config import (
    BACKENDS,
    BUILD_BACKENDS,
    CONFIG_SEARCH,
    EMBEDDERS,
    REPRESENTATIONS,
    SHORT_SEGMENT_POLICIES,
    SPLITS,
    Config,
)
from musrec.config.values import apply
from musrec.errors import ConfigError
from musrec.timecode import parse_timecode

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="musrec", description="Find sounds that sound like this one, in Google AudioSet.")
    parser.add_argument("--version", action="version", version=f"musrec {__version__}")
    parser.add_argument("--config", type=Path, help=f"TOML config file (default: {CONFIG_SEARCH})")
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
    build.add_argument(
        "--out", dest="index.path", type=Path, help="index directory (default: index.path from the config)"
    )
    build.add_argument(
        "--splits", dest="build.splits", nargs="+", choices=SPLITS, help="AudioSet splits to read (default: all)"
    )
    build.add_argument(
        "--music-only",
        dest="build.music_only",
        action="store_true",
        default=None,
        help="keep only segments labelled within the ontology's Music subtree",
    )
    build.add_argument(
        "--include-labels",
        dest="build.include_labels",
        nargs="+",
        metavar="LABEL",
        help="keep segments with any of these labels",
    )
    build.add_argument(
        "--exclude-labels",
        dest="build.exclude_labels",
        nargs="+",
        metavar="LABEL",
        help="drop segments with any of these labels",
    )
    build.add_argument(
        "--min-seconds", dest="build.min_seconds", type=int, help="drop segments with fewer embedding rows (seconds)"
    )
    build.add_argument(
        "--short-segments",
        dest="build.short_segments",
        choices=SHORT_SEGMENT_POLICIES,
        help="segments under 10 s: repeat their rows to 10 (pad) or drop them (skip)",
    )
    build.add_argument(
        "--representation",
        dest="build.representation",
        choices=REPRESENTATIONS,
        help="how 10x128 rows become one vector",
    )
    build.add_argument("--trees", dest="build.trees", type=int, help="Annoy trees (more: better recall, bigger file)")
    build.add_argument(
        "--target-recall", dest="build.target_recall", type=float, help="recall@10 that the tuned search_k must reach"
    )
    build.add_argument(
        "--recall-queries", dest="build.recall_queries", type=int, help="held-out queries used to measure recall"
    )
    build.add_argument(
        "--backend",
        dest="build.backend",
        choices=BUILD_BACKENDS,
        help="approximate structure: annoy, ivf (faiss, for 1M+ segments) or auto (by size; default from the config)",
    )
    build.add_argument(
        "--ivf-lists",
        dest="build.ivf_lists",
        type=int,
        metavar="N",
        help="IVF inverted lists (default: about 2 sqrt(count))",
    )
    build.add_argument(
        "--rerank", dest="build.rerank", type=int, metavar="N", help="IVF candidates re-scored exactly per 10 results"
    )
    build.add_argument("--force", action="store_true", help="replace an existing index")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")

    info = index_commands.add_parser("info", help="describe an index")
    info.add_argument("directory", type=Path, nargs="?", metavar="DIR", help="index directory (default: from config)")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")

    add_library_parsers(commands, _Parser)

    videos = commands.add_parser("videos", help="check which of the index's videos still play on YouTube")
    videos_commands = videos.add_subparsers(
        dest="videos_command", required=True, parser_class=_Parser, metavar="ACTION"
    )
    check = videos_commands.add_parser(
        "check", help="check every video of the index ahead of time (resumable: known videos are skipped)"
    )
    check.add_argument("--limit", type=int, metavar="N", help="check at most N videos not yet known")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")

    model = _Parser(add_help=False)
    group = model.add_argument_group("embedding model")
    group.add_argument(
        "--embedder",
        dest="embedder.kind",
        choices=EMBEDDERS,
        help="VGGish in this process (local) or MAX servers (max)",
    )
    group.add_argument(
        "--checkpoint",
        dest="embedder.checkpoint",
        type=Path,
        metavar="PATH",
        help="VGGish checkpoint (vggish_model.ckpt)",
    )
    group.add_argument(
        "--pca-params",
        dest="embedder.pca_params",
        type=Path,
        metavar="PATH",
        help="PCA parameters (vggish_pca_params.npz)",
    )
    group.add_argument(
        "--relu",
        dest="embedder.relu",
        action="store_true",
        default=None,
        help="ReLU on the embedding layer, as IBM's MAX (default: pre-activation, as AudioSet)",
    )
    group.add_argument(
        "--max-url", dest="max.urls", action="append", metavar="URL", help="MAX server URL (repeat for several)"
    )

    embed = commands.add_parser("embed", parents=[model], help="print the VGGish embedding of audio")
    embed.add_argument("input", metavar="INPUT", help="an audio or video file, or a YouTube link")
    embed.add_argument("--start", type=_timecode, metavar="TIME", help="start at TIME (90, 1:30, 1m30s)")
    embed.add_argument("--duration", type=_timecode, metavar="TIME", help="embed this much (default: to the end)")
    embed.add_argument("--json", action="store_true", help='print {"embedding": [[128 ints], ...]}')

    serve = commands.add_parser(
        "serve", parents=[model], help="run a MAX-compatible embedding server backed by VGGish in this process"
    )
    serve.add_argument("--host", dest="server.host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", dest="server.port", type=int, help="port (default 5000, as MAX)")

    rec = commands.add_parser("recommend", parents=[model], help="find segments that sound like INPUT")
    rec.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="an audio or video file, a YouTube link, or audioset:VIDEO_ID[@START]; two or three with --blend",
    )
    rec.add_argument(
        "--blend", action="store_true", help="the segments that sound like all the INPUTs at once (two or three)"
    )
    rec.add_argument("--blend-method", choices=("mean", "rrf"), default="mean", help=argparse.SUPPRESS)
    rec.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="LABEL",
        help="only segments with this AudioSet label or a kind of it (repeat for any of several)",
    )
    rec.add_argument(
        "--exclude-label",
        action="append",
        default=[],
        metavar="LABEL",
        help="no segments with this label or a kind of it (repeat for several)",
    )
    rec.add_argument(
        "--start",
        type=_timecode,
        metavar="TIME",
        help="start of the 10-s window (default: the loudest 10 s of the first 3 minutes)",
    )
    rec.add_argument("--index", type=Path, dest="index.path", metavar="DIR", help="index directory")
    rec.add_argument("--top-k", dest="recommend.top_k", type=int, help="number of results (default 10)")
    rec.add_argument(
        "--music-only",
        dest="recommend.music_only",
        action="store_true",
        default=None,
        help="only segments labelled as music",
    )
    rec.add_argument(
        "--all-segments",
        dest="recommend.one_per_video",
        action="store_false",
        default=None,
        help="allow several segments of one video (default: the best one per video)",
    )
    rec.add_argument(
        "--backend",
        dest="index.backend",
        choices=BACKENDS,
        help="search backend (default: what the index measured fastest)",
    )
    rec.add_argument(
        "--library",
        metavar="NAME",
        help="search this library of your own tracks instead of AudioSet (INPUT may also be library:TRACK[@SECONDS])",
    )
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
    setup.add_argument(
        "--splits",
        dest="build.splits",
        nargs="+",
        choices=SPLITS,
        help="AudioSet splits to index (default: build.splits)",
    )
    setup.add_argument(
        "--music-only",
        dest="build.music_only",
        action="store_true",
        default=None,
        help="index only segments labelled within the Music subtree",
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


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``{"section.key": value}`` for every configuration flag given (unset flags are None; lists become tuples)."""
    return {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in vars(args).items()
        if "." in key and value is not None
    }


def apply_flags(config: Config, args: argparse.Namespace, parser: argparse.ArgumentParser) -> Config:
    """``config`` with the configuration flags given; a value the configuration refuses is named by its flag
    (``--top-k must be at least 1, got 0``), as the user typed it, not by its key."""
    overrides = config_overrides(args)
    try:
        return config.with_overrides(overrides)
    except ConfigError:
        flags = config_flags(parser, args)
        for key, value in overrides.items():  # which flag, alone, is refused
            flag = flags.get(key, "option")
            try:
                apply(config, {key: value}, source=flag)
            except ConfigError as err:
                raise ConfigError(str(err).replace(f"{flag}: {key}", flag, 1)) from None
        raise  # only a combination of flags is refused: the keys say which


def config_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """The flag that sets each configuration key in the command run (``{"recommend.top_k": "--top-k"}``): one key
    has other flags in other commands (``index.path``: ``--out`` to build, ``--index`` to search)."""
    flags: dict[str, str] = {}
    # argparse lists a parser's arguments only in _actions; its documented Action attributes are read, nothing else.
    for action in parser._actions:
        if isinstance(action.choices, dict):  # the commands: follow the one run
            chosen = action.choices.get(getattr(args, action.dest, None))
            if isinstance(chosen, argparse.ArgumentParser):
                flags.update(config_flags(chosen, args))
        elif "." in action.dest and action.option_strings:
            flags[action.dest] = max(action.option_strings, key=len)
    return flags
