"""The ``musrec`` command line: set up, build and inspect indexes, embed audio, ask for recommendations, serve.

Configuration comes from ``--config FILE`` (or ``$MUSREC_CONFIG``, ``./config.toml``, the user's
``$XDG_CONFIG_HOME/musrec/config.toml``: :func:`musrec.config.find_config`), then
``MUSREC_*`` environment variables, then the flags (``parser``). Each command is a function in ``commands``.
Errors print one line and exit non-zero; a bug prints one line too, and its traceback with ``-v``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from musrec.cli import commands
from musrec.cli.parser import apply_flags, build_parser
from musrec.config import Config, find_config, load_config
from musrec.configured import use_model_threads
from musrec.errors import EmbedderError, MusrecError

__all__ = ["build_parser", "main"]

log = logging.getLogger("musrec")

EXIT_ERROR = commands.EXIT_ERROR
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + getattr(signal, "SIGPIPE", 13)  # what a shell reports for a tool that SIGPIPE ended

Command = Callable[[argparse.Namespace, Config], int]
COMMANDS: dict[tuple[str, str | None], Command] = {
    ("setup", None): commands.setup,
    ("index", "build"): commands.index_build,
    ("index", "info"): commands.index_info,
    ("recommend", None): commands.recommend,
    ("embed", None): commands.embed,
    ("serve", None): commands.serve,
    ("videos", "check"): commands.videos_check,
    ("library", None): commands.library,
}


def _forward_passes_at_once(args: argparse.Namespace, config: Config) -> int:
    """How many forward passes a command runs at once: TensorFlow's threads are the usable cores shared by them."""
    if args.command == "serve":
        return config.server.concurrency
    if args.command == "library" and getattr(args, "library_command", None) == "add":
        from musrec.library.segments import add_workers

        return add_workers()
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    config: Config | None = None
    try:
        if args.command == "doctor":  # a configuration that does not load is one of its findings
            return _flushed(commands.doctor(args))
        config = apply_flags(load_config(find_config(args.config)), args, parser)
        use_model_threads(config, _forward_passes_at_once(args, config))
        action = getattr(args, "index_command", None) or getattr(args, "videos_command", None)
        return _flushed(COMMANDS[(args.command, action)](args, config))
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except MusrecError as err:
        log.debug("error", exc_info=True)
        sys.stderr.write(f"musrec: error: {err}{_where_to_look(err, config)}\n")
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


def _where_to_look(err: MusrecError, config: Config | None) -> str:
    """For the one at the command line, who runs the servers: where to look when the embedding service failed (the
    bot's users are told only that it did). No address is in the line; the warnings logged before it name them."""
    if isinstance(err, EmbedderError) and config is not None and config.embedder.kind == "max":
        return " (check the MAX servers of [max] urls: `musrec doctor` checks them)"
    return ""


def _flushed(code: int) -> int:
    """``code``, once what the command printed is written: a closed pipe is found here, not at the interpreter's
    exit (where Python would print its own complaint)."""
    sys.stdout.flush()
    return code


def _drop_stdout() -> None:
    """Point standard output at the null device, so the interpreter's last flush has nowhere to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (a test's capture): nothing is flushed to a pipe at exit
        pass


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbosity < 2:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
