"""The control API's WebSocket sessions: the suite's requests in, our calls out.

Every frame is one JSON-RPC object or batch: a text frame of JSON, or on a
connection that chose the ``jsonrpc-msgpack`` subprotocol a binary frame of
msgpack (SPEC Part 10; shared/jsonrpc.py's Encoding). Responses to *our* calls
(the suite answering ``transformInterceptedMessage``) go to the session's
:class:`~shared.jsonrpc.Peer` and never reach the dispatcher; requests and
notifications go to the dispatcher (rpc.py), each in its own task so a slow
method never blocks the receive loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Sequence
from typing import Any, Awaitable, Callable

from aiohttp import WSCloseCode, WSMsgType, web

from shared import jsonrpc
from shared.cork import TurnCork, cork_writer
from shared.jsonrpc import ANSWERED, JSON, MSGPACK, MSGPACK_SUBPROTOCOL, Encoding, Peer, PeerGone

log = logging.getLogger(__name__)

MAX_PENDING_NOTIFICATIONS = 10_000
MAX_PENDING_BYTES = 8 << 20  # what waiting notifications may hold (64 KiB frames are 87 KB each in Base64)
NOTIFICATION_BATCH = 200  # notifications per batch at most, before one is sent at once
NOTIFICATION_INTERVAL = 0.002  # seconds a notification may wait for others to share its write

#: Answers a parsed request, notification or batch; returns the reply to encode (None for none).
Dispatch = Callable[["ControlSocket", Any], Awaitable[Any]]


class ControlSocket:
    """One control-API WebSocket; the test suite it belongs to, if it calls startInterception."""

    #: It answers the dialogue (transformInterceptedMessage …); a uts-proxy session's stand-in does not.
    answers = True

    def __init__(
        self, session_id: int, ws: web.WebSocketResponse, dispatch: Dispatch,
        transport: asyncio.BaseTransport | None = None, encoding: Encoding = JSON, cork: TurnCork | None = None,
    ) -> None:  # fmt: skip
        self.id = session_id
        self.ws = ws
        #: How its envelopes travel (JSON text frames, or msgpack binary frames).
        self.encoding = encoding
        self._write: Callable[[Any], Awaitable[None]] = ws.send_bytes if encoding.binary else ws.send_str
        self.transport = transport  # to tell, in local mode, whether it runs through mitmdump
        #: Under its frame writer: what a turn writes leaves together (``whole_turns`` while its window is > 1).
        self.cork = cork
        self._dispatch = dispatch
        self.peer = Peer(self._send, encoding)
        self._tasks: set[asyncio.Task[None]] = set()
        # Notifications to send soon, in order (notify_soon), encoded.
        self._outbox: collections.deque[Any] = collections.deque()
        self._sender: asyncio.Task[None] | None = None
        self._dropped = 0  # notifications dropped because the suite read too slowly
        self._pending_bytes = 0
        self._batch_wait: asyncio.Event | None = None

    async def _send(self, data: str | bytes) -> None:
        """Send one encoded message, after any notifications still waiting: what the suite receives keeps
        the order in which it happened (a ruleMatched before the connection's close, say)."""
        if self.ws.closed:
            raise ConnectionResetError("control connection closed")
        if self._outbox:
            await self._write(self._take_outbox())
        await self._write(data)

    def _take_outbox(self) -> Any:
        if self._dropped:
            log.warning("control connection %d: %d notifications were dropped", self.id, self._dropped)
            self._dropped = 0
        encoded, self._outbox, self._pending_bytes = list(self._outbox), collections.deque(), 0
        return self.encoding.batch(encoded)

    async def call(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        return await (await self.ask(method, params, timeout))

    async def ask(self, method: str, params: dict[str, Any], timeout: float) -> asyncio.Future[Any]:
        """Send a request; the future of its answer (TimeoutError, RemoteError or PeerGone), for the caller
        to await itself. PeerGone at once when the connection is closed."""
        data, answer = self.peer.request(method, params, timeout)
        try:
            await self._send(data)
        except ConnectionError as exc:
            self.peer.withdraw(answer)
            raise PeerGone(str(exc) or "the connection is closed") from exc
        return answer

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        try:
            await self.peer.notify(method, params)
        except ConnectionError:
            log.debug("control connection %d: notification %s not sent, connection closed", self.id, method)

    def notify_soon(self, method: str, params: dict[str, Any]) -> None:
        """Queue a notification and return at once: the traffic that caused it does not wait. What
        piles up while one is being written goes out as one batch (JSON-RPC 2.0 §6)."""
        if self.ws.closed:
            return
        text = jsonrpc.notification(method, params, self.encoding)  # encoded: a tenth of a dict's memory
        self._outbox.append(text)
        self._pending_bytes += len(text)
        while len(self._outbox) > MAX_PENDING_NOTIFICATIONS or self._pending_bytes > MAX_PENDING_BYTES:
            # A suite that reads slower than the traffic it observes must not grow our memory:
            # the oldest go, and the log says how many.
            self._pending_bytes -= len(self._outbox.popleft())
            if self._dropped == 0:
                log.warning("control connection %d reads notifications too slowly: dropping the oldest beyond %d "
                            "(or %d MiB)", self.id, MAX_PENDING_NOTIFICATIONS, MAX_PENDING_BYTES >> 20)  # fmt: skip
            self._dropped += 1
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_outbox())
        elif len(self._outbox) >= NOTIFICATION_BATCH and self._batch_wait is not None:
            self._batch_wait.set()  # a full batch: no need to wait out the interval

    async def _send_outbox(self) -> None:
        """Send what piled up, as batches: after NOTIFICATION_INTERVAL, or once a batch is full, so that
        observing every frame costs one write per batch rather than one per frame."""
        try:
            while self._outbox:
                self._batch_wait = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_wait.wait(), NOTIFICATION_INTERVAL)
                self._batch_wait = None
                if self.ws.closed:
                    self._outbox.clear()
                    self._pending_bytes = 0
                elif self._outbox:
                    await self._write(self._take_outbox())
        except ConnectionError:
            log.debug("control connection %d: notifications not sent, connection closed", self.id)
            self._outbox.clear()
            self._pending_bytes = 0
        finally:
            self._sender = None

    async def serve(self) -> None:
        """Receive until the socket closes; then fail whatever waits on it."""
        try:
            ours, other = (WSMsgType.BINARY, WSMsgType.TEXT) if self.encoding.binary else (WSMsgType.TEXT,
                                                                                              WSMsgType.BINARY)  # fmt: skip
            async for msg in self.ws:
                if msg.type is ours:
                    self._on_frame(msg.data)
                elif msg.type is other:
                    self._spawn(self._reply(_error(-32600, "Invalid Request: control messages must be text frames"
                                                   if other is WSMsgType.BINARY else "Invalid Request: this control "
                                                   "connection chose jsonrpc-msgpack: its messages are binary frames "
                                                   "of msgpack")))  # fmt: skip
                elif msg.type is WSMsgType.ERROR:  # e.g. a frame over the size limit: aiohttp closes with 1009
                    log.warning("control connection %d closed by a protocol error: %s", self.id, msg.data)
        finally:
            # What was sent before the close still counts (mitmproxyReady is sent and the
            # socket closed at once): let dispatched calls finish; each has its own bound.
            self.peer.close()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._sender is not None:
                await asyncio.gather(self._sender, return_exceptions=True)

    def _on_frame(self, data: str | bytes) -> None:
        try:
            payload = self.peer.take(data)  # an answer to one of our calls goes to its caller
        except (ValueError, RecursionError) as exc:
            self._spawn(self._reply(_error(-32700, f"Parse error: {exc}")))
            return
        if payload is not ANSWERED:
            self._spawn(self._answer(payload))

    async def _answer(self, payload: Any) -> None:
        reply = await self._dispatch(self, payload)
        if reply is not None:
            await self._reply(reply)

    async def _reply(self, reply: Any) -> None:
        """Send a reply (an envelope or a batch of them)."""
        try:
            await self._send(self.encoding.dumps(reply))
        except ConnectionError:
            log.debug("control connection %d: reply not sent, connection closed", self.id)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        await self.close(WSCloseCode.GOING_AWAY, "app server shutting down")

    async def close(self, code: int, reason: str) -> None:
        """Close the control connection with that code and reason (waiting for the peer's answer)."""
        await self.ws.close(code=code, message=reason.encode())


