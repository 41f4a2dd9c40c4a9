"""The request cycle every command, button and posted clip goes through: admit to the queue, acknowledge at once,
work off the event loop, answer, or say why not (for a command or a button, ephemerally)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import discord

from bot.embeds import clip
from bot.errors import RESTARTING, TIMEOUT, user_message
from bot.host import Answering, Host, Notify
from bot.work import Ticket
from musrec.errors import BusyError, MusrecError

log = logging.getLogger(__name__)

THREAD_NAME_MAX = 100  # Discord's limit


@dataclass
class Reply:
    """A result message: its embed, files, and buttons."""

    embed: discord.Embed
    files: list[discord.File] = field(default_factory=list)
    view: discord.ui.View | None = None
    name: str | None = None  # what the answer is about (a clip's file name), for a thread's name


async def reject(interaction: discord.Interaction, err: MusrecError) -> None:
    await interaction.response.send_message(user_message(err), ephemeral=True)


class Request(Protocol):
    """Where a request came from, and how to talk back to it there: a command or a button (an interaction), or a
    clip or link posted in a listened channel (a message)."""

    @property
    def user_id(self) -> int:
        """Whose request it is: the queue admits one per user at a time."""
        ...

    def describe(self) -> str:
        """The request, for the log."""
        ...

    async def refuse(self, text: str) -> None:
        """Say why the request was not admitted (nothing was shown for it yet)."""
        ...

    def working(self, ticket: Ticket) -> contextlib.AbstractAsyncContextManager[None]:
        """Show that the request is being worked on while its block runs (and its place, when it waits)."""
        ...

    async def deliver(self, reply: Reply) -> None:
        """Send the answer."""
        ...

    async def fail(self, text: str) -> None:
        """Say why there is no answer (an error, the time limit, a shutdown), in place of the sign of work."""
        ...


async def answer(host: Host, interaction: discord.Interaction, work: Callable[[Ticket], Awaitable[Reply]]) -> None:
    """Answer a command or a button through :func:`cycle`: acknowledged at once ("thinking"), the answer the
    deferral's own message (for a command its response, for a button a new message under the one clicked, which
    stays as it was, so the conversation keeps its history), what goes wrong said only to the user."""
    await cycle(host, FromInteraction(interaction), work)


async def cycle(host: Host, request: Request, work: Callable[[Ticket], Awaitable[Reply]]) -> None:
    """The one request cycle: admit to the queue (or refuse, before any work), show that it is being worked on,
    run ``work`` within the queue's time limit, answer, or say why not; release the queue's place however it ends.

    While it runs, the request is registered in ``host.answering``, so that a shutdown stops it and tells its user.
    """
    queue = host.queue
    try:
        ticket = queue.admit(request.user_id)
    except BusyError as err:
        await request.refuse(user_message(err))
        return
    with answering(host, request.fail) as work_over:
        try:
            try:
                async with request.working(ticket):
                    reply = await asyncio.wait_for(work(ticket), timeout=queue.timeout_s)
            finally:
                work_over()
            await request.deliver(reply)
        except TimeoutError:
            await request.fail(TIMEOUT)
        except Exception as err:
            await request.fail(user_message(err, context=request.describe()))
        finally:
            queue.release(ticket)


@dataclass(frozen=True)
class FromInteraction:
    """A slash command or a button: acknowledged with Discord's "thinking" message, which the answer replaces."""

    interaction: discord.Interaction

    @property
    def user_id(self) -> int:
        return self.interaction.user.id

    def describe(self) -> str:
        return f"{what(self.interaction)} by {self.user_id}"

    async def refuse(self, text: str) -> None:
        await self.interaction.response.send_message(text, ephemeral=True)

    @contextlib.asynccontextmanager
    async def working(self, ticket: Ticket) -> AsyncIterator[None]:
        await self.interaction.response.defer(thinking=True)
        if ticket.ahead:
            await self.interaction.edit_original_response(content=f"You are number {ticket.ahead + 1} in the queue …")
        yield

    async def deliver(self, reply: Reply) -> None:
        extra: dict[str, Any] = {} if reply.view is None else {"view": reply.view}
        await self.interaction.edit_original_response(content=None, embed=reply.embed, attachments=reply.files, **extra)

    async def fail(self, text: str) -> None:
        await fail(self.interaction, text)


