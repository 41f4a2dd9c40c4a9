"""``StandIn``: the loopback server, the overrides that point discord.py at it, and the API tests drive it with."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote

import discord
import discord.gateway
import discord.http
import yarl
from aiohttp import web

from . import events
from .failures import Failures
from .gateway import INVALID_SESSION, RECONNECT, Gateway
from .objects import (
    DEFAULT_UPLOAD_LIMIT,
    INTENT_MESSAGE_CONTENT,
    MEMBER_PERMISSIONS,
    PRIVILEGED_INTENTS,
    World,
    attachment_path,
    guess_content_type,
    signed_query,
)
from .records import Call, InteractionHandle, MessageHandle, StoredMessage
from .rest import API, Rest

T = TypeVar("T")


class StandIn:
    """Discord's REST API v10, gateway and attachment CDN on 127.0.0.1, for the real discord.py client.

    Use one instance per event loop: ``async with StandIn(heartbeat_interval=0.5) as standin: ...``.
    """

    def __init__(
        self,
        *,
        token: str = "standin.bot.token",
        heartbeat_interval: float = 41.25,
        ack_deadline: float = 3.0,
        token_ttl: float = 15 * 60.0,
        privileged_intents: int = PRIVILEGED_INTENTS,
        bot_permissions: int = MEMBER_PERMISSIONS,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        application_id: int | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        user_id: int | None = None,
        patch_discord: bool = True,
    ) -> None:
        self.token = token
        self.ack_deadline = ack_deadline
        self.token_ttl = token_ttl
        self.privileged_intents = privileged_intents
        self.patch_discord = patch_discord
        self.world = World.create(
            application_id=application_id,
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=user_id,
            bot_permissions=bot_permissions,
            upload_limit=upload_limit,
        )
        self.gateway = Gateway(self, heartbeat_interval_ms=round(heartbeat_interval * 1000))
        self.rest = Rest(self)
        self.recorded: list[Call] = []
        self.errors: list[Exception] = []  # failures inside the stand-in itself; tests should find none
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # registered commands; key None is global
        self.messages: dict[int, StoredMessage] = {}
        self.interactions: dict[int, InteractionHandle] = {}
        self.interactions_by_token: dict[str, InteractionHandle] = {}
        self.cdn_files: dict[str, tuple[bytes, str]] = {}
        self._injected = Failures()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._saved: tuple[str, yarl.URL] | None = None
        self.base_url = ""

    # Lifecycle.

    async def start(self) -> StandIn:
        app = web.Application(middlewares=[self.rest.middleware], client_max_size=4 * self.world.upload_limit)
        self.rest.add_routes(app)
        app.router.add_get("/gateway-ws", self.gateway.handler)
        app.router.add_get("/gateway-ws/resume", self.gateway.handler)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        if self.patch_discord:
            self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
            discord.http.Route.BASE = self.api_url
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        return self

    async def stop(self) -> None:
        if self._saved is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._saved = None
        if self._runner is not None:
            await self.gateway.close_all()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> StandIn:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        return self.base_url + API

    @property
    def cdn_url(self) -> str:
        return self.base_url

    @property
    def cdn_hostname(self) -> str:
        """Host of attachment URLs ("127.0.0.1"): what a bot's CDN allow-list must accept in these tests."""
        return yarl.URL(self.cdn_url).host or ""

    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/gateway-ws"

    @property
    def resume_gateway_url(self) -> str:
        return self.gateway_url + "/resume"

    @contextlib.asynccontextmanager
    async def running(
        self, client: discord.Client, *, token: str | None = None, timeout: float = 10.0
    ) -> AsyncIterator[discord.Client]:
        """Run ``client.start(token)`` against the stand-in until the client is ready; close it and wait for it on exit.

        ``token`` defaults to the stand-in's. Errors of the client task (bad token, disallowed intents, ...) are raised
        here instead of being lost.
        """
        task = asyncio.create_task(client.start(token or self.token), name="standin-client")
        deadline = time.monotonic() + timeout
        failed = False
        try:
            while not client.is_ready():
                if task.done():
                    task.result()
                    raise AssertionError("the client stopped before it became ready")
                if time.monotonic() > deadline:
                    raise AssertionError(f"the client was not ready after {timeout:g}s; calls: {self.recorded}")
                await asyncio.sleep(0.01)
            yield client
        except BaseException:
            failed = True
            raise
        finally:
            await client.close()
            try:
                async with asyncio.timeout(timeout):
                    await task
            except Exception:
                if not failed:  # otherwise the error already propagating says more
                    raise

    # Waiting.

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float = 5.0, what: str = "a condition"
    ) -> None:
        """Wait until ``predicate()`` holds; it is re-checked after every request and gateway payload."""
        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(predicate)
            except TimeoutError:
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {what}; calls: {self.recorded}"
                ) from None

    async def _record(self, call: Call) -> None:
        self.recorded.append(call)
        await self.notify()

    # Recorded state.

    @property
    def unexpected(self) -> list[Call]:
        """Requests to routes the stand-in does not implement."""
        return [c for c in self.recorded if not c.matched]

    def calls(self, route: str | None = None, method: str | None = None) -> list[Call]:
        return [c for c in self.recorded if route in (None, c.route) and method in (None, c.method)]

    def bot_messages(self, channel_id: int | None = None) -> list[StoredMessage]:
        """Messages the bot created (channel messages and interaction responses), oldest first, not deleted."""
        bot_id = self.world.application_id
        return [
            m
            for m in self.messages.values()
            if m.author_id == bot_id and not m.deleted and channel_id in (None, m.channel_id)
        ]

    def human_ids(self) -> list[int]:
        return [user_id for user_id, user in self.world.users.items() if not user.get("bot")]

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int,
        body: Any = None,
        times: int = 1,
        retry_after: float = 0.05,
    ) -> None:
        """Answer the next ``times`` matching requests (``re.search`` on the path) with ``status`` and ``body``.

        A 429 gets the ``Via`` header and ``retry_after`` body discord.py needs to treat it as a rate limit and retry.
        """
        self._injected.add(method, path_pattern, status=status, body=body, times=times, retry_after=retry_after)

    def _take_injected(self, call: Call) -> tuple[tuple[int, Any], dict[str, str]] | None:
        return self._injected.take(call)

    # Attachments and commands.

    def add_attachment(
        self, filename: str, data: bytes, content_type: str | None = None, *, channel_id: int | None = None
    ) -> dict[str, Any]:
        """Serve ``data`` on the stand-in's CDN and return the Discord attachment object pointing at it."""
        channel_id = channel_id or self.world.channel_id
        attachment_id = self.world.snowflake()
        path = attachment_path(channel_id, attachment_id, filename)
        content_type = content_type or guess_content_type(filename)
        self.cdn_files[unquote(path)] = (data, content_type)
        url = self.cdn_url + path + signed_query(time.time())
        return self.world.attachment(attachment_id, filename, len(data), content_type, url, url)

    def register_commands(
        self, commands: Iterable[Mapping[str, Any]], *, guild_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Replace the registered commands (global, or of ``guild_id``) as a bulk overwrite does; keeps known ids.

        Tests may call it directly to start from commands synced in an earlier run.
        """
        previous = {(c["name"], c["type"]): c for c in self.commands.get(guild_id, [])}
        stored = []
        for command in commands:
            kind = command.get("type", 1)
            known = previous.get((command["name"], kind))
            entry = {"type": kind, "default_member_permissions": None, "nsfw": False, "options": [], **command}
            entry.update(
                id=known["id"] if known else str(self.world.snowflake()),
                application_id=str(self.world.application_id),
                version=str(self.world.snowflake()),
            )
            if guild_id is not None:
                entry["guild_id"] = str(guild_id)
            stored.append(entry)
        self.commands[guild_id] = stored
        return stored

    def registered_commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        return self.commands.get(guild_id, [])

    def _find_command(self, name: str, guild_id: int | None = None) -> dict[str, Any] | None:
        for scope in (guild_id or self.world.guild_id, None):
            for command in self.commands.get(scope, []):
                if command["name"] == name and command["type"] == 1:
                    return command
        return None

    # Driving the bot through the gateway.

    async def dispatch_interaction(
        self,
        command_name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
        guild_id: int | None = None,
        attachments: Mapping[str, dict[str, Any]] | None = None,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """Send INTERACTION_CREATE for a slash command, as if ``user_id`` ran ``/command_name`` in ``channel_id`` (by
        default the first channel of ``guild_id``, else of the first guild). A subcommand is named after its command,
        as Discord's client shows it: ``"library add"``.

        ``options`` maps option names to values: str, int, float, bool, a user object (``world.user(id)``) or an
        attachment object from ``add_attachment`` (``attachments`` is the same mapping, for attachment options only).
        When the command is registered (synced), option types come from it and unknown or missing required options
        raise ``ValueError``, as Discord's client would not send them.
        """
        world = self.world
        if guild_id not in (None, *world.guild_ids):
            raise ValueError(f"unknown guild {guild_id}")
        if channel_id is None and guild_id is not None:
            channel_id = next(c for c, data in world.channels.items() if int(data["guild_id"]) == guild_id)
        channel_id = channel_id or world.channel_id
        if channel_id not in world.channels:
            raise ValueError(f"unknown channel {channel_id}")
        values = {**(options or {}), **(attachments or {})}
        name, *path = command_name.split()
        command = self._find_command(name, world.guild_of(channel_id)) or {"name": name}
        payload = events.interaction_create(
            world, command, values, user_id=user_id or world.user_id, channel_id=channel_id, locale=locale, path=path
        )
        return await self._dispatch(payload)

    async def autocomplete(
        self,
        command_name: str,
        options: Mapping[str, Any],
        *,
        focused: str,
        user_id: int | None = None,
        channel_id: int | None = None,
    ) -> InteractionHandle:
        """Send an autocomplete interaction (type 4), as Discord does while the user types option ``focused`` (its
        text is ``options[focused]``) of ``command_name`` (``"library remove"`` for a subcommand's); the bot's
        answer is ``handle.choices``."""
        channel_id = channel_id or self.world.channel_id
        name, *path = command_name.split()
        command = self._find_command(name, self.world.guild_of(channel_id)) or {"name": name}
        payload = events.interaction_create(
            self.world, command, options, user_id=user_id or self.world.user_id, channel_id=channel_id,
            locale="en-US", focused=focused, path=path,
        )  # fmt: skip
        return await self._dispatch(payload)

    async def click(
        self,
        message: StoredMessage,
        *,
        label: str | None = None,
        custom_id: str | None = None,
        user_id: int | None = None,
    ) -> InteractionHandle:
        """Click a button of ``message`` (by its label or custom id), as ``user_id``: a component interaction
        (type 3) carrying the message as Discord stores it. A button the message does not have cannot be clicked."""
        found = [b for b in events.buttons(message.data) if label in (None, b.get("label")) and
                 custom_id in (None, b.get("custom_id"))]  # fmt: skip
        if not found or message.deleted or found[0].get("disabled"):
            raise ValueError(f"{message} has no button {label or custom_id!r} to click")
        payload = events.component_interaction(
            self.world, message.data, found[0]["custom_id"], user_id=user_id or self.world.user_id, locale="en-US"
        )
        return await self._dispatch(payload)

    async def _dispatch(self, payload: dict[str, Any]) -> InteractionHandle:
        handle = InteractionHandle(self, payload)
        self.interactions[handle.id] = handle
        self.interactions_by_token[handle.token] = handle
        await self.gateway.dispatch("INTERACTION_CREATE", payload)
        return handle

    async def post_message(
        self,
        content: str = "",
        *,
        attachments: Iterable[dict[str, Any]] = (),
        channel_id: int | None = None,
        author: int | dict[str, Any] | None = None,
    ) -> MessageHandle:
        """Send MESSAGE_CREATE as if ``author`` (a user id or object; default the test user) posted in ``channel_id``.

        Without the MESSAGE_CONTENT intent the bot receives the message with content, attachments and embeds blanked,
        unless it mentions the bot, as Discord does.
        """
        world = self.world
        channel_id = channel_id or world.channel_id
        if channel_id not in world.channels:
            raise ValueError(f"unknown channel {channel_id}")
        if isinstance(author, dict):
            world.users[int(author["id"])] = author
        user = author if isinstance(author, dict) else world.user(author or world.user_id)
        data = events.message_create(world, content, attachments=list(attachments), channel_id=channel_id, user=user)
        message = StoredMessage(data)
        self.messages[message.id] = message
        event = {**data, "member": world.member(int(user["id"]), with_user=False)}
        session = self.gateway.current
        mentions_bot = any(int(m["id"]) == world.application_id for m in data["mentions"])
        if session is not None and not session.intents & INTENT_MESSAGE_CONTENT and not mentions_bot:
            event.update(content="", attachments=[], embeds=[], components=[])
        await self.gateway.dispatch("MESSAGE_CREATE", event)
        return MessageHandle(self, message)

    async def request_reconnect(self) -> None:
        """Send opcode 7 RECONNECT; discord.py closes the socket and RESUMEs on ``resume_gateway_url``."""
        await self.gateway.send_op(RECONNECT)

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send opcode 9 INVALID_SESSION; discord.py then identifies afresh (or resumes when ``resumable``)."""
        await self.gateway.send_op(INVALID_SESSION, resumable)

    async def disconnect(self, code: int = 4000) -> None:
        """Close the current gateway connection with ``code`` (4000 is resumable) as a network hiccup would."""
        session = self.gateway.current
        if session is None or session.connection is None:
            raise RuntimeError("no connected gateway session")
        await session.connection.close(code, "Stand-in disconnect.")


def run(main: Callable[[StandIn], Awaitable[T]], *, timeout: float = 20.0, **options: Any) -> T:
    """Run ``await main(standin)`` in a fresh event loop against a started stand-in, bounded by ``timeout``."""

    async def scenario() -> T:
        async with StandIn(**options) as standin, asyncio.timeout(timeout):
            return await main(standin)

    return asyncio.run(scenario())
