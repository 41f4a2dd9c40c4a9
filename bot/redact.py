"""Keeping the Discord token, and the tokens of interactions, out of the logs, whoever logs them.

:func:`redacting` masks the token in every log record as the record is made (a record factory), so no handler sees
it, including handlers added later and those of loggers that do not propagate, and in case a record is made another
way, also as a filter on the root logger's handlers. The message is formatted with its arguments and masked, and the
exception and stack texts are formatted and masked too (the exception itself is dropped from the record, so that no
formatter can print it afresh).

Interaction tokens are not known in advance: each lets anyone answer as the bot for 15 minutes, and discord.py's
debug log shows them in interaction and webhook URLs and in the gateway events it prints. They are masked by their
place: the path segment after ``/interactions/ID/`` or ``/webhooks/ID/``, and the value of a ``token`` key.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any

MASK = "[token]"
_FORMATTER = logging.Formatter()
PLACED_TOKENS = (
    re.compile(r"(/(?:interactions|webhooks)/\d+/)[^/\s'\"?&]+"),
    re.compile(r"""(["']token["']\s*:\s*["'])[^"']+"""),
)


# A Discord token has about 70 characters, and nothing else in a log holds one. A shorter secret (a placeholder, a
# mistake) could stand inside ordinary words ("e" in "cannot reach"): it is masked only where it stands whole, not
# touching a letter, digit, "_" or "-" on either side.
WHOLE_WORDS_BELOW = 20


def _whole_word(secret: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(secret)}(?![\w-])")


class Redactor(logging.Filter):
    """Replaces each of ``secrets`` (one under :data:`WHOLE_WORDS_BELOW` characters only where it stands whole),
    and the tokens :data:`PLACED_TOKENS` finds, by :data:`MASK` in a record's message, exception text and stack
    text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)  # the longest first
        self._whole = [_whole_word(s) for s in self.secrets if len(s) < WHOLE_WORDS_BELOW]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if len(secret) >= WHOLE_WORDS_BELOW:
                text = text.replace(secret, MASK)
        for pattern in self._whole:
            text = pattern.sub(MASK, text)
        for pattern in PLACED_TOKENS:
            text = pattern.sub(rf"\g<1>{MASK}", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the message: keep both, as text, masked
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


@contextlib.contextmanager
def redacting(*secrets: str) -> Iterator[Redactor]:
    """Mask ``secrets`` in every log record made inside the block (the record factory and the filter are removed
    after it)."""
    redactor = Redactor(secrets)
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redactor.filter(record)
        return record

    handlers = list(logging.getLogger().handlers)
    logging.setLogRecordFactory(factory)
    for handler in handlers:
        handler.addFilter(redactor)
    try:
        yield redactor
    finally:
        for handler in handlers:
            handler.removeFilter(redactor)
        logging.setLogRecordFactory(previous)
