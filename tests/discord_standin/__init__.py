"""A Discord stand-in on loopback: REST API v10, gateway and attachment CDN, for running the real discord.py client.

How discord.py (2.x) is pointed at it. ``StandIn.start()`` sets, and ``StandIn.stop()`` restores, two class attributes
(pass ``patch_discord=False`` to manage them yourself):

- ``discord.http.Route.BASE = standin.api_url`` (``http://127.0.0.1:<port>/api/v10``). Every REST call builds its URL
  from it when the ``Route`` is created: login (``GET /users/@me``, ``GET /oauth2/applications/@me``), commands sync,
  channel messages, and also interaction callbacks and webhook follow-ups, because ``discord/webhook/async_.py`` uses
  the same ``Route`` class (there is no separate webhook base URL).
- ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(standin.gateway_url)``. A plain ``Client``/``Bot``
  never asks ``GET /gateway/bot``: it connects straight to ``DEFAULT_GATEWAY`` (only ``AutoShardedClient`` asks, and
  gets the same URL). RESUMEs go to READY's ``resume_gateway_url``, which is the stand-in's ``/gateway-ws/resume``.

These two are the tests' way in, never the bot's: discord.py has no public setting for its API base or its gateway
(a ``connector`` resolving discord.com to loopback would need TLS with a certificate the client trusts). The bot reads
neither; it learns where it talks from the requests themselves (``http_trace``, bot/startup.py).

Nothing else is overridden: the client keeps its default transport compression (``zlib-stream``, or ``zstd-stream``
when ``zstandard`` is installed) and the stand-in compresses accordingly. Attachment URLs point at ``standin.cdn_url``
(``http://127.0.0.1:<port>/attachments/{channel}/{id}/{filename}`` plus Discord's ``?ex=&is=&hm=`` signature), which
``Attachment.read()`` fetches through the client's own session; a bot that allow-lists CDN hosts must accept
``standin.cdn_hostname`` ("127.0.0.1") in its tests. Two client settings keep tests fast: ``guild_ready_timeout=0.05``
(discord.py waits that long after the last GUILD_CREATE before ``on_ready``; 2 s by default), and, only for tests that
make the client identify again, a ``before_identify_hook`` override (discord.py sleeps 5 s before a re-IDENTIFY).

Discord behaviour it models, because bots get it wrong: interactions must be acknowledged within ``ack_deadline``
(3 s; later callbacks get 404 code 10062) and only once (40060); follow-ups need an acknowledgement (else 10015) and a
token younger than ``token_ttl`` (15 min; else 50027); the first follow-up after a deferral replaces the "thinking"
message and keeps the deferral's visibility, ignoring its own ephemeral flag (discord/discord-api-docs#2860); message
and embed length limits (400, code 50035) and empty messages (50006); who a new message pings (``mention_everyone``
and ``mentions``, from its content, its ``allowed_mentions`` and the MENTION_EVERYONE permission); the upload limit
(413, 40005); channel permissions (403, 50013; interaction responses need none); without the MESSAGE_CONTENT intent
user messages arrive blank unless they mention the bot; the bot's own non-ephemeral messages come back to it as
MESSAGE_CREATE; privileged intents not enabled for the application close the gateway with 4014; events missed while
disconnected are replayed on RESUME. ``fail_next`` injects other failures (429 with retry, 500, ...).

Use::

    async def scenario(standin: StandIn) -> None:
        bot = make_bot()  # a discord.Client or commands.Bot, created inside the running loop
        async with standin.running(bot):
            handle = await standin.dispatch_interaction("ping")
            await handle.wait_for_followups(1)

    run(scenario, heartbeat_interval=0.5)

Buttons and autocomplete: ``standin.click(message, label=...)`` sends a component interaction (type 3) carrying the
message as stored, and accepts only the callbacks Discord accepts for it (4, 5: a new message; 6; 7: edit the message
clicked); ``standin.autocomplete(command, options, focused=name)`` sends type 4, whose only answer is type 8 with at
most 25 choices (``handle.choices``). Messages' action rows are checked (5 rows of 5, custom ids of at most 100
characters, unique).

Several guilds: ``world.add_guild()`` before the client starts (each has its GUILD_CREATE; an interaction, a message
belong to their channel's guild). Members' roles and permissions: ``world.add_role``, ``world.give_role`` and
``world.permissions_of[user_id]`` (sent with each interaction, as Discord does). Subcommands: dispatch
``"library add"``.

Not modelled: sharding beyond one shard, DMs, voice, context menus, select menus and modals beyond recording their
callbacks, MESSAGE_UPDATE/DELETE and reaction events, real rate limits,
permission overwrites, zombie-connection detection on missed heartbeats, and the 200 command creations a day limit.
"""

from __future__ import annotations

from .objects import FLAG_EPHEMERAL, FLAG_LOADING, INTENT_MESSAGE_CONTENT, PRIVILEGED_INTENTS, World
from .records import Call, InteractionHandle, MessageHandle, StoredMessage, UploadedFile
from .server import StandIn, run

__all__ = [
    "FLAG_EPHEMERAL",
    "FLAG_LOADING",
    "INTENT_MESSAGE_CONTENT",
    "PRIVILEGED_INTENTS",
    "Call",
    "InteractionHandle",
    "MessageHandle",
    "StandIn",
    "StoredMessage",
    "UploadedFile",
    "World",
    "run",
]
