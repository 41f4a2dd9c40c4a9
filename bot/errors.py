"""What users are told when something goes wrong: always a message Discord accepts, however long what the user
typed or the error's text."""

from __future__ import annotations

import logging

from bot.embeds import clip
from musrec.errors import MusrecError

log = logging.getLogger(__name__)

GENERIC = "Sorry, something went wrong on my side. It has been logged; please try again later."
TIMEOUT = "Sorry, that took too long and I gave up. Try a shorter clip, or again later."
RESTARTING = "Sorry, I am restarting and had to drop this request. Please send it again in a minute."
CONTENT_MAX = 2000  # Discord's limit for a message's text


class InputError(MusrecError):
    """A command was used wrongly (missing or conflicting options, a bad start time, an unsupported file)."""


def user_message(err: BaseException, *, context: str = "") -> str:
    """The text to show for ``err``: its own message when expected (cut to what a message can hold), a generic one
    (and a logged traceback) if not."""
    if isinstance(err, MusrecError) and err.expected:
        log.info("%s: %s", context or "request", err)
        return clip(_sentence(str(err)), CONTENT_MAX)
    log.error("%s failed", context or "request", exc_info=(type(err), err, err.__traceback__))
    return GENERIC


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return GENERIC
    first = text.split(" ", 1)[0]
    if first.isalpha():  # "you ..." -> "You ...", but never "notes.txt" -> "Notes.txt"
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
