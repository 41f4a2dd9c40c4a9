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
import sys
from collections.abc import Callable, Sequence

from musrec.cli import commands
from musrec.cli.parser import build_parser, config_overrides
from musrec.config import Config, find_config, load_config
from musrec.embedder import use_model_threads
from musrec.errors import MusrecError

__all__ = ["build_parser", "main"]

log = logging.getLogger("musrec")

EXIT_ERROR = commands.EXIT_ERROR
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace, Config], int]
COMMANDS: dict[tuple[str, str | None], Command] = {
    ("setup", None): commands.setup,
    ("index", "build"): commands.index_build,
    ("index", "info"): commands.index_info,
    ("recommend", None): commands.recommend,
    ("embed", None): commands.embed,
    ("serve", None): commands.serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        if args.command == "doctor":  # a configuration that does not load is one of its findings
            return commands.doctor(args)
        config = load_config(find_config(args.config)).with_overrides(config_overrides(args))
        use_model_threads(config, config.server.concurrency if args.command == "serve" else 1)
        return COMMANDS[(args.command, getattr(args, "index_command", None))](args, config)
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


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbosity < 2:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
