"""The Discord stand-in, exercised by the real discord.py client with a tiny bot defined here."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import threading
import warnings
import zlib

import aiohttp
import discord
import pytest
from discord import app_commands
from discord_standin import FLAG_EPHEMERAL, StandIn, run
from discord_standin.events import buttons
from discord_standin.objects import MEMBER_PERMISSIONS, SEND_MESSAGES

TIMEOUT_S = 20.0
HEARTBEAT_S = 0.2
CLIP = bytes(range(256)) * 40  # 10 240 bytes


FRUITS = ("apple", "apricot", "banana", "cherry")


class PressView(discord.ui.View):
    """A persistent button: pressed, it answers with a new message; "Quiet" acknowledges without one."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Press", custom_id="tiny:press")
    async def press(self, interaction: discord.Interaction, button: discord.ui.Button[PressView]) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send(f"pressed by {interaction.user.id}")

    @discord.ui.button(label="Quiet", custom_id="tiny:quiet")
    async def quiet(self, interaction: discord.Interaction, button: discord.ui.Button[PressView]) -> None:
        await interaction.response.edit_message(content="quietly pressed")


class TinyBot(discord.Client):
    """Slash commands that defer / answer / download, and an ``on_message`` that replies."""

    def __init__(self, *, message_content: bool = True) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        super().__init__(intents=intents, guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.release = asyncio.Event()
        self.errors: list[discord.HTTPException] = []
        self.events: list[str] = []
        self._add_commands()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No 5 s pause before re-identifying: the stand-in has no IDENTIFY rate limit."""

    async def setup_hook(self) -> None:
        self.add_view(PressView())

    def _add_commands(self) -> None:
        @self.tree.command()
        async def buttons(interaction: discord.Interaction) -> None:
            """Answer with buttons."""
            await interaction.response.send_message("press one", view=PressView())

        @self.tree.command()
        @app_commands.describe(fruit="a fruit")
        async def pick(interaction: discord.Interaction, fruit: str) -> None:
            """Pick a fruit, with autocomplete."""
            await interaction.response.send_message(f"picked {fruit}")

        @pick.autocomplete("fruit")
        async def fruits(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            many = [app_commands.Choice(name=f"fruit {i}", value=str(i)) for i in range(30)]
            if current == "many":  # more than Discord accepts: the stand-in refuses the answer
                return many
            return [app_commands.Choice(name=f, value=f) for f in FRUITS if f.startswith(current)]

        @self.tree.command()
        async def ping(interaction: discord.Interaction) -> None:
            """Answer pong after a deferral."""
            await interaction.response.defer(thinking=True)
            await interaction.followup.send("pong")

        @self.tree.command()
        async def secret(interaction: discord.Interaction) -> None:
            """Answer only to the caller."""
            await interaction.response.send_message("only you", ephemeral=True)

        @self.tree.command()
        @app_commands.describe(clip="an audio clip")
        async def size(interaction: discord.Interaction, clip: discord.Attachment) -> None:
            """Download the clip and report its size."""
            await interaction.response.defer(thinking=True)
            data = await clip.read()
            await interaction.followup.send(f"{clip.filename}: {len(data)} bytes")
            report = discord.File(io.BytesIO(data[:16]), filename="head.bin")
            await interaction.followup.send("head", file=report, ephemeral=True)

        @self.tree.command()
        async def oops(interaction: discord.Interaction) -> None:
            """Defer publicly, then try to answer ephemerally."""
            await interaction.response.defer(thinking=True)
            await interaction.followup.send("first", ephemeral=True)
            await interaction.followup.send("second", ephemeral=True)

        @self.tree.command()
        async def slow(interaction: discord.Interaction) -> None:
            """Defer, wait to be released, answer."""
            self.events.append("slow deferring")
            await interaction.response.defer()
            await self.release.wait()
            await interaction.followup.send("slow done")

        @self.tree.command()
        async def late(interaction: discord.Interaction) -> None:
            """Answer after the acknowledgement deadline."""
            await asyncio.sleep(0.3)
            try:
                await interaction.response.send_message("too late")
            except discord.NotFound as error:
                self.errors.append(error)

        @self.tree.command()
        @app_commands.describe(count="how many", ratio="a ratio", loud="shout")
        async def echo(interaction: discord.Interaction, count: int, ratio: float = 1.0, loud: bool = False) -> None:
            """Echo typed options."""
            await interaction.response.send_message(f"{count} {ratio} {loud}")

        @self.tree.command()
        async def edit(interaction: discord.Interaction) -> None:
            """Defer, then edit the original response with an embed."""
            await interaction.response.defer(thinking=True, ephemeral=True)
            embed = discord.Embed(title="Matches", description="x" * 5000)
            try:
                await interaction.edit_original_response(embed=embed)
            except discord.HTTPException as error:
                self.errors.append(error)
            await interaction.edit_original_response(content="edited", embed=discord.Embed(title="Matches"))

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        self.events.append(f"message:{message.content}")
        if message.content == "!thread":
            thread = await message.create_thread(name="clip thread")
            await thread.send("in thread")
            return
        await message.add_reaction("\N{EYES}")
        attached = ", ".join([f"{a.filename}={len(await a.read())}" for a in message.attachments])
        await message.reply(f"heard: {message.content} [{attached}]")


def scenario(main, **options):
    """Run ``main(standin, bot)`` with a ready TinyBot against a fresh stand-in."""
    bot_options = {k: options.pop(k) for k in ("message_content",) if k in options}

    async def body(standin: StandIn):
        bot = TinyBot(**bot_options)
        async with standin.running(bot):
            result = await main(standin, bot)
        assert standin.errors == []
        return result

    options.setdefault("heartbeat_interval", HEARTBEAT_S)
    return run(body, timeout=TIMEOUT_S, **options)


def dispatched(standin: StandIn) -> list[dict]:
    """Every DISPATCH frame the stand-in sent on the current gateway session."""
    assert standin.gateway.current is not None
    return standin.gateway.current.sent


def text_channel(bot: discord.Client, standin: StandIn) -> discord.TextChannel:
    channel = bot.get_channel(standin.world.channel_id)
    assert isinstance(channel, discord.TextChannel)
    return channel


def test_login_ready_and_guild_seen():
    async def main(standin: StandIn, bot: TinyBot):
        world = standin.world
        assert bot.user is not None and bot.user.id == world.application_id and bot.user.bot
        assert bot.application_id == world.application_id
        guild = bot.get_guild(world.guild_id)
        assert guild is not None and guild.me is not None
        channel = guild.get_channel(world.channel_id)
        assert isinstance(channel, discord.TextChannel) and channel.name == "music"
        assert channel.permissions_for(guild.me).send_messages
        assert [c.route for c in standin.recorded] == ["me", "application"]
        assert standin.recorded[0].method == "GET" and not standin.unexpected
        assert standin.gateway.identifies == 1
        assert standin.gateway.connections[0].compress in ("zlib-stream", "zstd-stream")  # zstd when importable
        shards, url, _ = await bot.http.get_bot_gateway()
        assert (shards, url) == (1, standin.gateway_url) and standin.calls("gateway_bot")[0].status == 200

    scenario(main)


def test_slash_command_deferral_then_followup():
    async def main(standin: StandIn, bot: TinyBot):
        handle = await standin.dispatch_interaction("ping")
        await handle.wait_for_followups(1)
        assert handle.deferred is not None and handle.deferred.status == 200
        assert handle.deferred.query == {"with_response": "1"}
        assert handle.followups[0].json["content"] == "pong"
        assert handle.followups[0].query.get("wait") == "1"
        # The first follow-up after a deferral replaces the "thinking" message.
        assert handle.original is not None and handle.original.content == "pong" and not handle.original.loading
        assert [m.content for m in handle.messages] == ["pong"]
        assert handle.callbacks[0].path == f"/api/v10/interactions/{handle.id}/{handle.token}/callback"
        assert not standin.unexpected

    scenario(main)


def test_ephemeral_flags():
    async def main(standin: StandIn, bot: TinyBot):
        handle = await standin.dispatch_interaction("secret")
        response = await handle.wait_for_response()
        assert response.json == {"type": 4, "data": response.json["data"]}
        assert response.json["data"]["content"] == "only you"
        assert response.json["data"]["flags"] & FLAG_EPHEMERAL
        assert handle.original is not None and handle.original.ephemeral

        # Deferred publicly: the first follow-up inherits the deferral's visibility, later ones keep their own flag.
        handle = await standin.dispatch_interaction("oops")
        first, second = await handle.wait_for_followups(2)
        assert first.json["flags"] & FLAG_EPHEMERAL and second.json["flags"] & FLAG_EPHEMERAL
        shown = {m.content: m.ephemeral for m in handle.messages}
        assert shown == {"first": False, "second": True}
        echoed = [f["d"]["content"] for f in dispatched(standin) if f["t"] == "MESSAGE_CREATE"]
        assert "only you" not in echoed and "second" not in echoed and "" in echoed  # the public "thinking" message

    scenario(main)


def test_attachment_option_downloaded_through_the_standin():
    async def main(standin: StandIn, bot: TinyBot):
        clip = standin.add_attachment("clip 1.wav", CLIP)
        assert clip["url"].startswith(f"{standin.cdn_url}/attachments/") and "?ex=" in clip["url"]
        assert standin.cdn_hostname == "127.0.0.1"
        assert clip["content_type"] == "audio/x-wav" and clip["size"] == len(CLIP)
        handle = await standin.dispatch_interaction("size", {"clip": clip})
        await handle.wait_for_followups(2)
        assert handle.payload["data"]["resolved"]["attachments"][clip["id"]] == clip
        assert handle.original is not None and handle.original.content == f"clip 1.wav: {len(CLIP)} bytes"
        downloads = standin.calls("cdn")
        assert len(downloads) == 1 and downloads[0].status == 200

        upload = handle.followups[1]
        assert upload.json["content"] == "head" and upload.json["attachments"] == [{"id": 0, "filename": "head.bin"}]
        assert [(f.field, f.filename, f.data) for f in upload.files] == [("files[0]", "head.bin", CLIP[:16])]
        sent = handle.messages[1]
        assert sent.ephemeral and sent.file("head.bin").data == CLIP[:16]
        async with aiohttp.ClientSession() as session, session.get(sent.attachments[0]["url"]) as response:
            assert await response.read() == CLIP[:16]

    scenario(main)


def test_message_reply_reaction_and_thread():
    async def main(standin: StandIn, bot: TinyBot):
        clip = standin.add_attachment("a.mp3", b"ID3" + bytes(100))
        posted = await standin.post_message("hello", attachments=[clip])
        reply = await posted.wait_for_reply()
        assert reply.content == "heard: hello [a.mp3=103]" and reply.data["type"] == 19
        assert reply.data["referenced_message"]["id"] == str(posted.id)
        assert posted.message.reactions == ["\N{EYES}"]
        # Discord echoes the bot's own messages back to it; the bot must ignore them (checked below).
        assert any(f["d"].get("id") == str(reply.id) for f in dispatched(standin))

        posted = await standin.post_message("!thread")
        await standin.wait_until(lambda: bool(standin.bot_messages(posted.id)), what="a message in the thread")
        assert standin.world.channels[posted.id]["name"] == "clip thread"
        assert standin.bot_messages(posted.id)[0].content == "in thread"
        assert bot.get_channel(posted.id) is not None
        assert bot.events == ["message:hello", "message:!thread"]
        assert standin.calls("typing") == [] and not standin.unexpected

    scenario(main)


def test_without_message_content_intent_content_is_blank():
    async def main(standin: StandIn, bot: TinyBot):
        posted = await standin.post_message("hello")
        assert (await posted.wait_for_reply()).content == "heard:  []"
        mention = f"<@{standin.world.application_id}> hello"
        posted = await standin.post_message(mention)
        assert (await posted.wait_for_reply()).content == f"heard: {mention} []"

    scenario(main, message_content=False)


def test_disallowed_privileged_intent_closes_with_4014():
    async def main(standin: StandIn):
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with standin.running(TinyBot()):
                pass
        assert 4014 in standin.gateway.close_codes

    run(main, timeout=TIMEOUT_S, privileged_intents=0)


def test_tree_sync_payload_recorded_and_used_for_dispatch():
    async def main(standin: StandIn, bot: TinyBot):
        expected = [c.to_dict(bot.tree) for c in bot.tree.get_commands()]
        synced = await bot.tree.sync()
        (call,) = standin.calls("commands", "PUT")
        assert call.json == expected
        assert {c.name for c in synced} == {c["name"] for c in expected}
        assert [c["name"] for c in standin.commands[None]] == [c["name"] for c in expected]
        fetched = await bot.tree.fetch_commands()
        assert [c.id for c in fetched] == [c.id for c in synced]

        guild = discord.Object(standin.world.guild_id)
        bot.tree.copy_global_to(guild=guild)
        await bot.tree.sync(guild=guild)
        assert len(standin.commands[standin.world.guild_id]) == len(expected)

        handle = await standin.dispatch_interaction("echo", {"count": 3, "ratio": 2})
        await handle.wait_for_response()
        data = handle.payload["data"]
        assert data["guild_id"] == str(standin.world.guild_id)
        assert [(o["name"], o["type"]) for o in data["options"]] == [("count", 4), ("ratio", 10)]
        assert handle.original is not None and handle.original.content == "3 2.0 False"
        with pytest.raises(ValueError, match="needs option"):
            await standin.dispatch_interaction("echo", {"ratio": 2.0})
        assert not standin.unexpected

    scenario(main)


def test_heartbeats_keep_the_connection_alive():
    async def main(standin: StandIn, bot: TinyBot):
        await standin.wait_until(lambda: standin.gateway.heartbeats >= 6, timeout=5.0, what="six heartbeats")
        assert len(standin.gateway.connections) == 1 and standin.gateway.identifies == 1
        assert bot.is_ready() and not bot.is_closed() and bot.latency < 1.0
        handle = await standin.dispatch_interaction("ping")
        await handle.wait_for_followups(1)

    scenario(main)


def test_clean_shutdown_leaves_no_tasks_threads_or_warnings():
    async def main() -> None:
        standin = await StandIn(heartbeat_interval=HEARTBEAT_S).start()
        bot = TinyBot()
        async with asyncio.timeout(TIMEOUT_S), standin.running(bot):
            handle = await standin.dispatch_interaction("ping")
            await handle.wait_for_followups(1)
        assert bot.is_closed()
        await standin.wait_until(lambda: bool(standin.gateway.close_codes), what="the gateway socket to close")
        assert len(standin.gateway.close_codes) == 1 and standin.gateway.connections[0].server_close_code is None
        await standin.stop()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert discord.http.Route.BASE == "https://discord.com/api/v10"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    assert [str(w.message) for w in caught] == []
    keep_alive = [t for t in threading.enumerate() if t.name.startswith("keep-alive-handler")]
    for thread in keep_alive:
        thread.join(timeout=2 * HEARTBEAT_S)
    assert not any(t.is_alive() for t in keep_alive)


def test_second_interaction_while_the_first_is_processed():
    async def main(standin: StandIn, bot: TinyBot):
        slow = await standin.dispatch_interaction("slow")
        await slow.wait_for_response()
        fast = await standin.dispatch_interaction("ping")
        await fast.wait_for_followups(1)
        assert slow.followups == [] and bot.events == ["slow deferring"]
        bot.release.set()
        await slow.wait_for_followups(1)
        assert slow.original is not None and slow.original.content == "slow done"
        assert fast.followups[0].at < slow.followups[0].at

    scenario(main)


def test_resume_replays_events_missed_while_disconnected():
    async def main(standin: StandIn, bot: TinyBot):
        await standin.disconnect(4000)
        handle = await standin.dispatch_interaction("ping")  # sent while the bot is away: replayed on RESUME
        await handle.wait_for_followups(1)
        gateway = standin.gateway
        assert gateway.resumes == 1 and gateway.identifies == 1
        assert gateway.connections[-1].path == "/gateway-ws/resume"

        await standin.request_reconnect()
        await standin.wait_until(lambda: gateway.resumes == 2, what="a second RESUME")
        await standin.invalidate_session()
        await standin.wait_until(lambda: gateway.identifies == 2, what="a new IDENTIFY")
        handle = await standin.dispatch_interaction("ping")
        await handle.wait_for_followups(1)

    scenario(main)


def test_late_acknowledgement_is_an_unknown_interaction():
    async def main(standin: StandIn, bot: TinyBot):
        handle = await standin.dispatch_interaction("late")
        response = await handle.wait_for_response()
        assert response.status == 404 and response.response["code"] == 10062
        await standin.wait_until(lambda: bool(bot.errors), what="the bot to see the error")
        assert bot.errors[0].code == 10062 and handle.original is None

    scenario(main, ack_deadline=0.2)


def test_embed_limits_and_edits_of_the_original():
    async def main(standin: StandIn, bot: TinyBot):
        handle = await standin.dispatch_interaction("edit")
        original = await handle.wait_for_original(lambda m: m.content == "edited")
        assert [c.status for c in handle.edits] == [400, 200]
        assert handle.edits[0].response["errors"]["embeds"]["0"]["description"]["_errors"][0]["code"] == (
            "BASE_TYPE_MAX_LENGTH"
        )
        assert bot.errors[0].code == 50035
        assert original.ephemeral and [e["title"] for e in original.embeds] == ["Matches"]

    scenario(main)


def test_interaction_error_codes():
    async def main(standin: StandIn, bot: TinyBot):
        handle = await standin.dispatch_interaction("ghost")  # not in the bot's tree: the bot leaves it alone
        app = standin.world.application_id
        callback = f"{standin.api_url}/interactions/{handle.id}/{handle.token}/callback"
        followup = f"{standin.api_url}/webhooks/{app}/{handle.token}?wait=true"
        big = aiohttp.FormData()
        big.add_field("payload_json", json.dumps({"attachments": [{"id": 0, "filename": "big.bin"}]}))
        big.add_field("files[0]", b"x" * 2000, filename="big.bin")

        async def post(url: str, **kwargs) -> tuple[int, dict | None]:
            async with session.post(url, **kwargs) as response:
                return response.status, await response.json() if response.status != 204 else None

        async with aiohttp.ClientSession() as session:
            status, body = await post(followup, json={"content": "early"})
            assert (status, body) == (404, {"message": "Unknown Webhook", "code": 10015})
            assert await post(callback, json={"type": 5}) == (204, None)
            status, body = await post(callback, json={"type": 5})
            assert (status, body["code"]) == (400, 40060)
            status, body = await post(followup, json={"content": ""})
            assert (status, body["code"]) == (400, 50006)
            status, body = await post(followup, data=big)
            assert (status, body["code"]) == (413, 40005)
            assert handle.original is not None and handle.original.loading
            await asyncio.sleep(0.5)
            status, body = await post(followup, json={"content": "late"})
            assert (status, body["code"]) == (401, 50027)

    scenario(main, upload_limit=1000, token_ttl=0.5)


def test_injected_rate_limit_is_retried_and_unknown_routes_are_recorded():
    async def main(standin: StandIn, bot: TinyBot):
        standin.fail_next("POST", r"/channels/\d+/messages$", status=429)
        channel = text_channel(bot, standin)
        await channel.send("after a rate limit")
        assert [c.status for c in standin.calls("messages")] == [429, 200]
        with pytest.raises(discord.NotFound):
            await bot.http.request(discord.http.Route("GET", "/guilds/{guild_id}/nope", guild_id=1))
        (unknown,) = standin.unexpected
        assert (unknown.method, unknown.path, unknown.status) == ("GET", "/api/v10/guilds/1/nope", 404)
        assert unknown.response == {"message": "Unknown", "code": 0}

    scenario(main)


def test_missing_permissions_are_forbidden_but_interactions_still_work():
    async def main(standin: StandIn, bot: TinyBot):
        channel = text_channel(bot, standin)
        assert not channel.permissions_for(channel.guild.me).send_messages
        with pytest.raises(discord.Forbidden) as raised:
            await channel.send("hello")
        assert raised.value.code == 50013
        handle = await standin.dispatch_interaction("ping")
        await handle.wait_for_followups(1)
        assert handle.payload["app_permissions"] == str(standin.world.bot_permissions)

    scenario(main, bot_permissions=MEMBER_PERMISSIONS & ~SEND_MESSAGES)


def test_wrong_token_is_a_login_failure():
    async def main(standin: StandIn):
        with pytest.raises(discord.LoginFailure):
            async with standin.running(TinyBot(), token="another.token"):
                pass
        assert [(c.route, c.status) for c in standin.recorded] == [("me", 401)]

    run(main, timeout=TIMEOUT_S)


@pytest.mark.parametrize("compress", [None, "zlib-stream", "zstd-stream"])
def test_gateway_transport_compression(compress):
    if compress is None:
        decompress = None
    elif compress == "zlib-stream":
        decompress = zlib.decompressobj().decompress
    else:
        zstandard = pytest.importorskip("zstandard", reason="discord.py asks for zstd-stream only with zstandard")
        decompress = zstandard.ZstdDecompressor().decompressobj().decompress

    async def main(standin: StandIn):
        query = {"v": "10", "encoding": "json"} | ({"compress": compress} if compress else {})
        async with aiohttp.ClientSession() as session, session.ws_connect(standin.gateway_url, params=query) as ws:

            async def receive() -> dict:
                message = await ws.receive(timeout=5)
                if decompress is None:
                    assert message.type is aiohttp.WSMsgType.TEXT
                    return json.loads(message.data)
                assert message.type is aiohttp.WSMsgType.BINARY
                return json.loads(decompress(message.data))

            assert (await receive())["op"] == 10
            await ws.send_json({"op": 2, "d": {"token": standin.token, "intents": 513, "properties": {}}})
            ready, guild = await receive(), await receive()
            assert (ready["t"], ready["s"], guild["t"], guild["s"]) == ("READY", 1, "GUILD_CREATE", 2)
            assert ready["d"]["resume_gateway_url"] == standin.resume_gateway_url
            await ws.send_json({"op": 1, "d": 2})
            assert (await receive())["op"] == 11

    run(main, timeout=TIMEOUT_S)


def test_button_clicks_and_autocomplete():
    async def main(standin: StandIn, bot: TinyBot):
        command = await standin.dispatch_interaction("buttons")
        message = await command.wait_for_original(lambda m: bool(m.components))
        assert [b["label"] for b in buttons(message.data)] == ["Press", "Quiet"]
        click = await standin.click(message, label="Press", user_id=4242)
        await click.wait_for_original(lambda m: not m.loading)
        assert click.payload["type"] == 3 and click.payload["data"]["custom_id"] == "tiny:press"
        assert click.deferred is not None  # type 5: a new message under the one clicked
        assert click.original is not None and click.original.id != message.id
        assert click.original.content == "pressed by 4242" and message.content == "press one"
        quiet = await standin.click(message, custom_id="tiny:quiet")
        await quiet.wait_for_response()
        assert quiet.response is not None and quiet.response.json["type"] == 7
        assert message.content == "quietly pressed" and quiet.original is None
        with pytest.raises(ValueError, match="no button"):
            await standin.click(message, label="Absent")

        typed = await standin.autocomplete("pick", {"fruit": "ap"}, focused="fruit")
        await typed.wait_for_response()
        assert typed.payload["type"] == 4 and typed.payload["data"]["options"][0]["focused"] is True
        assert typed.choices == [{"name": "apple", "value": "apple"}, {"name": "apricot", "value": "apricot"}]
        many = await standin.autocomplete("pick", {"fruit": "many"}, focused="fruit")
        call = await many.wait_for_response()
        assert call.status == 400 and many.choices is None  # at most 25 choices
        assert not standin.unexpected

    scenario(main)
