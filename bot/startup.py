"""Starting the bot through discord.py's public API, and its failures in one line each.

``async with bot: await bot.start(token)`` as discord.py's advanced_startup example does, watched from outside:

- what the bot is talking to comes from the requests discord.py makes, through the ``http_trace`` a Client accepts
  (its URL, and the exception of a request that failed): no URL of discord.py's own is read;
- each exchange with Discord is bounded by a deadline, except the bot's own ``setup_hook`` (loading the model takes
  what it takes), until the gateway's READY (the ``connect`` event);
- a gateway connection that fails before READY ends the start (discord.py would retry a gateway it never reached
  with a traceback each time): the failure discord.py met is the one line, its traceback of it not repeated.

A failure is classified from the exceptions discord.py and aiohttp raise: :func:`explain` says whether a person must
fix something (exit status 1) or it is probably temporary (75, ``EX_TEMPFAIL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace

import aiohttp
import discord
import yarl

log = logging.getLogger(__name__)

TOKEN_ENV = "MUSREC_DISCORD_TOKEN"
EXIT_FAILURE = 1
EXIT_TEMPFAIL = 75  # sysexits.h: a temporary failure, the user is invited to retry
TEMPORARY = "probably temporary: a process manager may restart the bot"
DISCORD_API = yarl.URL("https://discord.com/api")  # named in a failure that came before any request
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
_WEBSOCKET = frozenset({"ws", "wss"})


class StartupError(Exception):
    """The bot could not start for a reason outside it (Discord, the network): ``str(err)`` is one line to show."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(f"{message}; {TEMPORARY}" if temporary else message)
        self.exit_code = EXIT_TEMPFAIL if temporary else EXIT_FAILURE


class Startup(logging.Filter):
    """What a start is waiting for from Discord: the last request discord.py made and how it failed, and the
    deadline of the exchange under way. One per client, given to it as its ``http_trace`` (:attr:`trace`)."""

    def __init__(self) -> None:
        super().__init__()
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._request_started)
        self.trace.on_request_exception.append(self._request_failed)
        self.url: yarl.URL | None = None
        self.failure: BaseException | None = None  # of the last request, if it failed
        self.connected = False  # READY came: what fails from now on is discord.py's to retry
        self._deadline: asyncio.Timeout | None = None
        self._timeout_s: float | None = None

    async def _request_started(self, session: object, context: SimpleNamespace, params: object) -> None:
        self.url, self.failure = getattr(params, "url", None), None

    async def _request_failed(self, session: object, context: SimpleNamespace, params: object) -> None:
        self.url, self.failure = getattr(params, "url", None), getattr(params, "exception", None)

    def where(self) -> str:
        """What the start was talking to: Discord's API or its gateway, and on which host."""
        url = self.url or DISCORD_API
        if url.scheme in _WEBSOCKET:
            return f"Discord's gateway ({url.host})"
        return f"Discord ({url.host})"

    def filter(self, record: logging.LogRecord) -> bool:
        """Leave out discord.py's traceback of a request that failed before READY: the start reports that failure
        itself, in one line. (Where the bot redacts its logs, a record's traceback is already text here.)"""
        return self.connected or self.failure is None or not (record.exc_info or record.exc_text)

    @contextlib.contextmanager
    def unbounded(self) -> Iterator[None]:
        """No deadline while the block runs (the bot's own set-up); the next exchange has one again."""
        deadline = self._deadline
        if deadline is not None and not self.connected:
            deadline.reschedule(None)
        try:
            yield
        finally:
            if deadline is not None and self._timeout_s is not None and not self.connected:
                deadline.reschedule(asyncio.get_running_loop().time() + self._timeout_s)

    @contextlib.asynccontextmanager
    async def bounded(self, timeout_s: float | None) -> AsyncIterator[None]:
        """Bound the exchanges with Discord in the block by ``timeout_s`` each and turn their failures into a
        :class:`StartupError` (the failures of Discord's own; anything else goes on as it is)."""
        deadline = asyncio.timeout(timeout_s)
        self._deadline, self._timeout_s = deadline, timeout_s
        try:
            async with deadline:
                yield
        except (discord.DiscordException, aiohttp.ClientError) as err:
            explained = explain(err, self.where())
            if explained is None:
                raise
            raise explained from None
        except TimeoutError:
            if not deadline.expired():
                raise
            if isinstance(self.failure, aiohttp.ClientError):  # discord.py retried it until the deadline
                raise explain(self.failure, self.where()) or _silent(self.where(), timeout_s) from None
            raise _silent(self.where(), timeout_s) from None
        finally:
            self._deadline = None


def _silent(where: str, timeout_s: float | None) -> StartupError:
    return StartupError(f"{where} did not answer within {timeout_s:g} s", temporary=True)


async def start(bot: discord.Client, startup: Startup, token: str, *, timeout_s: float) -> None:
    """``bot.start(token)`` until the bot is closed; a start that fails raises :class:`StartupError`.

    ``startup`` must be the one the bot was made with (its ``http_trace``); the bot's ``setup_hook`` runs in
    ``startup.unbounded()``.
    """
    loggers = [logging.getLogger(name) for name in ("discord.client", "discord.shard")]
    for logger in loggers:
        logger.addFilter(startup)
    running = asyncio.ensure_future(bot.start(token))
    try:
        async with startup.bounded(timeout_s):
            await _until_ready(bot, startup, running)
        async with startup.bounded(None):  # a close code no retry fixes still ends it in one line
            await running  # until the bot is closed; discord.py reconnects meanwhile
    finally:
        startup.connected = True
        for logger in loggers:
            logger.removeFilter(startup)
        if not running.done():
            running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(running, return_exceptions=True)


async def _until_ready(bot: discord.Client, startup: Startup, running: asyncio.Future[None]) -> None:
    """Wait for the gateway's READY; raise what failed before it (the start itself, or a gateway connection)."""
    ready = asyncio.ensure_future(bot.wait_for("connect"))
    try:
        while True:
            dropped = asyncio.ensure_future(bot.wait_for("disconnect"))
            try:
                await asyncio.wait({running, ready, dropped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                dropped.cancel()
            if running.done():
                running.result()  # a failure (login, a close code no retry fixes), or the bot was closed
                return
            if ready.done():
                startup.connected = True
                return
            if startup.failure is not None:  # a gateway connection failed before READY
                raise startup.failure
            # Discord asked for a new connection (a reconnect before READY): discord.py makes it.
    finally:
        ready.cancel()


def explain(err: BaseException, where: str) -> StartupError | None:
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
