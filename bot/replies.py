"""The request cycle every command and button goes through: admit to the queue, acknowledge at once, work off the
event loop, answer, or say why not (ephemerally)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import discord

from bot.errors import RESTARTING, TIMEOUT, user_message
from bot.host import Answering, Host, Notify
from bot.work import Ticket
from musrec.errors import BusyError, MusrecError

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """A result message: its embed, files, and buttons."""

    embed: discord.Embed
    files: list[discord.File] = field(default_factory=list)
    view: discord.ui.View | None = None


async def reject(interaction: discord.Interaction, err: MusrecError) -> None:
    await interaction.response.send_message(user_message(err), ephemeral=True)


async def answer(host: Host, interaction: discord.Interaction, work: Callable[[Ticket], Awaitable[Reply]]) -> None:
    """Admit, acknowledge at once, work off the event loop, answer, or say why not (ephemerally).

    The answer is the deferral's own message: for a command its response, for a button a new message under the
    one clicked (which stays as it was, so the conversation keeps its history).
    """
    user = interaction.user.id
    queue = host.queue
    try:
        ticket = queue.admit(user)
    except BusyError as err:
        await reject(interaction, err)
        return
    with answering(host, functools.partial(fail, interaction)) as work_over:
        try:
            try:
                await interaction.response.defer(thinking=True)
                if ticket.ahead:
                    place = f"You are number {ticket.ahead + 1} in the queue …"
                    await interaction.edit_original_response(content=place)
                reply = await asyncio.wait_for(work(ticket), timeout=queue.timeout_s)
            finally:
                work_over()
            extra: dict[str, Any] = {} if reply.view is None else {"view": reply.view}
            await interaction.edit_original_response(content=None, embed=reply.embed, attachments=reply.files, **extra)
        except TimeoutError:
            await fail(interaction, TIMEOUT)
        except Exception as err:
            await fail(interaction, user_message(err, context=f"{what(interaction)} by {user}"))
        finally:
            queue.release(ticket)


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
