"""What the stand-in records: REST calls, uploaded files, messages as Discord stores them, interaction handles."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .objects import FLAG_EPHEMERAL, FLAG_LOADING

if TYPE_CHECKING:
    from .server import StandIn


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request (``files[n]``) as the bot sent it."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Call:
    """One HTTP request the bot made. ``json`` is the JSON body, or ``payload_json`` of a multipart body."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[UploadedFile]
    route: str | None = None  # name of the matched route; None when the stand-in does not know the route
    status: int = 0
    response: Any = None
    at: float = field(default_factory=time.monotonic)

    @property
    def matched(self) -> bool:
        return self.route is not None

    @property
    def done(self) -> bool:
        """True once the stand-in has answered the request (``status`` is set)."""
        return self.status != 0

    def __repr__(self) -> str:
        return f"<Call {self.method} {self.path} -> {self.status} route={self.route}>"


@dataclass
class StoredMessage:
    """A message as the stand-in holds it: ``data`` is the Discord message object served back to the bot."""

    data: dict[str, Any]
    files: list[UploadedFile] = field(default_factory=list)
    payloads: list[Any] = field(default_factory=list)  # the JSON of the request that created it, then of each edit
    deleted: bool = False

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def channel_id(self) -> int:
        return int(self.data["channel_id"])

    @property
    def content(self) -> str:
        return self.data.get("content") or ""

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.data.get("embeds") or []

    @property
    def attachments(self) -> list[dict[str, Any]]:
        return self.data.get("attachments") or []

    @property
    def components(self) -> list[dict[str, Any]]:
        return self.data.get("components") or []

    @property
    def flags(self) -> int:
        return self.data.get("flags") or 0

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while a deferred response still shows "is thinking..."."""
        return bool(self.flags & FLAG_LOADING)

    @property
    def reference_id(self) -> int | None:
        reference = self.data.get("message_reference")
        return int(reference["message_id"]) if reference and reference.get("message_id") else None

    @property
    def author_id(self) -> int:
        return int(self.data["author"]["id"])

    @property
    def reactions(self) -> list[str]:
        return [r["emoji"]["name"] for r in self.data.get("reactions", [])]

    def file(self, filename: str) -> UploadedFile:
        return next(f for f in self.files if f.filename == filename)

    def __repr__(self) -> str:
        return f"<StoredMessage id={self.id} flags={self.flags} content={self.content[:40]!r}>"


class InteractionHandle:
    """Everything the bot did with one dispatched interaction: its callback, follow-ups and edits of the original."""

    def __init__(self, standin: StandIn, payload: dict[str, Any]) -> None:
        self._standin = standin
        self.payload = payload
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.dispatched_at = time.monotonic()
        self.callbacks: list[Call] = []
        self.followups: list[Call] = []
        self.edits: list[Call] = []
        self.original: StoredMessage | None = None
        self.followup_messages: list[StoredMessage] = []

    @property
    def acknowledged(self) -> bool:
        return any(c.status < 300 for c in self.callbacks)  # a callback being answered counts

    @property
    def response(self) -> Call | None:
        """The accepted callback (type 4 message, 5 deferral, ...), or None."""
        return next((c for c in self.callbacks if c.done and c.status < 300), None)

    @property
    def deferred(self) -> Call | None:
        """The accepted type 5 (deferred channel message) callback, or None."""
        response = self.response
        return response if response is not None and response.json.get("type") == 5 else None

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        """An autocomplete interaction's answer: the choices of the accepted type 8 callback, or None."""
        response = self.response
        if response is None or response.json.get("type") != 8:
            return None
        return list((response.json.get("data") or {}).get("choices") or [])

    @property
    def messages(self) -> list[StoredMessage]:
        """Messages the user ends up seeing: the original response, then follow-ups that created new messages."""
        found = [self.original] if self.original is not None else []
        return found + [m for m in self.followup_messages if m is not self.original]

    async def wait_for_response(self, timeout: float = 5.0) -> Call:
        """The first callback request (accepted or not)."""
        await self._standin.wait_until(
            lambda: any(c.done for c in self.callbacks), timeout=timeout, what=f"a callback to {self}"
        )
        return next(c for c in self.callbacks if c.done)

    async def wait_for_followups(self, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """The first ``count`` answered follow-up requests."""
        await self._standin.wait_until(
            lambda: sum(c.done for c in self.followups) >= count,
            timeout=timeout,
            what=f"{count} follow-up(s) to {self}",
        )
        return [c for c in self.followups if c.done][:count]

    async def wait_for_original(
        self, predicate: Callable[[StoredMessage], bool] = lambda m: not m.loading, timeout: float = 5.0
    ) -> StoredMessage:
        """The original response once ``predicate`` holds; by default once it no longer shows "is thinking..."."""
        await self._standin.wait_until(
            lambda: self.original is not None and predicate(self.original),
            timeout=timeout,
            what=f"the original response of {self}",
        )
        assert self.original is not None
        return self.original

    def __repr__(self) -> str:
        data = self.payload["data"]
        what = f"/{data['name']}" if "name" in data else f"button {data.get('custom_id')}"
        return f"<Interaction {what} id={self.id}>"


class MessageHandle:
    """A message posted by a user through the gateway, and the bot's replies to it."""

    def __init__(self, standin: StandIn, message: StoredMessage) -> None:
        self._standin = standin
        self.message = message
        self.id = message.id
        self.channel_id = message.channel_id

    @property
    def replies(self) -> list[StoredMessage]:
        return [m for m in self._standin.bot_messages() if m.reference_id == self.id]

    async def wait_for_reply(self, timeout: float = 5.0) -> StoredMessage:
        await self._standin.wait_until(
            lambda: bool(self.replies), timeout=timeout, what=f"a reply to message {self.id}"
        )
        return self.replies[0]
