"""Discord API v10 objects as the stand-in serves them: only the fields discord.py 2.x reads, with Discord's shapes."""

from __future__ import annotations

import datetime
import functools
import itertools
import mimetypes
import operator
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits (https://discord.com/developers/docs/topics/permissions).
MANAGE_GUILD = 1 << 5  # "Manage Server"
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17  # not a member's by default: a server grants it to trusted roles (or bots)
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
MEMBER_PERMISSIONS = (
    ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | SEND_MESSAGES_IN_THREADS
)

# Gateway intents; the privileged ones must be enabled for the application or IDENTIFY is closed with 4014.
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Message flags.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
SETTABLE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_EPHEMERAL | FLAG_SUPPRESS_NOTIFICATIONS

# Channel, message and interaction types.
GUILD_TEXT = 0
PUBLIC_THREAD = 11
MESSAGE_DEFAULT = 0
MESSAGE_REPLY = 19
MESSAGE_CHAT_INPUT_COMMAND = 20
# Interaction types, and the callback types each accepts.
APPLICATION_COMMAND, MESSAGE_COMPONENT, APPLICATION_COMMAND_AUTOCOMPLETE = 2, 3, 4
CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE, CALLBACK_DEFERRED_UPDATE, CALLBACK_UPDATE = 4, 5, 6, 7
CALLBACK_CHOICES, CALLBACK_MODAL = 8, 9
CALLBACKS_ALLOWED = {
    APPLICATION_COMMAND: {CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE, CALLBACK_MODAL},
    MESSAGE_COMPONENT: {
        CALLBACK_MESSAGE,
        CALLBACK_DEFERRED_MESSAGE,
        CALLBACK_DEFERRED_UPDATE,
        CALLBACK_UPDATE,
        CALLBACK_MODAL,
    },
    APPLICATION_COMMAND_AUTOCOMPLETE: {CALLBACK_CHOICES},
}
COMPONENT_BUTTON = 2

# Application command option types.
OPTION_STRING, OPTION_INTEGER, OPTION_BOOLEAN, OPTION_USER, OPTION_NUMBER, OPTION_ATTACHMENT = 3, 4, 5, 6, 10, 11

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


def timestamp(when: float | None = None) -> str:
    """ISO 8601 timestamp as Discord writes them."""
    moment = datetime.datetime.fromtimestamp(time.time() if when is None else when, tz=datetime.UTC)
    return moment.isoformat()


class Snowflakes:
    """Increasing, unique Discord snowflakes whose embedded time is now, so ``created_at`` looks right."""

    def __init__(self) -> None:
        self._increment = itertools.count()

    def __call__(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._increment) & 0x3FFFFF)


def guess_content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


