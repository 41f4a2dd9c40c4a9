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
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import discord
import discord.gateway
import discord.http
from discord import app_commands

from bot.redact import redacting
from musrec.config import CONFIG_SEARCH, Config, find_config, load_config
from musrec.errors import MusrecError
from musrec.setup.download import NetworkError

log = logging.getLogger("bot")

TOKEN_ENV = "MUSREC_DISCORD_TOKEN"
EXIT_FAILURE = 1
EXIT_TEMPFAIL = 75  # sysexits.h: a temporary failure, the user is invited to retry
EXIT_INTERRUPTED = 130
# How long Discord may take to answer while the bot starts (logging in, reaching the gateway, registering commands).
DISCORD_TIMEOUT_S = 60.0
TEMPORARY = "probably temporary: a process manager may restart the bot"
# Gateway close codes that no retry will fix: https://discord.com/developers/docs/topics/opcodes-and-status-codes
_CLOSE_CODES = {
    4004: f"Discord's gateway refused the token in {TOKEN_ENV}: check it in the developer portal (Bot > Reset Token)",
    4010: "Discord's gateway refused the shard settings: check bot.sharded",
    4011: "this bot is in too many servers for one gateway connection: set bot.sharded = true",
    4012: "Discord's gateway refused the API version: upgrade discord.py",
    4013: "Discord's gateway refused the intents the bot asked for: upgrade musrec and discord.py",
}
INTENT_HELP = (
    "Discord refused the message content intent, which bot.listen_channels needs: enable Message Content Intent in "
    "the developer portal (Bot > Privileged Gateway Intents), or set bot.listen_channels = []"
)


