"""Discord's message and command limits, answered with Discord's error bodies (400 Invalid Form Body, 50035)."""

from __future__ import annotations

import re
from typing import Any

CONTENT_MAX = 2000
EMBEDS_MAX = 10
EMBED_TOTAL_MAX = 6000
EMBED_TEXT_MAX = {"title": 256, "description": 4096}
EMBED_FIELDS_MAX = 25
FIELD_NAME_MAX, FIELD_VALUE_MAX = 256, 1024
FOOTER_TEXT_MAX, AUTHOR_NAME_MAX = 2048, 256
COMMANDS_MAX, COMMAND_OPTIONS_MAX = 100, 25
DESCRIPTION_MAX = 100
ACTION_ROWS_MAX, ROW_COMPONENTS_MAX = 5, 5
CUSTOM_ID_MAX, BUTTON_LABEL_MAX = 100, 80
CHOICES_MAX, CHOICE_NAME_MAX, CHOICE_VALUE_MAX = 25, 100, 100
COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")

Errors = dict[str, Any]


def _error(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


def invalid_form_body(errors: Errors) -> dict[str, Any]:
    return {"code": 50035, "message": "Invalid Form Body", "errors": errors}


def _max_length(value: str | None, limit: int) -> dict[str, Any] | None:
    if value is not None and len(value) > limit:
        return _error("BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
    return None


def _embed_errors(embed: dict[str, Any]) -> tuple[Errors, int]:
    errors: Errors = {}
    size = 0
    for key, limit in EMBED_TEXT_MAX.items():
        text = embed.get(key)
        size += len(text or "")
        if error := _max_length(text, limit):
            errors[key] = error
    footer, author = embed.get("footer") or {}, embed.get("author") or {}
    size += len(footer.get("text") or "") + len(author.get("name") or "")
    if error := _max_length(footer.get("text"), FOOTER_TEXT_MAX):
        errors["footer"] = {"text": error}
    if error := _max_length(author.get("name"), AUTHOR_NAME_MAX):
        errors["author"] = {"name": error}
    fields = embed.get("fields") or []
    if len(fields) > EMBED_FIELDS_MAX:
        errors["fields"] = _error("BASE_TYPE_MAX_LENGTH", f"Must be {EMBED_FIELDS_MAX} or fewer in length.")
    for index, embed_field in enumerate(fields):
        size += len(embed_field.get("name") or "") + len(embed_field.get("value") or "")
        field_errors = {}
        for key, limit in (("name", FIELD_NAME_MAX), ("value", FIELD_VALUE_MAX)):
            if not embed_field.get(key):
                field_errors[key] = _error("BASE_TYPE_REQUIRED", "This field is required")
            elif error := _max_length(embed_field[key], limit):
                field_errors[key] = error
        if field_errors:
            errors.setdefault("fields", {})[str(index)] = field_errors
    return errors, size


def message_error(payload: dict[str, Any] | None, *, file_count: int, creating: bool) -> dict[str, Any] | None:
    """The error body Discord answers for an invalid message create or edit, or None when it is valid."""
    payload = payload or {}
    errors: Errors = {}
    if error := _max_length(payload.get("content"), CONTENT_MAX):
        errors["content"] = error
    embeds = payload.get("embeds") or []
    if len(embeds) > EMBEDS_MAX:
        errors["embeds"] = _error("BASE_TYPE_MAX_LENGTH", f"Must be {EMBEDS_MAX} or fewer in length.")
    total = 0
    for index, embed in enumerate(embeds):
        embed_errors, size = _embed_errors(embed)
        total += size
        if embed_errors:
            errors.setdefault("embeds", {})[str(index)] = embed_errors
    if total > EMBED_TOTAL_MAX:
        errors.setdefault("embeds", {}).update(
            _error("MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {EMBED_TOTAL_MAX}")
        )
    if component_errors := _component_errors(payload.get("components") or []):
        errors["components"] = component_errors
    if errors:
        return invalid_form_body(errors)
    has_body = payload.get("content") or embeds or payload.get("components") or payload.get("sticker_ids")
    if creating and not (has_body or file_count or payload.get("poll")):
        return {"code": 50006, "message": "Cannot send an empty message"}
    return None


def _component_errors(rows: list[dict[str, Any]]) -> Errors:
    """Action rows of buttons: at most 5 rows of 5, custom ids of at most 100 characters, unique in the message."""
    if len(rows) > ACTION_ROWS_MAX:
        return _error("BASE_TYPE_MAX_LENGTH", f"Must be {ACTION_ROWS_MAX} or fewer in length.")
    errors: Errors = {}
    seen: set[str] = set()
    for r, row in enumerate(rows):
        children = row.get("components") or []
        if row.get("type") != 1 or not 1 <= len(children) <= ROW_COMPONENTS_MAX:
            errors[str(r)] = _error("BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {ROW_COMPONENTS_MAX} in length.")
            continue
        for c, child in enumerate(children):
            custom_id = child.get("custom_id")
            if child.get("style") == 5:  # a link button: a URL, no custom id
                continue
            if not custom_id or len(custom_id) > CUSTOM_ID_MAX:
                errors.setdefault(str(r), {}).setdefault("components", {})[str(c)] = {
                    "custom_id": _error("BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {CUSTOM_ID_MAX} in length.")
                }
            elif custom_id in seen:
                errors.setdefault(str(r), {}).setdefault("components", {})[str(c)] = {
                    "custom_id": _error("COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated")
                }
            seen.add(custom_id or "")
            if error := _max_length(child.get("label"), BUTTON_LABEL_MAX):
                errors.setdefault(str(r), {}).setdefault("components", {})[str(c)] = {"label": error}
    return errors


def choices_error(data: dict[str, Any]) -> dict[str, Any] | None:
    """The error body for an autocomplete answer (callback type 8) with too many or too long choices, or None."""
    choices = data.get("choices")
    if not isinstance(choices, list):
        return invalid_form_body({"choices": _error("BASE_TYPE_REQUIRED", "This field is required")})
    if len(choices) > CHOICES_MAX:
        return invalid_form_body({"choices": _error("BASE_TYPE_MAX_LENGTH", f"Must be {CHOICES_MAX} or fewer.")})
    errors: Errors = {}
    for index, choice in enumerate(choices):
        for key, limit in (("name", CHOICE_NAME_MAX), ("value", CHOICE_VALUE_MAX)):
            value = choice.get(key)
            if isinstance(value, str) and not 1 <= len(value) <= limit:
                errors.setdefault(str(index), {})[key] = _error("BASE_TYPE_BAD_LENGTH", f"Must be 1-{limit} long.")
    return invalid_form_body({"choices": errors}) if errors else None


def commands_error(commands: Any) -> dict[str, Any] | None:
    """The error body for an invalid bulk overwrite of application commands, or None."""
    if not isinstance(commands, list):
        return invalid_form_body({"_errors": [{"code": "LIST_TYPE_CONVERT", "message": "Only iterables may be used"}]})
    errors: Errors = {}
    if len(commands) > COMMANDS_MAX:
        errors["_errors"] = [{"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {COMMANDS_MAX} or fewer."}]
    for index, command in enumerate(commands):
        command_errors: Errors = {}
        name = command.get("name") or ""
        if not COMMAND_NAME.match(name) or name != name.lower():
            command_errors["name"] = _error("APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        is_chat_input = command.get("type", 1) == 1
        description = command.get("description") or ""
        if is_chat_input and not 1 <= len(description) <= DESCRIPTION_MAX:
            command_errors["description"] = _error("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if len(command.get("options") or []) > COMMAND_OPTIONS_MAX:
            command_errors["options"] = _error("BASE_TYPE_MAX_LENGTH", f"Must be {COMMAND_OPTIONS_MAX} or fewer.")
        if command_errors:
            errors[str(index)] = command_errors
    return invalid_form_body(errors) if errors else None
