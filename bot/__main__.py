"""``python -m bot`` / ``musrec-bot``: run the bot, register its slash commands, or print what would be registered.

python -m bot                      # run (first run: downloads the model and data, builds the index)
python -m bot sync [--guild ID]    # register the slash commands (globally, or in one guild: instant)
python -m bot print-commands       # print the JSON payload that sync would send

A start that fails is one line on stderr and an exit status: 1 when something must be fixed first (the token, an
intent not enabled in the developer portal, the configuration, a model file that is not the configured one), 75
(``EX_TEMPFAIL``) when it is probably temporary (no network, Discord unreachable, silent or answering 5xx, downloads
failing for the same reasons): a process manager may simply start the bot again. 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.redact import redacting
from bot.startup import EXIT_FAILURE, EXIT_TEMPFAIL, TEMPORARY, TOKEN_ENV, Startup, StartupError, start
from musrec.config import CONFIG_SEARCH, Config, find_config, load_config
from musrec.errors import MusrecError
from musrec.setup.download import NetworkError

if TYPE_CHECKING:
    from bot.client import MusrecBot

log = logging.getLogger("bot")

EXIT_INTERRUPTED = 130
# How long Discord may take to answer while the bot starts (logging in, reaching the gateway, registering commands).
DISCORD_TIMEOUT_S = 60.0


def main(argv: Sequence[str] | None = None, *, timeout_s: float = DISCORD_TIMEOUT_S) -> int:
    """The entry point; ``timeout_s`` bounds each exchange with Discord while starting."""
    parser = argparse.ArgumentParser(prog="musrec-bot", description="The musrec Discord bot.")
    parser.add_argument("--config", type=Path, help=f"TOML config file (default: {CONFIG_SEARCH})")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the bot (the default)")
    sync = commands.add_parser("sync", help="register the slash commands with Discord")
    sync.add_argument(
        "--guild",
        type=int,
        help="a guild (server) id: commands appear there at once; default: bot.sync_guild, else global",
    )
    commands.add_parser("print-commands", help="print the JSON payload that sync would send")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("discord").setLevel(logging.INFO if args.verbose else logging.WARNING)
    # The bot has no voice: discord.py's own switches for its warnings that voice needs PyNaCl and davey.
    discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
    with redacting(os.environ.get(TOKEN_ENV, "").strip()) as redactor:  # the token never reaches a log
        try:
            config = _config(args.config)
            if args.command == "print-commands":
                payload = asyncio.run(_payload(config))
                print(json.dumps(payload, indent=2, sort_keys=True))
                return 0
            token = _token()
            if args.command == "sync":
                guild = args.guild or (int(config.bot.sync_guild) if config.bot.sync_guild else None)
                return asyncio.run(_sync(config, token, guild, timeout_s=timeout_s))
            return _run(config, token, timeout_s=timeout_s)
        except StartupError as err:
            print(f"musrec-bot: {redactor.redact(str(err))}", file=sys.stderr)
            return err.exit_code
        except NetworkError as err:  # downloads at the first start
            print(f"musrec-bot: {redactor.redact(str(err))}; {TEMPORARY}", file=sys.stderr)
            return EXIT_TEMPFAIL
        except MusrecError as err:
            print(f"musrec-bot: {redactor.redact(str(err))}", file=sys.stderr)
            return EXIT_FAILURE
        except ImportError as err:  # an installation without one of its dependencies: say which
            log.debug("import failed", exc_info=True)
            print(f"musrec-bot: {redactor.redact(missing_module(err))}", file=sys.stderr)
            return EXIT_FAILURE
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED


def missing_module(err: ImportError) -> str:
    """The line for a module that cannot be imported: which one, and what to do."""
    return (
        f"cannot import {err.name or 'a module the bot needs'} ({err}): this installation is incomplete; "
        "reinstall musrec with its dependencies"
    )


def _config(path: Path | None) -> Config:
    return load_config(find_config(path))


def _token() -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise MusrecError(f"set {TOKEN_ENV} to your bot's token (Discord developer portal > Bot > Reset Token)")
    return token


async def _payload(config: Config) -> list[dict[str, object]]:
    from bot.client import command_payload

    return await command_payload(config)


async def _sync(config: Config, token: str, guild_id: int | None, *, timeout_s: float = DISCORD_TIMEOUT_S) -> int:
    """Register the slash commands through a plain client that borrows the bot's commands: nothing is loaded."""
    from bot.client import make_bot

    lender = make_bot(config)  # never logs in: its setup_hook would load the model and the index
    await lender.add_cogs()
    startup = Startup()
    # Never sent: the client does not connect.
    client = discord.Client(intents=discord.Intents.default(), http_trace=startup.trace)
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
    for command in lender.tree.get_commands():
        tree.add_command(command)
    guild = discord.Object(id=guild_id) if guild_id else None
    if guild is not None:
        tree.copy_global_to(guild=guild)
    async with client, startup.bounded(timeout_s):
        await client.login(token)
        synced = await tree.sync(guild=guild)
    where = f"guild {guild_id}" if guild_id else "all guilds (global commands can take up to an hour to appear)"
    print(f"registered {len(synced)} commands in {where}")
    return 0


def _run(config: Config, token: str, *, timeout_s: float = DISCORD_TIMEOUT_S) -> int:
    from musrec.configured import use_model_threads

    use_model_threads(config, config.bot.workers)  # before anything starts TensorFlow (setup may)
    _prepare(config)
    asyncio.run(_serve(config, token, timeout_s=timeout_s))
    return 0


def _prepare(config: Config) -> None:
    """Make sure the model files and the index exist (a first run downloads and builds them)."""
    from musrec.setup.provision import ensure_ready

    ensure_ready(config, progress=True)  # bars on a terminal, periodic log lines elsewhere (e.g. in a container)


async def _serve(config: Config, token: str, *, timeout_s: float = DISCORD_TIMEOUT_S) -> None:
    from bot.client import make_bot

    await serve(make_bot(config), token, timeout_s=timeout_s)


async def serve(bot: MusrecBot, token: str, *, timeout_s: float = DISCORD_TIMEOUT_S) -> None:
    """Run ``bot`` until SIGTERM or SIGINT closes it: ``async with bot: await bot.start(token)``, watched by
    :func:`bot.startup.start` (a failed start raises :class:`StartupError`)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _shutdown, bot, sig, stopping)
    try:
        async with bot:
            try:
                await start(bot, bot.startup, token, timeout_s=timeout_s)
            except StartupError:
                if not stopping.is_set():  # else the failure is the shutdown itself, cutting the start short
                    raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _shutdown(bot: discord.Client, sig: signal.Signals, stopping: asyncio.Event) -> None:
    log.info("%s: shutting down", sig.name)
    stopping.set()
    asyncio.get_running_loop().create_task(bot.close())


if __name__ == "__main__":
    raise SystemExit(main())
