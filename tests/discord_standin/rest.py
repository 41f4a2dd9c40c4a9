"""REST API v10 routes of the stand-in, its CDN, and the middleware that records every request.

Handlers return ``(status, body)``; the middleware turns that into JSON (or 204), records the call, answers unknown
routes with 404 ``{"message": "Unknown", "code": 0}``, checks the bot token where Discord does and applies failures the
test injected with ``StandIn.fail_next``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from . import limits
from .messages import Messages
from .objects import (
    ADD_REACTIONS,
    ATTACH_FILES,
    CALLBACK_CHOICES,
    CALLBACK_UPDATE,
    CALLBACKS_ALLOWED,
    CREATE_PUBLIC_THREADS,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    MESSAGE_CHAT_INPUT_COMMAND,
    MESSAGE_DEFAULT,
    MESSAGE_REPLY,
    PUBLIC_THREAD,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    SETTABLE_FLAGS,
)
from .records import Call, InteractionHandle, StoredMessage, UploadedFile

if TYPE_CHECKING:
    from .server import StandIn

log = logging.getLogger(__name__)

API = "/api/v10"
Reply = tuple[int, Any]
Handler = Callable[[web.Request, Call], Awaitable[Reply | web.StreamResponse]]

UNKNOWN_ROUTE = {"message": "Unknown", "code": 0}
UNAUTHORIZED = {"message": "401: Unauthorized", "code": 0}
UNKNOWN_CHANNEL = {"message": "Unknown Channel", "code": 10003}
UNKNOWN_MESSAGE = {"message": "Unknown Message", "code": 10008}
UNKNOWN_WEBHOOK = {"message": "Unknown Webhook", "code": 10015}
UNKNOWN_INTERACTION = {"message": "Unknown interaction", "code": 10062}
INVALID_CALLBACK = {"message": "Interaction callback type is not valid for this interaction", "code": 50035}
ALREADY_ACKNOWLEDGED = {"message": "Interaction has already been acknowledged.", "code": 40060}
INVALID_WEBHOOK_TOKEN = {"message": "Invalid Webhook Token", "code": 50027}
MISSING_PERMISSIONS = {"message": "Missing Permissions", "code": 50013}
TOO_LARGE = {"message": "Request entity too large", "code": 40005}
THREAD_EXISTS = {"message": "A thread has already been created for this message", "code": 160004}
# Routes Discord serves without the bot token: interaction callbacks and webhooks carry their own token.
UNAUTHENTICATED = {"interaction_callback", "webhook", "webhook_message", "cdn"}


CALL = web.RequestKey("call", Call)


def _json_response(body: Any, status: int, headers: dict[str, str]) -> web.Response:
    # Exactly "application/json", without a charset: discord.py only parses JSON for that exact content type.
    data = json.dumps(body, separators=(",", ":")).encode()
    return web.Response(body=data, status=status, headers={**headers, "Content-Type": "application/json"})


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


class Rest:
    def __init__(self, standin: StandIn) -> None:
        self.standin = standin
        self.world = standin.world
        self.messages = Messages(standin)

    def add_routes(self, app: web.Application) -> None:
        table: list[tuple[str, str, dict[str, Handler]]] = [
            ("me", f"{API}/users/@me", {"GET": self.get_me}),
            ("application", f"{API}/oauth2/applications/@me", {"GET": self.get_application}),
            ("gateway", f"{API}/gateway", {"GET": self.get_gateway}),
            ("gateway_bot", f"{API}/gateway/bot", {"GET": self.get_gateway}),
            ("commands", rf"{API}/applications/{{app:\d+}}/commands", {"GET": self.commands, "PUT": self.commands}),
            (
                "guild_commands",
                rf"{API}/applications/{{app:\d+}}/guilds/{{guild:\d+}}/commands",
                {"GET": self.commands, "PUT": self.commands},
            ),
            ("interaction_callback", rf"{API}/interactions/{{id:\d+}}/{{token}}/callback", {"POST": self.callback}),
            ("webhook", rf"{API}/webhooks/{{app:\d+}}/{{token}}", {"POST": self.followup}),
            (
                "webhook_message",
                rf"{API}/webhooks/{{app:\d+}}/{{token}}/messages/{{message:\d+|@original}}",
                {"GET": self.webhook_message, "PATCH": self.webhook_message, "DELETE": self.webhook_message},
            ),
            ("channel", rf"{API}/channels/{{channel:\d+}}", {"GET": self.get_channel}),
            ("typing", rf"{API}/channels/{{channel:\d+}}/typing", {"POST": self.typing}),
            ("messages", rf"{API}/channels/{{channel:\d+}}/messages", {"POST": self.create_message}),
            (
                "message",
                rf"{API}/channels/{{channel:\d+}}/messages/{{message:\d+}}",
                {"GET": self.message, "PATCH": self.message, "DELETE": self.message},
            ),
            (
                "thread",
                rf"{API}/channels/{{channel:\d+}}/messages/{{message:\d+}}/threads",
                {"POST": self.create_thread},
            ),
            (
                "reaction",
                rf"{API}/channels/{{channel:\d+}}/messages/{{message:\d+}}/reactions/{{emoji}}/@me",
                {"PUT": self.reaction, "DELETE": self.reaction},
            ),
            ("cdn", r"/attachments/{channel:\d+}/{attachment:\d+}/{filename}", {"GET": self.cdn}),
        ]
        for name, path, methods in table:
            resource = app.router.add_resource(path, name=name)
            for method, handler in methods.items():
                resource.add_route(method, self._wrap(handler))

    @staticmethod
    def _wrap(handler: Handler) -> Callable[[web.Request], Awaitable[Any]]:
        async def route(request: web.Request) -> Any:
            return await handler(request, request[CALL])

        return route

    # Recording middleware.

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        if request.path.startswith("/gateway-ws"):
            return await handler(request)
        call = await self._read(request)
        request[CALL] = call
        match = request.match_info
        call.route = match.route.resource.name if match.http_exception is None and match.route.resource else None
        headers: dict[str, str] = {}
        if call.route is None:
            result: Any = (404, UNKNOWN_ROUTE)
        elif call.route not in UNAUTHENTICATED and request.headers.get("Authorization") != f"Bot {self.standin.token}":
            result = (401, UNAUTHORIZED)
        elif injected := self.standin._take_injected(call):
            result, headers = injected
        else:
            try:
                result = await handler(request)
            except Exception as error:  # a stand-in bug: fail the request at once instead of letting discord.py retry
                log.exception("stand-in failed on %s %s", request.method, request.path)
                self.standin.errors.append(error)
                result = (400, {"message": f"stand-in failure: {error!r}", "code": 0})
        if isinstance(result, web.StreamResponse):
            call.status = result.status
            response = result
        else:
            call.status, call.response = result
            if call.response is None:
                response = web.Response(status=call.status, headers=headers)
            else:
                response = _json_response(call.response, call.status, headers)
        await self.standin._record(call)
        return response

    async def _read(self, request: web.Request) -> Call:
        body: Any = None
        files: list[UploadedFile] = []
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):  # Discord's uploads are flat: no nested multiparts
                    continue
                if part.name == "payload_json":
                    body = json.loads(await part.text())
                else:
                    content_type = part.headers.get("Content-Type", "application/octet-stream")
                    data = bytes(await part.read(decode=False))
                    files.append(UploadedFile(part.name or "", part.filename or "", content_type, data))
        elif request.can_read_body:
            text = await request.text()
            body = json.loads(text) if text and request.content_type == "application/json" else text or None
        return Call(request.method, request.path, dict(request.query), body, files)

    # Login and gateway discovery.

    async def get_me(self, request: web.Request, call: Call) -> Reply:
        return 200, self.world.bot_user

    async def get_application(self, request: web.Request, call: Call) -> Reply:
        return 200, self.world.application()

    async def get_gateway(self, request: web.Request, call: Call) -> Reply:
        body: dict[str, Any] = {"url": self.standin.gateway_url}
        if call.route == "gateway_bot":
            limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
            body.update(shards=1, session_start_limit=limit)
        return 200, body

    # Application commands.

    async def commands(self, request: web.Request, call: Call) -> Reply:
        if int(request.match_info["app"]) != self.world.application_id:
            return 403, {"message": "Missing Access", "code": 50001}
        guild = request.match_info.get("guild")
        guild_id = int(guild) if guild else None
        if request.method == "GET":
            return 200, self.standin.registered_commands(guild_id)
        if error := limits.commands_error(call.json):
            return 400, error
        return 200, self.standin.register_commands(call.json, guild_id=guild_id)

    # Interactions.

    async def callback(self, request: web.Request, call: Call) -> Reply:
        handle = self.standin.interactions.get(int(request.match_info["id"]))
        if handle is None or handle.token != request.match_info["token"]:
            return 404, UNKNOWN_INTERACTION
        if handle.acknowledged:
            handle.callbacks.append(call)
            return 400, ALREADY_ACKNOWLEDGED
        handle.callbacks.append(call)
        if time.monotonic() - handle.dispatched_at > self.standin.ack_deadline:
            return 404, UNKNOWN_INTERACTION
        body = call.json or {}
        kind, data = body.get("type"), body.get("data") or {}
        if kind not in CALLBACKS_ALLOWED.get(handle.payload["type"], ()):
            return 400, INVALID_CALLBACK
        if kind == CALLBACK_CHOICES and (error := limits.choices_error(data)):
            return 400, error
        if kind == CALLBACK_UPDATE:  # a click answered by editing the message clicked
            if error := limits.message_error(data, file_count=len(call.files), creating=False):
                return 400, error
            await self.messages.edit(self.standin.messages[int(handle.payload["message"]["id"])], data, call)
        if kind in (4, 5):
            if kind == 4 and (error := limits.message_error(data, file_count=len(call.files), creating=True)):
                return 400, error
            if self._too_large(call):
                return 413, TOO_LARGE
            flags = (data.get("flags") or 0) & SETTABLE_FLAGS
            if kind == 5:
                data, flags = {}, (flags & FLAG_EPHEMERAL) | FLAG_LOADING
            handle.original = await self.messages.create(
                handle_channel(handle), data, call, flags=flags, kind=MESSAGE_CHAT_INPUT_COMMAND, interaction=handle
            )
        if not _truthy(call.query.get("with_response")):
            return 204, None
        summary: dict[str, Any] = {"id": str(handle.id), "type": handle.payload["type"]}
        response: dict[str, Any] = {"interaction": summary}
        if handle.original is not None and kind in (4, 5):
            summary.update(
                response_message_id=str(handle.original.id),
                response_message_loading=handle.original.loading,
                response_message_ephemeral=handle.original.ephemeral,
            )
            response["resource"] = {"type": kind, "message": handle.original.data}
        return 200, response

    def _handle_for_webhook(self, request: web.Request) -> InteractionHandle | Reply:
        if int(request.match_info["app"]) != self.world.application_id:
            return 404, UNKNOWN_WEBHOOK
        handle = self.standin.interactions_by_token.get(request.match_info["token"])
        if handle is None or time.monotonic() - handle.dispatched_at > self.standin.token_ttl:
            return 401, INVALID_WEBHOOK_TOKEN
        if not handle.acknowledged:
            return 404, UNKNOWN_WEBHOOK
        return handle

    async def followup(self, request: web.Request, call: Call) -> Reply:
        handle = self._handle_for_webhook(request)
        if not isinstance(handle, InteractionHandle):
            return handle
        handle.followups.append(call)
        payload = call.json or {}
        if error := limits.message_error(payload, file_count=len(call.files), creating=True):
            return 400, error
        if self._too_large(call):
            return 413, TOO_LARGE
        original = handle.original
        if original is not None and original.loading and not original.deleted:
            # The first follow-up after a deferral replaces the "is thinking..." message and keeps the deferral's
            # visibility: its own ephemeral flag is ignored (discord/discord-api-docs#2860). Once that message is
            # deleted, a follow-up is a new message with its own flags.
            message = await self.messages.edit(original, payload, call)
        else:
            flags = (payload.get("flags") or 0) & SETTABLE_FLAGS
            message = await self.messages.create(handle_channel(handle), payload, call, flags=flags, interaction=handle)
        handle.followup_messages.append(message)
        return (200, message.data) if _truthy(call.query.get("wait")) else (204, None)

    async def webhook_message(self, request: web.Request, call: Call) -> Reply:
        handle = self._handle_for_webhook(request)
        if not isinstance(handle, InteractionHandle):
            return handle
        wanted = request.match_info["message"]
        if wanted == "@original":
            message = handle.original
        else:
            message = next((m for m in handle.followup_messages if str(m.id) == wanted), None)
        if message is None or message.deleted:
            return 404, UNKNOWN_MESSAGE
        if request.method == "GET":
            return 200, message.data
        if request.method == "DELETE":
            message.deleted = True
            return 204, None
        handle.edits.append(call)
        if error := limits.message_error(call.json, file_count=len(call.files), creating=False):
            return 400, error
        if self._too_large(call):
            return 413, TOO_LARGE
        return 200, (await self.messages.edit(message, call.json or {}, call)).data

    # Channels and messages.

    async def get_channel(self, request: web.Request, call: Call) -> Reply:
        channel = self.world.channels.get(int(request.match_info["channel"]))
        return (200, channel) if channel else (404, UNKNOWN_CHANNEL)

    async def typing(self, request: web.Request, call: Call) -> Reply:
        return (204, None) if int(request.match_info["channel"]) in self.world.channels else (404, UNKNOWN_CHANNEL)

    async def create_message(self, request: web.Request, call: Call) -> Reply:
        channel_id = int(request.match_info["channel"])
        channel = self.world.channels.get(channel_id)
        if channel is None:
            return 404, UNKNOWN_CHANNEL
        send = SEND_MESSAGES_IN_THREADS if channel["type"] == PUBLIC_THREAD else SEND_MESSAGES
        needed = send | (ATTACH_FILES if call.files else 0)
        if self.world.permissions_in(channel_id) & needed != needed:
            return 403, MISSING_PERMISSIONS
        payload = call.json or {}
        if error := limits.message_error(payload, file_count=len(call.files), creating=True):
            return 400, error
        if self._too_large(call):
            return 413, TOO_LARGE
        reference = payload.get("message_reference")
        if reference and int(reference.get("message_id", 0)) not in self.standin.messages:
            if reference.get("fail_if_not_exists", True):
                unknown = {"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}
                return 400, limits.invalid_form_body({"message_reference": {"_errors": [unknown]}})
            reference = None
        flags = (payload.get("flags") or 0) & SETTABLE_FLAGS & ~FLAG_EPHEMERAL
        kind = MESSAGE_REPLY if reference else MESSAGE_DEFAULT
        message = await self.messages.create(channel_id, payload, call, flags=flags, kind=kind, reference=reference)
        return 200, message.data

    def _channel_message(self, request: web.Request) -> StoredMessage | Reply:
        channel_id = int(request.match_info["channel"])
        if channel_id not in self.world.channels:
            return 404, UNKNOWN_CHANNEL
        message = self.standin.messages.get(int(request.match_info["message"]))
        if message is None or message.deleted or message.channel_id != channel_id:
            return 404, UNKNOWN_MESSAGE
        return message

    async def message(self, request: web.Request, call: Call) -> Reply:
        message = self._channel_message(request)
        if not isinstance(message, StoredMessage):
            return message
        if request.method == "GET":
            return 200, message.data
        if message.author_id != self.world.application_id:
            return 403, {"message": "Cannot edit a message authored by another user", "code": 50005}
        if request.method == "DELETE":
            message.deleted = True
            return 204, None
        if error := limits.message_error(call.json, file_count=len(call.files), creating=False):
            return 400, error
        if self._too_large(call):
            return 413, TOO_LARGE
        return 200, (await self.messages.edit(message, call.json or {}, call)).data

    async def create_thread(self, request: web.Request, call: Call) -> Reply:
        message = self._channel_message(request)
        if not isinstance(message, StoredMessage):
            return message
        if not self.world.permissions_in(message.channel_id) & CREATE_PUBLIC_THREADS:
            return 403, MISSING_PERMISSIONS
        if message.id in self.world.channels:
            return 400, THREAD_EXISTS
        payload = call.json or {}
        if not payload.get("name"):
            required = {"code": "BASE_TYPE_REQUIRED", "message": "This field is required"}
            return 400, limits.invalid_form_body({"name": {"_errors": [required]}})
        # A thread started from a message takes the message's id.
        thread = self.world.thread_channel(
            message.id, message.channel_id, payload["name"], payload.get("auto_archive_duration", 1440)
        )
        self.world.channels[message.id] = thread
        message.data["thread"] = thread
        await self.standin.gateway.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return 201, thread

    async def reaction(self, request: web.Request, call: Call) -> Reply:
        message = self._channel_message(request)
        if not isinstance(message, StoredMessage):
            return message
        if not self.world.permissions_in(message.channel_id) & ADD_REACTIONS:
            return 403, MISSING_PERMISSIONS
        emoji = request.match_info["emoji"]
        name, _, emoji_id = emoji.partition(":")
        reactions = [r for r in message.data.get("reactions", []) if r["emoji"]["name"] != name]
        if request.method == "PUT":
            entry = {"emoji": {"id": emoji_id or None, "name": name}, "count": 1, "me": True, "burst_colors": []}
            reactions.append({**entry, "count_details": {"burst": 0, "normal": 1}, "me_burst": False})
        message.data["reactions"] = reactions
        return 204, None

    # CDN.

    async def cdn(self, request: web.Request, call: Call) -> web.StreamResponse:
        stored = self.standin.cdn_files.get(request.path)
        if stored is None:
            return web.Response(status=404, text="Not Found")
        data, content_type = stored
        return web.Response(body=data, content_type=content_type)

    # Message building.

    def _too_large(self, call: Call) -> bool:
        return sum(len(f.data) for f in call.files) > self.world.upload_limit


def handle_channel(handle: InteractionHandle) -> int:
    return int(handle.payload["channel_id"])
