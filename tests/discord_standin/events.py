"""Gateway events the tests trigger, built like Discord's: INTERACTION_CREATE for slash commands, MESSAGE_CREATE."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from .objects import (
    APPLICATION_COMMAND,
    APPLICATION_COMMAND_AUTOCOMPLETE,
    COMPONENT_BUTTON,
    MESSAGE_COMPONENT,
    MESSAGE_DEFAULT,
    OPTION_ATTACHMENT,
    OPTION_BOOLEAN,
    OPTION_INTEGER,
    OPTION_NUMBER,
    OPTION_STRING,
    OPTION_USER,
    World,
    timestamp,
)

MENTION = re.compile(r"<@!?(\d+)>")
SUBCOMMAND_TYPES = (1, 2)


def option_type(value: Any) -> int:
    if isinstance(value, bool):
        return OPTION_BOOLEAN
    if isinstance(value, int):
        return OPTION_INTEGER
    if isinstance(value, float):
        return OPTION_NUMBER
    if isinstance(value, str):
        return OPTION_STRING
    if isinstance(value, dict) and {"filename", "url"} <= value.keys():
        return OPTION_ATTACHMENT
    if isinstance(value, dict) and "username" in value:
        return OPTION_USER
    raise TypeError(f"cannot tell the option type of {value!r}; pass an attachment or user object or a scalar")


def command_options(
    world: World,
    command: dict[str, Any],
    values: Mapping[str, Any],
    *,
    focused: str | None = None,
    path: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Interaction ``data.options`` and ``data.resolved`` for ``values``, typed by the registered ``command`` (text
    longer than an option's ``max_length`` is refused: Discord's client does not send it).

    ``focused``: the option an autocomplete interaction is for (what the user is typing, always a string; required
    options may still be missing). ``path``: the subcommand (or group and subcommand) run, ``("add",)`` for
    ``/library add``: ``values`` are its options, nested in it as Discord nests them."""
    if path:
        sub = next((o for o in command.get("options", []) if o["name"] == path[0]), None)
        if "options" in command and (sub is None or sub["type"] not in SUBCOMMAND_TYPES):
            raise ValueError(f"/{command['name']} has no subcommand {path[0]!r}")
        sub = sub or {"name": path[0], "type": SUBCOMMAND_TYPES[0] if len(path) == 1 else SUBCOMMAND_TYPES[1]}
        options, resolved = command_options(world, sub, values, focused=focused, path=path[1:])
        return [{"name": sub["name"], "type": sub["type"], "options": options}], resolved
    schema = {o["name"]: o for o in command["options"]} if "options" in command else None
    if schema is not None:
        if any(o["type"] in SUBCOMMAND_TYPES for o in schema.values()):
            raise ValueError(f'/{command["name"]} needs a subcommand: dispatch "{command["name"]} NAME"')
        if unknown := set(values) - set(schema):
            raise ValueError(f"/{command['name']} has no option(s) {sorted(unknown)}")
        if focused is not None and not schema.get(focused, {}).get("autocomplete"):
            raise ValueError(f"/{command['name']} option {focused!r} has no autocomplete")
        missing = [n for n, o in schema.items() if o.get("required") and n not in values]
        if missing and focused is None:
            raise ValueError(f"/{command['name']} needs option(s) {missing}")
    options: list[dict[str, Any]] = []
    resolved: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        kind = schema[name]["type"] if schema is not None else option_type(value)
        if name == focused:
            options.append({"name": name, "type": kind, "value": str(value), "focused": True})
            continue
        if kind == OPTION_ATTACHMENT:
            resolved.setdefault("attachments", {})[value["id"]] = value
            value = value["id"]
        elif kind == OPTION_USER:
            user = value if isinstance(value, dict) else world.user(int(value))
            resolved.setdefault("users", {})[user["id"]] = user
            member = world.member(int(user["id"]), with_user=False, with_permissions=True)
            resolved.setdefault("members", {})[user["id"]] = member
            value = user["id"]
        elif kind not in (OPTION_STRING, OPTION_INTEGER, OPTION_BOOLEAN, OPTION_NUMBER):
            raise NotImplementedError(f"option type {kind} is not modelled by the stand-in")
        elif option_type(value) != kind and not (kind == OPTION_NUMBER and option_type(value) == OPTION_INTEGER):
            raise ValueError(f"option {name!r} has type {kind}, got {value!r}")
        elif kind == OPTION_STRING and schema is not None and len(value) > schema[name].get("max_length", len(value)):
            raise ValueError(f"option {name!r} takes at most {schema[name]['max_length']} characters")
        options.append({"name": name, "type": kind, "value": value})
    return options, resolved