@dataclass(frozen=True)
class FromMessage:
    """A clip or link posted in a listened channel: the channel shows the bot typing while it works; the answer is
    a reply to the message, or the first message of a thread started from it (``in_thread``)."""

    message: discord.Message
    in_thread: bool = False

    @property
    def user_id(self) -> int:
        return self.message.author.id

    def describe(self) -> str:
        return f"message {self.message.id}"

    async def refuse(self, text: str) -> None:
        await quietly(self.message.reply(text, mention_author=False))

    @contextlib.asynccontextmanager
    async def working(self, ticket: Ticket) -> AsyncIterator[None]:
        if ticket.ahead:
            log.info("message %s queued behind %d requests", self.message.id, ticket.ahead)
        async with self.message.channel.typing():
            yield

    async def deliver(self, reply: Reply) -> None:
        extra: dict[str, Any] = {"view": reply.view or discord.utils.MISSING}
        if reply.files:
            extra["files"] = reply.files
        if self.in_thread and isinstance(self.message.channel, discord.TextChannel):
            thread = await self.message.create_thread(name=clip(f"Sounds like {reply.name or 'this'}", THREAD_NAME_MAX))
            await thread.send(embed=reply.embed, **extra)
        else:
            await self.message.reply(embed=reply.embed, mention_author=False, **extra)

    async def fail(self, text: str) -> None:
        await self.refuse(text)


@contextlib.contextmanager
def answering(host: Host, notify: Notify) -> Iterator[Callable[[], None]]:
    """Register the current task as a request being answered, so that a shutdown can stop it and tell its user
    (``notify``); the function yielded marks its work over (a shutdown then lets the answer go out)."""
    task = asyncio.current_task()

    def work_over() -> None:
        if task is not None:
            host.answering[task] = None

    if task is not None:
        host.answering[task] = notify
    try:
        yield work_over
    finally:
        if task is not None:
            host.answering.pop(task, None)


async def drop_unanswered(answering: Answering, *, timeout_s: float) -> int:
    """At shutdown: stop the requests still being worked on and tell each user, privately where the request allows
    it, to send it again; let those whose work is over send their answer.

    Without this a command's "thinking" message would stay until Discord gives up on it 15 minutes later, and a
    posted clip would never be answered. Each stage is bounded by ``timeout_s`` (a shutdown must not hang on
    Discord). Returns how many were dropped.
    """
    tasks = list(answering)
    dropped = [notify for notify in answering.values() if notify is not None]
    for task, notify in list(answering.items()):
        if notify is not None:
            task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout_s)  # each releases its ticket on the way out
    if not dropped:
        return 0
    notices = [asyncio.ensure_future(notify(RESTARTING)) for notify in dropped]
    _, late = await asyncio.wait(notices, timeout=timeout_s)
    for notice in late:
        notice.cancel()
    log.info("shutting down: %d requests dropped, their users told to send them again", len(dropped))
    return len(dropped)


async def fail(interaction: discord.Interaction, text: str) -> None:
    """Replace the public "thinking" message by a message only the user sees."""
    try:
        if interaction.response.is_done():
            await quietly(interaction.delete_original_response())
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the user about a failed request", exc_info=True)


def what(interaction: discord.Interaction) -> str:
    """The command or button an interaction came from, for the log."""
    if interaction.command is not None:
        return f"/{interaction.command.name}"
    data: dict[str, Any] = dict(interaction.data or {})
    custom_id = data.get("custom_id")
    return f"button {custom_id}" if custom_id else "interaction"


async def quietly(awaitable: Awaitable[object]) -> None:
    try:
        await awaitable
    except discord.HTTPException:
        log.warning("Discord refused a message", exc_info=True)
