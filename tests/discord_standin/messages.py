"""Messages the bot creates and edits, built as Discord stores them; uploads become attachments on the stand-in CDN."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .objects import FLAG_LOADING, FLAG_SUPPRESS_EMBEDS, MENTION_EVERYONE, MESSAGE_DEFAULT, timestamp
from .records import Call, InteractionHandle, StoredMessage

if TYPE_CHECKING:
    from .server import StandIn

EVERYONE = re.compile(r"@(?:everyone|here)")
USER_MENTION = re.compile(r"<@!?(\d{15,20})>")
ALL_MENTIONS = ("everyone", "users", "roles")  # what Discord parses when a message says no allowed_mentions


class Messages:
    def __init__(self, standin: StandIn) -> None:
        self.standin = standin
        self.world = standin.world

    async def create(
        self,
        channel_id: int,
        payload: dict[str, Any],
        call: Call,
        *,
        flags: int,
        kind: int = MESSAGE_DEFAULT,
        reference: dict[str, Any] | None = None,
        interaction: InteractionHandle | None = None,
    ) -> StoredMessage:
        world = self.world
        data: dict[str, Any] = {
            "id": str(world.snowflake()),
            "channel_id": str(channel_id),
            "guild_id": str(world.guild_of(channel_id)),
            "author": world.bot_user,
            "content": "",
            "timestamp": timestamp(),
            "edited_timestamp": None,
            "tts": bool(payload.get("tts")),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "type": kind,
            "flags": flags,
        }
        if reference:
            referenced = self.standin.messages[int(reference["message_id"])]
            data["message_reference"] = {"type": 0, "channel_id": str(channel_id), **reference}
            data["message_reference"].pop("fail_if_not_exists", None)
            data["referenced_message"] = referenced.data
            allowed = payload.get("allowed_mentions") or {}
            if allowed.get("replied_user", True):
                data["mentions"] = [referenced.data["author"]]
        self._mentions(data, payload, channel_id)
        if interaction is not None:
            data.update(webhook_id=str(world.application_id), application_id=str(world.application_id))
            user = interaction.payload["member"]["user"]
            data["interaction_metadata"] = {
                "id": str(interaction.id),
                "type": interaction.payload["type"],
                "user": user,
                "authorizing_integration_owners": interaction.payload["authorizing_integration_owners"],
            }
            if "name" in interaction.payload["data"]:
                data["interaction_metadata"]["name"] = interaction.payload["data"]["name"]
            if "message" in interaction.payload:  # a click: the message whose button it was
                data["interaction_metadata"]["interacted_message_id"] = interaction.payload["message"]["id"]
        message = StoredMessage(data)
        self.standin.messages[message.id] = message
        message = await self.edit(message, payload, call, initial=True)
        if not message.ephemeral:
            member = world.member(world.application_id, with_user=False)
            await self.standin.gateway.dispatch("MESSAGE_CREATE", {**message.data, "member": member})
        return message

    def _mentions(self, data: dict[str, Any], payload: dict[str, Any], channel_id: int) -> None:
        """Who a new message pings, as Discord decides: the mentions in its content that ``allowed_mentions`` lets
        through (everything, when it says nothing), "@everyone" and "@here" only with the MENTION_EVERYONE
        permission."""
        allowed = payload.get("allowed_mentions")
        parse = ALL_MENTIONS if allowed is None else tuple(allowed.get("parse") or ())
        content = payload.get("content") or ""
        may_ping_all = self.world.permissions_in(channel_id) & MENTION_EVERYONE
        data["mention_everyone"] = bool("everyone" in parse and may_ping_all and EVERYONE.search(content))
        listed = {str(u) for u in (allowed or {}).get("users") or ()}
        for user_id in USER_MENTION.findall(content):
            if ("users" in parse or user_id in listed) and int(user_id) in self.world.users:
                data["mentions"].append(self.world.user(int(user_id)))

    async def edit(
        self, message: StoredMessage, payload: dict[str, Any], call: Call, *, initial: bool = False
    ) -> StoredMessage:
        """Apply a create (``initial``) or edit payload. Replacing a deferral's loading message keeps its flags."""
        data = message.data
        for key in ("content", "embeds", "components"):
            if key in payload:
                data[key] = payload[key] if payload[key] is not None else ([] if key != "content" else "")
        if not initial:
            if message.loading:
                data["flags"] &= ~FLAG_LOADING
            else:
                data["edited_timestamp"] = timestamp()
                if payload.get("flags") is not None:
                    editable = FLAG_SUPPRESS_EMBEDS
                    data["flags"] = data["flags"] & ~editable | payload["flags"] & editable
        data["attachments"] = self._attachments(message, payload, call)
        message.files.extend(call.files)
        message.payloads.append(payload)
        return message

    def _attachments(self, message: StoredMessage, payload: dict[str, Any], call: Call) -> list[dict[str, Any]]:
        existing = {a["id"]: a for a in message.attachments}
        uploads = {f.field: f for f in call.files}
        specs = payload.get("attachments")
        if specs is None:
            specs = [*({"id": key} for key in existing), *({"id": i} for i in range(len(call.files)))]
        attachments = []
        for spec in specs:
            upload = uploads.get(f"files[{spec['id']}]")
            if upload is not None:
                filename = spec.get("filename") or upload.filename
                attachment = self.standin.add_attachment(filename, upload.data, channel_id=message.channel_id)
                if spec.get("description"):
                    attachment["description"] = spec["description"]
                attachments.append(attachment)
            elif str(spec["id"]) in existing:
                attachments.append(existing[str(spec["id"])])
        return attachments