def interaction_create(
    world: World,
    command: dict[str, Any],
    values: Mapping[str, Any],
    *,
    user_id: int,
    channel_id: int,
    locale: str,
    focused: str | None = None,
    path: Sequence[str] = (),
) -> dict[str, Any]:
    """INTERACTION_CREATE for ``command`` (a registered command, or just ``{"name": ...}``): a slash command (type
    2), or with ``focused`` the autocomplete of that option (type 4); ``path`` names its subcommand."""
    data: dict[str, Any] = {"id": command.get("id") or str(world.snowflake()), "name": command["name"], "type": 1}
    options, resolved = command_options(world, command, values, focused=focused, path=path)
    if options:
        data["options"] = options
    if resolved:
        data["resolved"] = resolved
    if command.get("guild_id"):
        data["guild_id"] = command["guild_id"]
    kind = APPLICATION_COMMAND if focused is None else APPLICATION_COMMAND_AUTOCOMPLETE
    return _interaction(world, kind, data, user_id=user_id, channel_id=channel_id, locale=locale)


def component_interaction(
    world: World, message: dict[str, Any], custom_id: str, *, user_id: int, locale: str
) -> dict[str, Any]:
    """INTERACTION_CREATE (type 3) for a click on the button ``custom_id`` of ``message`` (its stored data)."""
    data = {"custom_id": custom_id, "component_type": COMPONENT_BUTTON}
    channel_id = int(message["channel_id"])
    payload = _interaction(world, MESSAGE_COMPONENT, data, user_id=user_id, channel_id=channel_id, locale=locale)
    payload["message"] = message
    return payload


def _interaction(
    world: World, kind: int, data: dict[str, Any], *, user_id: int, channel_id: int, locale: str
) -> dict[str, Any]:
    interaction_id = world.snowflake()
    return {
        "id": str(interaction_id),
        "application_id": str(world.application_id),
        "type": kind,
        "data": data,
        "guild_id": str(world.guild_of(channel_id)),
        "guild": {"id": str(world.guild_of(channel_id)), "locale": "en-US", "features": []},
        "channel_id": str(channel_id),
        "channel": world.channels[channel_id],
        "member": world.member(user_id, with_permissions=True),
        "token": f"aW50ZXJhY3Rpb246{interaction_id}:{secrets.token_urlsafe(48)}",
        "version": 1,
        "app_permissions": str(world.permissions_in(channel_id)),
        "locale": locale,
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(world.guild_of(channel_id))},
        "context": 0,
        "attachment_size_limit": world.upload_limit,
    }


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The buttons of a message, row by row."""
    return [c for row in message.get("components") or [] for c in row.get("components") or [] if c.get("type") == 2]


def message_create(
    world: World, content: str, *, attachments: list[dict[str, Any]], channel_id: int, user: dict[str, Any]
) -> dict[str, Any]:
    """A message a user posts; ``<@id>`` mentions in ``content`` are resolved like Discord does."""
    return {
        "id": str(world.snowflake()),
        "channel_id": str(channel_id),
        "guild_id": str(world.guild_of(channel_id)),
        "author": user,
        "content": content,
        "timestamp": timestamp(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [world.user(int(m)) for m in MENTION.findall(content)],
        "mention_roles": [],
        "attachments": attachments,
        "embeds": [],
        "components": [],
        "pinned": False,
        "type": MESSAGE_DEFAULT,
        "flags": 0,
    }