@dataclass
class World:
    """Ids and names of everything the stand-in pretends exists: one application, a guild (more with ``add_guild``),
    their text channels, users, and the roles given to them."""

    snowflake: Snowflakes
    application_id: int
    guild_id: int
    channel_id: int
    user_id: int
    bot_name: str = "musrec"
    bot_permissions: int = MEMBER_PERMISSIONS
    member_permissions: int = MEMBER_PERMISSIONS
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    bot_role_id: int = 0
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    channels: dict[int, dict[str, Any]] = field(default_factory=dict)
    other_guilds: list[int] = field(default_factory=list)  # guilds beyond the first (add_guild)
    roles: dict[int, dict[str, Any]] = field(default_factory=dict)  # roles beyond @everyone and the bot's (add_role)
    member_roles: dict[int, list[int]] = field(default_factory=dict)  # by user: the roles given (give_role)
    permissions_of: dict[int, int] = field(default_factory=dict)  # by user: base permissions other than members'

    @classmethod
    def create(cls, **kwargs: Any) -> World:
        snowflake = Snowflakes()
        world = cls(
            snowflake=snowflake,
            application_id=kwargs.pop("application_id", None) or snowflake(),
            guild_id=kwargs.pop("guild_id", None) or snowflake(),
            channel_id=kwargs.pop("channel_id", None) or snowflake(),
            user_id=kwargs.pop("user_id", None) or snowflake(),
            **kwargs,
        )
        world.bot_role_id = snowflake()
        world.users[world.application_id] = world.user_payload(world.application_id, world.bot_name, bot=True)
        world.add_user(world.user_id, "tester")
        world.channels[world.channel_id] = world.text_channel(world.channel_id, "music")
        return world

    # Users and members.

    def user_payload(self, user_id: int, username: str, *, bot: bool = False) -> dict[str, Any]:
        return {
            "id": str(user_id),
            "username": username,
            "discriminator": "0",
            "global_name": None if bot else username.title(),
            "avatar": None,
            "bot": bot,
            "system": False,
            "public_flags": 0,
            "flags": 0,
        }

    def add_user(self, user_id: int, username: str | None = None) -> dict[str, Any]:
        self.users[user_id] = self.user_payload(user_id, username or f"user{user_id % 10_000}")
        return self.users[user_id]

    def user(self, user_id: int) -> dict[str, Any]:
        return self.users.get(user_id) or self.add_user(user_id)

    @property
    def bot_user(self) -> dict[str, Any]:
        return self.users[self.application_id]

    def member(self, user_id: int, *, with_user: bool = True, with_permissions: bool = False) -> dict[str, Any]:
        is_bot = user_id == self.application_id
        member: dict[str, Any] = {
            "nick": None,
            "avatar": None,
            "roles": [str(self.bot_role_id)] if is_bot else [],
            "joined_at": timestamp(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
        }
        if with_user:
            member["user"] = self.user(user_id)
        member["roles"] += [str(r) for r in self.member_roles.get(user_id, [])]
        if with_permissions:
            granted = [int(self.roles[r]["permissions"]) for r in self.member_roles.get(user_id, [])]
            base = self.bot_permissions if is_bot else self.permissions_of.get(user_id, self.member_permissions)
            member["permissions"] = str(functools.reduce(operator.or_, granted, base))
        return member

    def add_role(self, name: str, *, permissions: int = 0, guild_id: int | None = None) -> int:
        """A role of ``guild_id`` (default: the first guild), as a server admin makes one; its id."""
        role_id = self.snowflake()
        self.roles[role_id] = {**self.role(role_id, name, permissions, 2 + len(self.roles)),
                               "guild_id": str(guild_id or self.guild_id)}  # fmt: skip
        return role_id

    def give_role(self, user_id: int, role_id: int) -> None:
        self.member_roles.setdefault(user_id, []).append(role_id)

    # Guild and channels.

    @property
    def guild_ids(self) -> list[int]:
        return [self.guild_id, *self.other_guilds]

    def add_guild(self) -> tuple[int, int]:
        """Another guild the bot is in, with a text channel of its own: (guild id, channel id)."""
        guild_id, channel_id = self.snowflake(), self.snowflake()
        self.other_guilds.append(guild_id)
        self.channels[channel_id] = self.text_channel(channel_id, "music", guild_id=guild_id)
        return guild_id, channel_id

    def guild_of(self, channel_id: int) -> int:
        return int(self.channels[channel_id]["guild_id"])

    def text_channel(self, channel_id: int, name: str, *, guild_id: int | None = None) -> dict[str, Any]:
        return {
            "id": str(channel_id),
            "type": GUILD_TEXT,
            "guild_id": str(guild_id or self.guild_id),
            "name": name,
            "position": len(self.channels),
            "permission_overwrites": [],
            "topic": None,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }

    def thread_channel(self, thread_id: int, parent_id: int, name: str, auto_archive_duration: int) -> dict[str, Any]:
        return {
            "id": str(thread_id),
            "type": PUBLIC_THREAD,
            "guild_id": str(self.guild_id),
            "parent_id": str(parent_id),
            "owner_id": str(self.application_id),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": auto_archive_duration,
                "archive_timestamp": timestamp(),
                "locked": False,
                "create_timestamp": timestamp(),
            },
        }

    def role(self, role_id: int, name: str, permissions: int, position: int) -> dict[str, Any]:
        return {
            "id": str(role_id),
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": position,
            "permissions": str(permissions),
            "managed": role_id == self.bot_role_id,
            "mentionable": False,
            "flags": 0,
        }

    def guild_create(self, guild_id: int | None = None) -> dict[str, Any]:
        """The GUILD_CREATE payload of ``guild_id`` (default: the first guild): the guild with its roles, members and
        channels (threads are sent separately)."""
        guild_id = guild_id or self.guild_id
        text_channels = [c for c in self.channels.values() if c["type"] == GUILD_TEXT and
                         int(c["guild_id"]) == guild_id]  # fmt: skip
        members = [self.member(self.application_id), self.member(self.user_id)]
        return {
            "id": str(guild_id),
            "name": "musrec test guild" if guild_id == self.guild_id else f"musrec test guild {guild_id}",
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.user_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [
                # @everyone applies to the bot too; keeping it within bot_permissions keeps discord.py's view and the
                # stand-in's enforcement (permissions_in) identical.
                self.role(guild_id, "@everyone", self.member_permissions & self.bot_permissions, 0),
                self.role(self.bot_role_id, self.bot_name, self.bot_permissions, 1),
                *(r for r in self.roles.values() if int(r["guild_id"]) == guild_id),
            ],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": timestamp(),
            "large": False,
            "unavailable": False,
            "member_count": len(members),
            "voice_states": [],
            "members": members,
            "channels": text_channels,
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def permissions_in(self, channel_id: int) -> int:
        """The bot's permissions in a channel; the stand-in has no overwrites, so its roles decide."""
        return self.bot_permissions if channel_id in self.channels else 0

    # Application.

    def application(self) -> dict[str, Any]:
        """GET /oauth2/applications/@me."""
        return {
            "id": str(self.application_id),
            "name": self.bot_name,
            "icon": None,
            "description": "",
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "bot": self.bot_user,
            "owner": self.user(self.user_id),
            "team": None,
            "verify_key": "0" * 64,
            "flags": 0,
            "tags": [],
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "integration_types_config": {"0": {}},
        }

    # Attachments.

    def attachment(
        self, attachment_id: int, filename: str, size: int, content_type: str, url: str, proxy_url: str
    ) -> dict[str, Any]:
        return {
            "id": str(attachment_id),
            "filename": filename,
            "size": size,
            "url": url,
            "proxy_url": proxy_url,
            "content_type": content_type,
            "flags": 0,
        }


def attachment_path(channel_id: int, attachment_id: int, filename: str) -> str:
    """Path of an attachment on the CDN, ``/attachments/{channel}/{attachment}/{filename}`` as on cdn.discordapp.com."""
    return f"/attachments/{channel_id}/{attachment_id}/{quote(filename)}"


def signed_query(now: float) -> str:
    """The expiry signature Discord appends to attachment URLs since 2024; bots must keep it when downloading."""
    issued = int(now)
    return f"?ex={issued + 86_400:x}&is={issued:x}&hm={'0' * 64}&"
