"""A fake Ably realtime server on loopback, good enough for the real ably-js 2.x.

It runs inside the test's event loop (aiohttp) and speaks the realtime
protocol in JSON (text frames) or msgpack (binary frames), as the client asks
with the ``format`` query parameter. What it does, by message:

- on connect: CONNECTED with connectionId, connectionKey and connectionDetails;
  a ``resume=<key>`` (or ``recover=<key>``) of a known connection gets the same
  connectionId (how ably-js tells a resume succeeded) and, with
  ``new_key_on_resume``, a new connectionKey; an unknown key a new connection
  with error 80008, as Ably does; the clientId is the token's (a JWT's claim,
  or the one a token request asked for);
- ATTACH → ATTACHED, DETACH → DETACHED, HEARTBEAT → HEARTBEAT (same id),
  CLOSE → CLOSED and a 1000 close, AUTH → CONNECTED (in-band reauth);
- anything with a msgSerial (MESSAGE, PRESENCE, …) → ACK; a MESSAGE is also
  sent to every connection attached to its channel (the sender too, unless it
  connected with ``echo=false``) with id, connectionId and timestamp filled, a
  PRESENCE likewise (the sender always: ably-js learns its own members so).

It sends WebSocket pings every ``ping_interval`` seconds: ably-js in Node
connects with ``heartbeats=false`` and counts the server's pings as activity.

Plain HTTP on the same port: ``GET /time``, ably-js's connectivity check
(``GET /is-the-internet-up.txt`` → ``yes``), token requests
(``POST /keys/<keyName>/requestToken``), channel publish and history
(``POST``/``GET /channels/<name>/messages``, realtime MESSAGEs included), and a WebSocket upgrade on any other
path is accepted and closed (ably-js's WebSocket connectivity check).

Tests see each connection (`FakeConnection`): its query parameters, every
protocol message it sent (decoded), and can push messages, close or drop it.
Set ``FakeAbly.on_message`` to take over the reply to a client message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from aiohttp import WSMsgType, web

from shared.ably import Action, DecodeError, Flag, Format, decode, encode, summarize

log = logging.getLogger(__name__)

# Channel modes granted on ATTACHED when the ATTACH asked for none.
DEFAULT_MODES = Flag.PRESENCE | Flag.PUBLISH | Flag.SUBSCRIBE | Flag.PRESENCE_SUBSCRIBE
# A hook that handles a client message itself; True means "done, skip the default reply".
MessageHook = Callable[["FakeConnection", dict[str, Any]], Awaitable[bool]]


def now_ms() -> int:
    return int(time.time() * 1000)


class FakeConnection:
    """One WebSocket transport of an SDK, as the fake server sees it."""

    def __init__(self, server: FakeAbly, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.server = server
        self.request = request
        self.ws = ws
        self.path = request.path
        self.query: dict[str, str] = dict(request.query)
        self.headers: dict[str, str] = dict(request.headers)
        self.format = Format.MSGPACK if self.query.get("format") == "msgpack" else Format.JSON
        #: Its clientId: asked for in the query, or the token's (a JWT's x-ably-clientId, a token the fake issued).
        self.client_id: str | None = self.query.get("clientId") or server.client_id_of(self.query.get("access_token"))
        self.connection_id = ""
        self.connection_key = ""
        self.resumed = False
        self.attached: set[str] = set()
        self.received: list[dict[str, Any]] = []  # every protocol message from the client
        self.sent: list[dict[str, Any]] = []  # every protocol message to the client
        # Once closed: the code aiohttp reports (the client's close frame, 0 if it had
        # no code; 1006 if the connection dropped), and the close the fake sent.
        self.close_code: int | None = None
        self.sent_close: tuple[int, str] | None = None
        self.closed = asyncio.Event()
        self._unread: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def __repr__(self) -> str:
        return f"<FakeConnection {self.connection_id} {self.format.value} {self.query}>"

    @property
    def echo(self) -> bool:
        return self.query.get("echo") != "false"

    async def send(self, message: dict[str, Any]) -> None:
        """Send one protocol message to the client, in the connection's format."""
        data = encode(message, self.format)
        log.debug("fake %s → %s", self.connection_id, summarize(message))
        self.sent.append(message)
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket with that code and reason (waits briefly for the client's answer)."""
        self.sent_close = (code, reason)
        await self.ws.close(code=code, message=reason.encode())

    def drop(self) -> None:
        """Drop the TCP connection without a close frame."""
        if self.request.transport is not None:
            self.request.transport.abort()

    async def next_message(self, action: Action | None = None, timeout: float = 5) -> dict[str, Any]:
        """The next client message not returned yet, skipping other actions (they stay in .received)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self._unread.get()
                if action is None or message.get("action") == action:
                    return message

    async def wait_closed(self, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            await self.closed.wait()

    def _record(self, message: dict[str, Any]) -> None:
        log.debug("fake %s ← %s", self.connection_id, summarize(message))
        self.received.append(message)
        self._unread.put_nowait(message)


class CometConnection(FakeConnection):
    """One Comet transport of an SDK (ably-js's ``xhr_polling`` in browsers, ``comet`` in Node): HTTP
    requests under /comet/, messages to the client queued until its next poll collects them (JSON only)."""

    def __init__(self, server: FakeAbly, request: web.Request) -> None:
        super().__init__(server, request, None)  # type: ignore[arg-type]
        self.format = Format.JSON
        self.outbox: list[dict[str, Any]] = []
        self.waiting = asyncio.Event()
        self.polls = 0
        self.stream = True

    async def send(self, message: dict[str, Any]) -> None:
        log.debug("fake %s → %s (comet)", self.connection_id, summarize(message))
        self.sent.append(message)
        self.outbox.append(message)
        self.waiting.set()

    def collect(self) -> list[dict[str, Any]]:
        messages, self.outbox = self.outbox, []
        self.waiting.clear()
        return messages

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.sent_close = (code, reason)
        self.closed.set()
        self.waiting.set()

    def drop(self) -> None:
        self.closed.set()
        self.waiting.set()


class FakeAbly:
    """The fake server; `start` binds 127.0.0.1 on a free port, `stop` leaves nothing behind."""

    def __init__(
        self,
        *,
        ping_interval: float | None = 5.0,
        connection_state_ttl: int = 120_000,
        max_idle_interval: int = 15_000,
        max_message_size: int = 65_536,
        new_key_on_resume: bool = False,
    ) -> None:
        self.ping_interval = ping_interval
        #: As Ably does: a resumed (or recovered) connection keeps its id and gets a new connectionKey.
        self.new_key_on_resume = new_key_on_resume
        #: Messages published on each channel, oldest first (realtime and REST), for REST history.
        self.history: dict[str, list[dict[str, Any]]] = {}
        self._token_client_ids: dict[str, str | None] = {}
        self.connection_details: dict[str, Any] = {
            "maxMessageSize": max_message_size,
            "maxInboundRate": 100,
            "maxFrameSize": 262_144,
            "serverId": "fake-ably",
            "connectionStateTtl": connection_state_ttl,
            "maxIdleInterval": max_idle_interval,
        }
        self.on_message: MessageHook | None = None
        self.connections: list[FakeConnection] = []
        self.token_requests: list[dict[str, Any]] = []
        self.http_requests: list[tuple[str, str, dict[str, str]]] = []  # REST time() requests seen
        self.port = 0
        self._live: set[FakeConnection] = set()
        self._sessions: dict[str, str] = {}  # connectionKey → connectionId
        self._comets: dict[str, CometConnection] = {}  # connectionKey → its Comet transport
        self._new: asyncio.Queue[FakeConnection] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @staticmethod
    @web.middleware
    async def _cors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:  # fmt: skip
        """Browsers' ably-js (Comet, REST) calls the fake from a page of another origin: allow it."""
        allow = {"Access-Control-Allow-Origin": request.headers.get("Origin", "*"),
                 "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "*"),
                 "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
                 "Access-Control-Allow-Credentials": "true"}  # fmt: skip
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=allow)
        response = await handler(request)
        if not response.prepared and request.headers.get("Upgrade", "").lower() != "websocket":
            response.headers.update(allow)
        return response

    async def start(self) -> None:
        app = web.Application(middlewares=[self._cors])
        app.router.add_get("/time", self._time)
        app.router.add_get("/is-the-internet-up.txt", self._internet_up)
        app.router.add_post("/keys/{key_name}/requestToken", self._request_token)
        app.router.add_get("/comet/connect", self._comet_connect)
        app.router.add_get("/comet/{key}/recv", self._comet_recv)
        app.router.add_post("/comet/{key}/send", self._comet_send)
        app.router.add_route("*", "/comet/{key}/{end:close|disconnect}", self._comet_end)
        app.router.add_post("/channels/{channel}/messages", self._publish)
        app.router.add_get("/channels/{channel}/messages", self._history)
        app.router.add_get("/{tail:.*}", self._websocket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Close every live connection with 1001 (RFC 6455 §7.4.1, going away), then the listener."""
        for conn in list(self._live):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await conn.close(1001, "fake server stopping")
            conn.drop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeAbly:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def forget_connections(self) -> None:
        """Make every connectionKey issued so far unknown, so that resuming it fails (error 80008)."""
        self._sessions.clear()

    async def next_connection(self, timeout: float = 10) -> FakeConnection:
        """The next Ably connection (WebSocket at `/`) not returned yet."""
        async with asyncio.timeout(timeout):
            return await self._new.get()

    # --- plain HTTP -----------------------------------------------------------

    async def _time(self, request: web.Request) -> web.Response:
        self.http_requests.append((request.method, request.raw_path, dict(request.headers)))
        return web.json_response([now_ms()])

    async def _internet_up(self, request: web.Request) -> web.Response:
        return web.Response(text="yes\n")

    async def _request_token(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.token_requests.append(body)
        issued = now_ms()
        details = {
            "token": f"fake-token-{next(self._ids)}",
            "keyName": request.match_info["key_name"],
            "issued": issued,
            "expires": issued + int(body.get("ttl") or 3_600_000),
            "capability": body.get("capability") or '{"*":["*"]}',
        }
        if body.get("clientId"):
            details["clientId"] = body["clientId"]
        self._token_client_ids[details["token"]] = body.get("clientId") or None
        return web.json_response(details)

    def client_id_of(self, token: str | None) -> str | None:
        """The clientId a token carries: one this fake issued, or a JWT's ``x-ably-clientId`` claim (the
        signature is not checked: the fake trusts its tests)."""
        if not token:
            return None
        if token in self._token_client_ids:
            return self._token_client_ids[token]
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, binascii.Error):
            return None
        client_id = claims.get("x-ably-clientId") if isinstance(claims, dict) else None
        return client_id if isinstance(client_id, str) and client_id != "*" else None

    # --- REST channel publish and history -------------------------------------------

    async def _publish(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        raw = await request.read()
        try:
            body = msgpack.unpackb(raw) if "msgpack" in request.headers.get("Content-Type", "") else json.loads(raw)
        except ValueError:
            return web.json_response({"error": {"code": 40000, "statusCode": 400, "message": "bad body"}}, status=400)
        messages = body if isinstance(body, list) else [body]
        timestamp = now_ms()
        for index, message in enumerate(m for m in messages if isinstance(m, dict)):
            self._record_history(channel, {"id": message.get("id") or f"rest{next(self._ids)}:{index}",
                                           "timestamp": timestamp, **message})  # fmt: skip
        return web.json_response({"channel": channel}, status=201)

    async def _history(self, request: web.Request) -> web.Response:
        items = list(reversed(self.history.get(request.match_info["channel"], [])))  # newest first, as Ably
        if request.query.get("direction") == "forwards":
            items.reverse()
        limit = int(request.query.get("limit") or 100)
        if "msgpack" in request.headers.get("Accept", ""):
            return web.Response(body=msgpack.packb(items[:limit]), content_type="application/x-msgpack")
        return web.json_response(items[:limit])

    def _record_history(self, channel: str, message: dict[str, Any]) -> None:
        self.history.setdefault(channel, []).append(message)

    # --- Comet (long polling over plain HTTP) ------------------------------------

    COMET_POLL = 5.0  # seconds a recv is held open when there is nothing to send

    async def _comet_connect(self, request: web.Request) -> web.StreamResponse:
        conn = CometConnection(self, request)
        conn.stream = request.query.get("stream", "true") != "false"
        await self._connected(conn)
        self._live.add(conn)
        self._comets[conn.connection_key] = conn
        self.connections.append(conn)
        self._new.put_nowait(conn)
        return await self._comet_deliver(request, conn)

    async def _comet_deliver(self, request: web.Request, conn: CometConnection) -> web.StreamResponse:
        """Polling: what is queued (waiting for something, up to COMET_POLL), as one JSON array. Streaming
        (ably-js in Node): one JSON array per line as messages come, for up to COMET_POLL seconds."""
        if not conn.stream:
            if not conn.outbox:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(conn.waiting.wait(), self.COMET_POLL)
            return web.json_response(conn.collect())
        response = web.StreamResponse(headers={"Content-Type": "application/json",
                                               "Access-Control-Allow-Origin": request.headers.get("Origin", "*"),
                                               "Access-Control-Allow-Credentials": "true"})  # fmt: skip
        await response.prepare(request)
        deadline = asyncio.get_running_loop().time() + self.COMET_POLL
        with contextlib.suppress(ConnectionError):
            while not conn.closed.is_set() or conn.outbox:
                if conn.outbox:
                    await response.write(json.dumps(conn.collect()).encode() + b"\n")
                    continue
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(conn.waiting.wait(), left)
            await response.write_eof()
        return response

    def _comet(self, request: web.Request) -> CometConnection:
        conn = self._comets.get(request.match_info["key"])
        if conn is None or conn.closed.is_set():
            raise web.HTTPNotFound(text="fake Ably: no such comet connection\n")
        return conn

    async def _comet_recv(self, request: web.Request) -> web.StreamResponse:
        conn = self._comet(request)
        conn.polls += 1
        return await self._comet_deliver(request, conn)

    async def _comet_send(self, request: web.Request) -> web.Response:
        conn = self._comet(request)
        for message in await request.json():
            conn._record(message)
            if self.on_message is None or not await self.on_message(conn, message):
                await self._reply(conn, message)
        return web.json_response([])

    async def _comet_end(self, request: web.Request) -> web.Response:
        conn = self._comet(request)
        if request.match_info["end"] == "close":
            await conn.send({"action": Action.CLOSED})
        self._live.discard(conn)
        await conn.close()
        return web.json_response(conn.collect())

    # --- WebSocket ------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        if not ws.can_prepare(request).ok:
            raise web.HTTPNotFound(text="fake Ably: no such resource\n")
        await ws.prepare(request)
        if request.path != "/":
            await ws.close(code=1000)  # a connectivity check: opening was the point
            return ws
        conn = FakeConnection(self, request, ws)
        self._live.add(conn)
        pinger = asyncio.create_task(self._ping(conn)) if self.ping_interval else None
        try:
            await self._connected(conn)
            self.connections.append(conn)
            self._new.put_nowait(conn)
            await self._read(conn)
        finally:
            if pinger is not None:
                pinger.cancel()
                await asyncio.gather(pinger, return_exceptions=True)
            self._live.discard(conn)
            conn.close_code = ws.close_code
            conn.closed.set()
            log.info("fake %s closed (code %s)", conn.connection_id, ws.close_code)
        return ws

    async def _connected(self, conn: FakeConnection) -> None:
        key = conn.query.get("resume") or conn.query.get("recover")
        message: dict[str, Any] = {"action": Action.CONNECTED}
        if key is not None and key in self._sessions:
            conn.connection_id, conn.connection_key, conn.resumed = self._sessions[key], key, True
            if self.new_key_on_resume:
                conn.connection_key = f"fakeKey{next(self._ids)}!{conn.connection_id}-0"
                self._sessions[conn.connection_key] = conn.connection_id
        else:
            number = next(self._ids)
            conn.connection_id = f"fakeConn{number}"
            conn.connection_key = f"fakeKey{number}!{conn.connection_id}-0"
            self._sessions[conn.connection_key] = conn.connection_id
            if key is not None:
                message["error"] = {
                    "code": 80008,
                    "statusCode": 400,
                    "message": "Unable to recover connection: connection expired (fake)",
                }
        log.info("fake %s opened %s (resumed=%s)", conn.connection_id, conn.query, conn.resumed)
        await conn.send({**message, **self._connection_fields(conn)})

    def _connection_fields(self, conn: FakeConnection) -> dict[str, Any]:
        details = {**self.connection_details, "connectionKey": conn.connection_key}
        if conn.client_id is not None:
            details["clientId"] = conn.client_id
        return {"connectionId": conn.connection_id, "connectionKey": conn.connection_key, "connectionDetails": details}

    async def _ping(self, conn: FakeConnection) -> None:
        assert self.ping_interval is not None
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not conn.ws.closed:
                await asyncio.sleep(self.ping_interval)
                await conn.ws.ping()

    async def _read(self, conn: FakeConnection) -> None:
        async for frame in conn.ws:
            if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            try:
                message = decode(frame.data, conn.format)
            except DecodeError as exc:
                log.warning("fake %s: undecodable frame: %s", conn.connection_id, exc)
                continue
            conn._record(message)
            if self.on_message is not None and await self.on_message(conn, message):
                continue
            await self._reply(conn, message)
            if conn.ws.closed:
                break

    # --- default replies ------------------------------------------------------

    async def _reply(self, conn: FakeConnection, message: dict[str, Any]) -> None:
        action = message.get("action")
        channel = message.get("channel")
        if "msgSerial" in message:
            # count is in protocol messages from msgSerial on, not in messages inside them.
            await conn.send({"action": Action.ACK, "msgSerial": message["msgSerial"], "count": 1})
        if action == Action.HEARTBEAT:
            await conn.send({k: v for k, v in message.items() if k in ("action", "id")})
        elif action == Action.ATTACH and isinstance(channel, str):
            await self._attach(conn, channel, int(message.get("flags") or 0))
        elif action == Action.DETACH and isinstance(channel, str):
            conn.attached.discard(channel)
            await conn.send({"action": Action.DETACHED, "channel": channel})
        elif action == Action.MESSAGE and isinstance(channel, str):
            await self._broadcast(conn, channel, message)
        elif action == Action.PRESENCE and isinstance(channel, str):
            await self._broadcast_presence(conn, channel, message)
        elif action == Action.AUTH:
            await conn.send({"action": Action.CONNECTED, **self._connection_fields(conn)})
        elif action == Action.CLOSE:
            await conn.send({"action": Action.CLOSED})
            await conn.close(1000)

    async def _attach(self, conn: FakeConnection, channel: str, requested: int) -> None:
        conn.attached.add(channel)
        modes = requested & Flag.MODE_ALL or DEFAULT_MODES
        flags = modes | (Flag.RESUMED if requested & Flag.ATTACH_RESUME else 0)
        await conn.send({"action": Action.ATTACHED, "channel": channel, "flags": int(flags), "channelSerial": "fake:0"})

    async def _broadcast_presence(self, sender: FakeConnection, channel: str, message: dict[str, Any]) -> None:
        """A member's ENTER, UPDATE or LEAVE goes to every connection attached to the channel, the sender's too
        (as Ably does: ably-js learns its own members from that echo, to enter them again after a lost attach)."""
        timestamp = now_ms()
        message_id = f"{sender.connection_id}:{message.get('msgSerial', 0)}"
        entries = []
        for index, entry in enumerate(message.get("presence") or []):
            filled = {"id": f"{message_id}:{index}", "connectionId": sender.connection_id, "timestamp": timestamp}
            if sender.client_id is not None:
                filled["clientId"] = sender.client_id
            entries.append({**filled, **entry})
        outgoing = {"action": Action.PRESENCE, "channel": channel, "id": message_id, "connectionId": sender.connection_id,
                    "timestamp": timestamp, "presence": entries}  # fmt: skip
        for conn in list(self._live):
            if channel in conn.attached:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.send(outgoing)

    async def _broadcast(self, sender: FakeConnection, channel: str, message: dict[str, Any]) -> None:
        timestamp = now_ms()
        message_id = f"{sender.connection_id}:{message.get('msgSerial', 0)}"
        entries = []
        for index, entry in enumerate(message.get("messages") or []):
            filled = {"id": f"{message_id}:{index}", "connectionId": sender.connection_id, "timestamp": timestamp}
            if sender.client_id is not None:
                filled["clientId"] = sender.client_id
            entries.append({**filled, **entry})
            self._record_history(channel, entries[-1])
        outgoing = {
            "action": Action.MESSAGE,
            "channel": channel,
            "id": message_id,
            "connectionId": sender.connection_id,
            "timestamp": timestamp,
            "channelSerial": f"fake:{timestamp}",
            "messages": entries,
        }
        for conn in list(self._live):
            if channel in conn.attached and (conn is not sender or conn.echo):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.send(outgoing)

