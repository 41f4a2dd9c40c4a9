"""``python -m bot`` / ``musrec-bot``: run the bot, register its slash commands, or print what would be registered.

python -m bot                      # run (first run: downloads the model and data, builds the index)
python -m bot sync [--guild ID]    # register the slash commands (globally, or in one guild: instant)
python -m bot print-commands       # print the JSON payload that sync would send
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

import discord

from musrec.config import Config, load_config
from musrec.errors import MusrecError

log = logging.getLogger("bot")

TOKEN_ENV = "MUSREC_DISCORD_TOKEN"
DEFAULT_CONFIG = Path("config.toml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="musrec-bot", description="The musrec Discord bot.")
    parser.add_argument("--config", type=Path, help="TOML config file (default: $MUSREC_CONFIG or ./config.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the bot (the default)")
    sync = commands.add_parser("sync", help="register the slash commands with Discord")
    sync.add_argument("--guild", help="a guild (server) id: commands appear there at once; default: global")
    commands.add_parser("print-commands", help="print the JSON payload that sync would send")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("discord").setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("discord.client").addFilter(lambda record: "voice will NOT be supported" not in record.msg)
    try:
        config = _config(args.config)
        if args.command == "print-commands":
            payload = asyncio.run(_payload(config))
            print(json.dumps(payload, indent=2, sort_keys=True))
            return 0
        token = _token()
        if args.command == "sync":
            return asyncio.run(_sync(config, token, args.guild))
        return _run(config, token)
    except MusrecError as err:
        print(f"musrec-bot: {err}", file=sys.stderr)
        return 1
    except discord.LoginFailure:
        print(
            f"musrec-bot: Discord refused the token in {TOKEN_ENV}: check it in the developer portal", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 130


def _config(path: Path | None) -> Config:
    if path is None and os.environ.get("MUSREC_CONFIG"):
        path = Path(os.environ["MUSREC_CONFIG"])
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_config(path)


def _token() -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise MusrecError(f"set {TOKEN_ENV} to your bot's token (Discord developer portal > Bot > Reset Token)")
    return token


async def _payload(config: Config) -> list[dict[str, object]]:
    from bot.client import command_payload

    return await command_payload(config)


async def _sync(config: Config, token: str, guild_id: str | None) -> int:
    from bot.client import make_bot

    bot = make_bot(config)
    async with bot:
        await bot.login(token)
        await bot.add_cogs()
        guild = discord.Object(id=int(guild_id)) if guild_id else None
        if guild is not None:
            bot.tree.copy_global_to(guild=guild)
        synced = await bot.tree.sync(guild=guild)
    where = f"guild {guild_id}" if guild_id else "all guilds (global commands can take up to an hour to appear)"
    print(f"registered {len(synced)} commands in {where}")
    return 0


def _run(config: Config, token: str) -> int:
    _prepare(config)
    asyncio.run(_serve(config, token))
    return 0


def _prepare(config: Config) -> None:
    """Make sure the model files and the index exist (a first run downloads and builds them)."""
    try:
        from musrec.setup.provision import ensure_ready
    except ImportError:  # a build without the provisioning module: the files must already be there
        return
    ensure_ready(config, progress=True)  # bars on a terminal, periodic log lines elsewhere (e.g. in a container)


async def _serve(config: Config, token: str) -> None:
    from bot.client import make_bot

    bot = make_bot(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: _shutdown(bot, s))
    async with bot:
        await bot.start(token)


def _shutdown(bot: discord.Client, sig: signal.Signals) -> None:
    log.info("%s: shutting down", sig.name)
    asyncio.get_running_loop().create_task(bot.close())


if __name__ == "__main__":
    raise SystemExit(main())