class StartupError(Exception):
    """The bot could not start for a reason outside it (Discord, the network): ``str(err)`` is one line to show."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(f"{message}; {TEMPORARY}" if temporary else message)
        self.exit_code = EXIT_TEMPFAIL if temporary else EXIT_FAILURE


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
    logging.getLogger("discord.client").addFilter(lambda record: "voice will NOT be supported" not in record.msg)
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
    client = discord.Client(intents=discord.Intents.default())  # never sent: the client does not connect
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
    for command in lender.tree.get_commands():
        tree.add_command(command)
    guild = discord.Object(id=guild_id) if guild_id else None
    if guild is not None:
        tree.copy_global_to(guild=guild)
    async with client, _discord(_api(), timeout_s=timeout_s):
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

    bot = make_bot(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _shutdown, bot, sig, stopping)
    async with bot:
        try:
            await _login(bot, token, timeout_s=timeout_s)
            if not stopping.is_set():
                await _reach_gateway(bot, timeout_s=timeout_s)
            async with _discord(_gateway()):
                await bot.connect()  # returns at once when a signal closed the bot
        except StartupError:
            if not stopping.is_set():  # else the failure is the shutdown itself, cutting the start short
                raise


async def _login(bot: discord.Client, token: str, *, timeout_s: float) -> None:
    """``bot.login(token)`` bounded by ``timeout_s``, except ``setup_hook``: loading the model takes what it takes."""
    hook = bot.setup_hook
    async with _discord(_api(), timeout_s=timeout_s) as deadline:

        async def setup_hook() -> None:
            deadline.reschedule(None)
            await hook()

        bot.setup_hook = setup_hook  # type: ignore[method-assign]
        await bot.login(token)


async def _reach_gateway(bot: discord.Client, *, timeout_s: float) -> None:
    """Open one connection to Discord's gateway and close it again.

    discord.py retries a gateway it cannot reach with a traceback in the log each time (2.7 then stops with an
    AttributeError when it never had a connection), which suits a bot that lost its connection, not one that never
    had it: a bot that cannot reach the gateway at start stops here, in one line.
    """
    url = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with _discord(_gateway(), timeout_s=timeout_s):
        ws = await bot.http.ws_connect(str(url.with_query(v=discord.http.INTERNAL_API_VERSION, encoding="json")))
        await ws.close()


def _shutdown(bot: discord.Client, sig: signal.Signals, stopping: asyncio.Event) -> None:
    log.info("%s: shutting down", sig.name)
    stopping.set()
    asyncio.get_running_loop().create_task(bot.close())


# ---- Discord's failures, in one line ------------------------------------------------------------------------


def _api() -> str:
    return f"Discord ({urlsplit(discord.http.Route.BASE).hostname})"


def _gateway() -> str:
    return f"Discord's gateway ({discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY.host})"


@contextlib.asynccontextmanager
async def _discord(where: str, *, timeout_s: float | None = None) -> AsyncIterator[asyncio.Timeout]:
    """Bound an exchange with ``where`` by ``timeout_s`` and turn its failures into a :class:`StartupError`."""
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            yield deadline
    except (discord.DiscordException, aiohttp.ClientError) as err:
        explained = _explain(err, where)
        if explained is None:
            raise
        raise explained from None
    except TimeoutError:
        if not deadline.expired():
            raise
        raise StartupError(f"{where} did not answer within {timeout_s:g} s", temporary=True) from None


def _explain(err: Exception, where: str) -> StartupError | None:
    """The one line for a failure to talk to Discord, and whether it is probably temporary; None for anything else."""
    if isinstance(err, discord.PrivilegedIntentsRequired):
        return StartupError(INTENT_HELP, temporary=False)
    if isinstance(err, discord.LoginFailure):
        return StartupError(
            f"Discord refused the token in {TOKEN_ENV}: check it in the developer portal (Bot > Reset Token)",
            temporary=False,
        )
    if isinstance(err, discord.RateLimited):
        return StartupError(f"{where} is rate-limiting this bot for {err.retry_after:.0f} s", temporary=True)
    if isinstance(err, discord.HTTPException):
        answer = f"{where} answered HTTP {err.status}" + (f" ({err.text})" if err.text else "")
        if err.status >= 500:
            return StartupError(f"{answer}: Discord is having trouble (https://discordstatus.com)", temporary=True)
        return StartupError(answer, temporary=err.status == 429)
    if isinstance(err, discord.GatewayNotFound):
        return StartupError(f"{where}: {err}", temporary=True)
    if isinstance(err, discord.ConnectionClosed):
        if err.code in _CLOSE_CODES:
            return StartupError(_CLOSE_CODES[err.code], temporary=False)
        reason = f": {err.reason}" if err.reason else ""
        return StartupError(f"{where} closed the connection (code {err.code}{reason})", temporary=True)
    if isinstance(err, aiohttp.ClientSSLError):  # before ClientConnectorError, which it is too
        problem = getattr(err, "certificate_error", None) or err.os_error
        return StartupError(
            f"TLS with {where} failed ({problem}): check the system clock, the CA certificates and any proxy "
            "that intercepts TLS",
            temporary=False,
        )
    if isinstance(err, aiohttp.ClientConnectorError):
        if isinstance(err.os_error, socket.gaierror):
            return StartupError(
                f"cannot reach {where}: DNS lookup failed ({err.os_error.strerror}); check this machine's network",
                temporary=True,
            )
        return StartupError(
            f"cannot reach {where} on port {err.port}: {_os_reason(err.os_error)}; check this machine's network",
            temporary=True,
        )
    if isinstance(err, aiohttp.WSServerHandshakeError):
        return StartupError(
            f"{where} refused the connection (HTTP {err.status} {err.message})",
            temporary=err.status >= 500 or err.status == 429,
        )
    if isinstance(err, aiohttp.ServerTimeoutError):
        return StartupError(f"{where} did not answer in time ({err})", temporary=True)
    if isinstance(err, aiohttp.ClientError):
        return StartupError(f"the connection to {where} failed ({type(err).__name__}: {err})", temporary=True)
    return None


def _os_reason(err: OSError) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return "timed out"
    return err.strerror or str(err)


if __name__ == "__main__":
    raise SystemExit(main())
