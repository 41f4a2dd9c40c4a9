"""The gateway websocket: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, RESUME with replay, dispatches.

Transport compression follows the ``compress`` query parameter discord.py sends: ``zlib-stream`` (one zlib stream per
connection, every payload ending in a Z_SYNC_FLUSH) or ``zstd-stream`` (when the ``zstandard`` package is installed,
which is exactly when discord.py asks for it). Without the parameter payloads go out as text frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .objects import INTENT_GUILD_MESSAGES, INTENT_GUILDS, PRIVILEGED_INTENTS

if TYPE_CHECKING:
    from .server import StandIn

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE_UPDATE, VOICE_STATE_UPDATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_GUILD_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11

CLOSE_UNKNOWN_OPCODE, CLOSE_DECODE_ERROR, CLOSE_NOT_AUTHENTICATED = 4001, 4002, 4003
CLOSE_AUTHENTICATION_FAILED, CLOSE_ALREADY_AUTHENTICATED, CLOSE_DISALLOWED_INTENTS = 4004, 4005, 4014

# Events a client only receives with the matching intent; anything else (READY, INTERACTION_CREATE, ...) always.
EVENT_INTENTS = {
    "GUILD_CREATE": INTENT_GUILDS,
    "THREAD_CREATE": INTENT_GUILDS,
    "MESSAGE_CREATE": INTENT_GUILD_MESSAGES,
    "MESSAGE_UPDATE": INTENT_GUILD_MESSAGES,
}


class _Compressor:
    def __init__(self, kind: str | None) -> None:
        self.kind = kind
        if kind == "zlib-stream":
            self._zlib = zlib.compressobj()
        elif kind == "zstd-stream":
            import zstandard  # only requested by discord.py when it can import it too

            self._zstd = zstandard.ZstdCompressor().compressobj()
            self._flush_block = zstandard.COMPRESSOBJ_FLUSH_BLOCK

    def __call__(self, text: str) -> bytes:
        data = text.encode()
        if self.kind == "zlib-stream":
            return self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        return self._zstd.compress(data) + self._zstd.flush(self._flush_block)


class Connection:
    """One websocket connection; sends are serialised because the compression stream is stateful."""

    def __init__(self, ws: web.WebSocketResponse, compress: str | None, path: str) -> None:
        self.ws = ws
        self.path = path
        self.compress = compress
        self._compressor = _Compressor(compress) if compress else None
        self._lock = asyncio.Lock()
        self.session: Session | None = None
        self.server_close_code: int | None = None

    @property
    def close_code(self) -> int | None:
        """The code the stand-in closed with, else the one the client closed with (None while open)."""
        return self.server_close_code or self.ws.close_code

    async def close(self, code: int, reason: str) -> None:
        if self.server_close_code is None and not self.ws.closed:
            self.server_close_code = code
        await self.ws.close(code=code, message=reason.encode())

    async def send(self, *payloads: dict[str, Any]) -> None:
        """Send payloads in order; the lock is taken before the first await, so calls keep their order too."""
        async with self._lock:
            for payload in payloads:
                if self.ws.closed:
                    return
                text = json.dumps(payload, separators=(",", ":"))
                if self._compressor is None:
                    await self.ws.send_str(text)
                else:
                    await self.ws.send_bytes(self._compressor(text))


@dataclass
class Session:
    id: str
    intents: int
    identify: dict[str, Any]
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # every dispatch, kept for RESUME replay
    connection: Connection | None = None


class Gateway:
    """Gateway state for the stand-in; ``StandIn`` owns one and routes ``/gateway-ws`` here."""

    def __init__(self, standin: StandIn, *, heartbeat_interval_ms: int) -> None:
        self.standin = standin
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[str, Session] = {}
        self.current: Session | None = None
        self.connections: list[Connection] = []
        self.received: list[dict[str, Any]] = []  # every payload clients sent, in order
        self.heartbeats = 0
        self.identifies = 0
        self.resumes = 0
        self.close_codes: list[int | None] = []  # per finished connection: the stand-in's close code, else the client's

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        connection = Connection(ws, request.query.get("compress"), request.path)
        self.connections.append(connection)
        try:
            if request.query.get("encoding", "json") != "json":
                await connection.close(CLOSE_DECODE_ERROR, "Only JSON encoding is supported.")
                return ws
            if connection.compress not in (None, "zlib-stream", "zstd-stream"):
                await connection.close(CLOSE_DECODE_ERROR, "Unknown compression.")
                return ws
            await connection.send({"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None})
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                try:
                    payload = json.loads(message.data)
                except ValueError:
                    await connection.close(CLOSE_DECODE_ERROR, "Error while decoding payload.")
                    break
                self.received.append(payload)
                try:
                    await self._handle(connection, payload)
                except Exception as error:
                    log.exception("stand-in failed on gateway payload op %s", payload.get("op"))
                    self.standin.errors.append(error)
                await self.standin.notify()
        finally:
            self.close_codes.append(connection.close_code)
            if connection.session is not None and connection.session.connection is connection:
                connection.session.connection = None
            await self.standin.notify()
        return ws

    async def _handle(self, connection: Connection, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == HEARTBEAT:
            self.heartbeats += 1
            await connection.send({"op": HEARTBEAT_ACK, "d": None, "s": None})
        elif op == IDENTIFY:
            await self._identify(connection, data or {})
        elif op == RESUME:
            await self._resume(connection, data or {})
        elif connection.session is None:
            await connection.close(CLOSE_NOT_AUTHENTICATED, "Not authenticated.")
        elif op == REQUEST_GUILD_MEMBERS:
            await self._members_chunk(connection.session, data or {})
        elif op not in (PRESENCE_UPDATE, VOICE_STATE_UPDATE):
            await connection.close(CLOSE_UNKNOWN_OPCODE, "Unknown opcode.")

    async def _identify(self, connection: Connection, data: dict[str, Any]) -> None:
        self.identifies += 1
        if connection.session is not None:
            await connection.close(CLOSE_ALREADY_AUTHENTICATED, "Already authenticated.")
            return
        if data.get("token") != self.standin.token:
            await connection.close(CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~self.standin.privileged_intents:
            await connection.close(CLOSE_DISALLOWED_INTENTS, "Disallowed intent(s).")
            return
        session = Session(id=secrets.token_hex(16), intents=intents, identify=data)
        self.sessions[session.id] = session
        self.current = session
        connection.session = session
        session.connection = connection
        world = self.standin.world
        await self.dispatch(
            "READY",
            {
                "v": 10,
                "user": world.bot_user,
                "guilds": [{"id": str(guild_id), "unavailable": True} for guild_id in world.guild_ids],
                "session_id": session.id,
                "resume_gateway_url": self.standin.resume_gateway_url,
                "shard": data.get("shard", [0, 1]),
                "application": {"id": str(world.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "user_settings": {},
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "_trace": ["musrec-standin"],
            },
            session=session,
        )
        for guild_id in world.guild_ids:
            await self.dispatch("GUILD_CREATE", world.guild_create(guild_id), session=session)

    async def _resume(self, connection: Connection, data: dict[str, Any]) -> None:
        self.resumes += 1
        session = self.sessions.get(data.get("session_id") or "")
        if session is None or data.get("token") != self.standin.token:
            await connection.send({"op": INVALID_SESSION, "d": False, "s": None})
            return
        if session.connection is not None and session.connection is not connection:
            await session.connection.close(4000, "Session resumed elsewhere.")
        acknowledged = data.get("seq") or 0
        missed = [frame for frame in session.sent if frame["s"] > acknowledged]
        connection.session = session
        session.connection = connection
        self.current = session
        # Dispatches made during the replay queue behind it on the connection's lock: sequence numbers stay in order.
        await connection.send(*missed)
        await self.dispatch("RESUMED", {"_trace": ["musrec-standin"]}, session=session)

    async def _members_chunk(self, session: Session, data: dict[str, Any]) -> None:
        world = self.standin.world
        user_ids = data.get("user_ids")
        wanted = [int(u) for u in user_ids] if user_ids else [world.application_id, *self.standin.human_ids()]
        members = [world.member(user_id) for user_id in wanted if user_id in world.users]
        chunk = {"guild_id": str(world.guild_id), "members": members, "chunk_index": 0, "chunk_count": 1}
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk, session=session)

    async def dispatch(self, event: str, data: dict[str, Any], *, session: Session | None = None) -> bool:
        """Send a DISPATCH on a session (default: the latest identified one). Returns False when intents filter it out.

        Events sent while the session is disconnected are kept and replayed on RESUME, like Discord does.
        """
        session = session or self.current
        if session is None:
            raise RuntimeError("no client has identified on the stand-in's gateway yet")
        required = EVENT_INTENTS.get(event, 0)
        if required and not session.intents & required:
            return False
        session.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        session.sent.append(frame)
        if session.connection is not None:
            await session.connection.send(frame)
        return True

    async def send_op(self, op: int, data: Any = None) -> None:
        """Send a non-dispatch opcode (RECONNECT, INVALID_SESSION, HEARTBEAT) on the current connection."""
        if self.current is None or self.current.connection is None:
            raise RuntimeError("no connected gateway session")
        await self.current.connection.send({"op": op, "d": data, "s": None})

    async def close_all(self, code: int = 1001) -> None:
        for connection in self.connections:
            if not connection.ws.closed:
                await connection.close(code, "Stand-in stopping.")