class ControlEndpoint:
    """The control API's one route: each WebSocket from its handshake to its close, served here whole (the
    app only hears that one opened and, once it is done, that it closed)."""

    def __init__(
        self, dispatch: Dispatch, origin_allowed: Callable[[str], bool], allowed_origins: Sequence[str],
        max_message_size: int, opened: Callable[[ControlSocket], None],
        closed: Callable[[ControlSocket], Awaitable[None]],
    ) -> None:  # fmt: skip
        self._dispatch = dispatch
        self._origin_allowed = origin_allowed
        self._allowed_origins = allowed_origins
        self._max_message_size = max_message_size
        self._opened = opened
        self._closed = closed
        self._ids = itertools.count(1)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin):
            # A page in a browser on this machine must not drive the proxy (cross-site WebSocket hijacking).
            log.warning("refused a control connection from origin %r (allowed: %s)", origin,
                        ", ".join(self._allowed_origins))  # fmt: skip
            return web.Response(status=403, text=f"origin {origin!r} is not allowed (see --allow-origin)\n")
        # No permessage-deflate: on loopback it only costs CPU, on every intercepted message.
        # A client that offers jsonrpc-msgpack gets it (SPEC Part 10); without it, JSON as in Part 1.
        ws = web.WebSocketResponse(max_msg_size=self._max_message_size, compress=False,
                                   protocols=(MSGPACK_SUBPROTOCOL,))  # fmt: skip
        await ws.prepare(request)
        # With a window, the requests about every frame one read brought leave together, not one send() each.
        cork = cork_writer(ws, request.transport) if request.transport is not None else None
        encoding = MSGPACK if ws.ws_protocol == MSGPACK_SUBPROTOCOL else JSON
        socket = ControlSocket(next(self._ids), ws, self._dispatch, request.transport, encoding, cork)
        self._opened(socket)
        log.info("control connection %d opened from %s%s", socket.id, request.remote,
                 " (msgpack)" if encoding.binary else "")  # fmt: skip
        try:
            await socket.serve()
        finally:
            await self._closed(socket)
            log.info("control connection %d closed", socket.id)
        return ws


def _error(code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": None}
