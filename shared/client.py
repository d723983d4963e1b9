"""The test-suite client: what a Python test suite uses to drive the proxy.

    client = await InterceptionClient.connect("ws://127.0.0.1:8001/")
    await client.start_interception(mode="proxy")
    async with client.intercept() as ctx:
        ctx.transform_server_message = lambda m: None if m.action == Action.ACK else m.message
        conn = await ctx.next_connection()
        ...

Callbacks receive an :class:`Intercepted` with the decoded Ably protocol
message (JSON for text frames, msgpack for binary ones) and return the
message to deliver (re-encoded in the frame's own format) or None to drop
it. Spy callbacks only observe. A context's callbacks never outlive it:
afterwards every message passes through unchanged and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, Mapping

import aiohttp

from shared import ably, jsonrpc
from shared.constants import (
    EVENT_CONNECTION_CLOSED,
    EVENT_CONNECTION_OPENED,
    EVENT_RULE_MATCHED,
    METHOD_ATTACH_SESSION,
    METHOD_CLOSE_CONNECTION,
    METHOD_CLOSE_SESSION,
    METHOD_HTTP_REQUEST,
    METHOD_HTTP_RESPONSE,
    METHOD_INJECT,
    METHOD_OPEN_SESSION,
    METHOD_START_INTERCEPTION,
    METHOD_TRANSFORM,
)
from shared.context import Intercepted, InterceptionContext, Spy, Transform, _maybe_await
from shared.cork import cork_writer
from shared.http_dialogue import PASS as HTTP_PASS
from shared.http_dialogue import HttpExchange
from shared.jsonrpc import ENCODINGS, JSON, MSGPACK_SUBPROTOCOL, Encoding, Peer, PeerGone, RemoteError
from shared.client_methods import ProxyMethods
from shared.connections import ConnectionClosed, ConnectionOpened
from shared.wire import Frame, InjectRequest, InterceptedMessage, MessageType, TransformResult

HTTP_METHODS = (METHOD_HTTP_REQUEST, METHOD_HTTP_RESPONSE)

__all__ = ["Intercepted", "InterceptionClient", "InterceptionContext", "ProxyCallError", "Spy", "Transform"]

log = logging.getLogger(__name__)


class ProxyCallError(Exception):
    """The proxy answered a call with a JSON-RPC error; the message is the proxy's."""

    def __init__(self, method: str, error: Mapping[str, Any]) -> None:
        self.code = error.get("code")
        self.proxy_message = error.get("message", "")
        super().__init__(f"{method}: {self.proxy_message} (code {self.code})")


class InterceptionClient(ProxyMethods):
    """A control-API connection that becomes the active test suite."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, owns_session: bool,
                 encoding: Encoding = JSON) -> None:  # fmt: skip
        self._session = session
        self._ws = ws
        self._owns_session = owns_session
        #: How the envelopes travel: JSON text frames, or (``encoding="msgpack"``) msgpack binary frames.
        self.encoding = encoding
        self._peer = Peer(self._send, encoding)
        # What a turn of the loop writes leaves in one send(); with a window, the answers to all the requests
        # one read brought (shared/cork.py).
        self._cork = cork_writer(ws)
        self._context: InterceptionContext | None = None
        self._formats: dict[str, ably.Format] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, url: str = "ws://127.0.0.1:8001/", timeout: float = 10,
                      encoding: str = "json") -> InterceptionClient:  # fmt: skip
        """Connect to the control API. ``encoding="msgpack"`` offers the ``jsonrpc-msgpack`` subprotocol (SPEC
        Part 10): every envelope a msgpack binary frame, a binary frame's data bytes rather than Base64."""
        chosen = ENCODINGS.get(encoding)
        if chosen is None:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=timeout), max_msg_size=0,
                                          protocols=(MSGPACK_SUBPROTOCOL,) if chosen.binary else ())  # fmt: skip
            if chosen.binary and ws.protocol != MSGPACK_SUBPROTOCOL:
                await ws.close()
                raise ConnectionError(f"{url} did not accept the {MSGPACK_SUBPROTOCOL} subprotocol: is it the "
                                      "interception proxy's control API, and recent enough?")  # fmt: skip
        except BaseException:
            await session.close()
            raise
        return cls(session, ws, owns_session=True, encoding=chosen)

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(self._reader, *self._tasks, return_exceptions=True)
        if self._owns_session:
            await self._session.close()

    async def __aenter__(self) -> InterceptionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- calls to the proxy -------------------------------------------------

    async def _send(self, data: str | bytes) -> None:
        if self._ws.closed:
            raise PeerGone("the control connection is closed")
        if isinstance(data, bytes):
            await self._ws.send_bytes(data)
        else:
            await self._ws.send_str(data)

    async def call(self, method: str, params: Mapping[str, Any], timeout: float = 60) -> Any:
        """Call a proxy method; its result, or ProxyCallError with the proxy's error."""
        try:
            result = await self._peer.call(method, params, timeout)
        except RemoteError as exc:
            raise ProxyCallError(method, exc.error) from None
        if method in (METHOD_START_INTERCEPTION, METHOD_OPEN_SESSION, METHOD_ATTACH_SESSION):
            self._cork.whole_turns = params.get("window", 1) > 1  # many answers in a turn: sent as one write
        elif method == METHOD_CLOSE_SESSION:
            self._cork.whole_turns = False
        return result

    async def start_interception(self, mode: str = "proxy", pid: int | None = None, *, window: int = 1) -> None:
        """Become the active suite. ``window`` > 1 lets that many messages per connection and direction be asked
        about at once (SPEC Part 10): the callbacks may then run for several messages at once."""
        params: dict[str, Any] = {"mode": mode}
        if pid is not None:
            params["pid"] = pid
        if window != 1:
            params["window"] = window
        await self.call(METHOD_START_INTERCEPTION, params)

    async def inject_message(self, connection_id: str, message: Mapping[str, Any] | Frame, *, from_client: bool) -> str:
        """Send a message at once on one leg, encoded in that connection's own format; returns its id."""
        frame = message if isinstance(message, Frame) else self._encode_for(connection_id, message)
        result = await self.call(METHOD_INJECT,
                                 InjectRequest(connection_id, from_client, frame).to_json(self.encoding.binary))
        return str(result["id"])

    def _encode_for(self, connection_id: str, message: Mapping[str, Any]) -> Frame:
        fmt = self._formats.get(connection_id, ably.Format.JSON)
        data = ably.encode(message, fmt)
        return Frame.binary(data) if isinstance(data, bytes) else Frame.text(data)

    async def close_connection(
        self, connection_id: str, side: str = "both", code: int | None = None, reason: str | None = None,
        abrupt: bool = False,
    ) -> None:  # fmt: skip
        params: dict[str, Any] = {"connectionID": connection_id, "side": side, "abrupt": abrupt}
        if code is not None:
            params["code"] = code
        if reason is not None:
            params["reason"] = reason
        await self.call(METHOD_CLOSE_CONNECTION, params)

    @contextlib.asynccontextmanager
    async def intercept(self) -> AsyncIterator[InterceptionContext]:
        """Callbacks and events for one test; raises at exit if a callback raised."""
        if self._context is not None:
            raise RuntimeError("an interception context is already active")
        context = InterceptionContext(self)
        self._context = context
        try:
            yield context
        finally:
            self._context = None
            if context.rules_added and not self._ws.closed:
                with contextlib.suppress(ProxyCallError, ConnectionError, TimeoutError):
                    await self.clear_rules()  # a test's rules never outlive it
        if context.errors:
            raise context.errors[0]

    # --- what the proxy sends us --------------------------------------------

    async def _read(self) -> None:
        why = "the control connection closed"
        try:
            while True:
                msg = await self._ws.receive()
                if msg.type is (aiohttp.WSMsgType.BINARY if self.encoding.binary else aiohttp.WSMsgType.TEXT):
                    payload = self.encoding.loads(msg.data)
                    # A batch may carry several notifications at once.
                    for item in payload if isinstance(payload, list) else [payload]:
                        self._on_payload(item)
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                                  aiohttp.WSMsgType.ERROR):  # fmt: skip
                    if msg.type is aiohttp.WSMsgType.CLOSE:
                        why += f" (code {msg.data}{f': {msg.extra}' if msg.extra else ''})"
                    break
        finally:
            self._peer.close(why)

    def _on_payload(self, item: Any) -> None:
        if self._peer.feed(item) or not isinstance(item, dict) or not isinstance(item.get("method"), str):
            return
        if item["method"] in HTTP_METHODS and "id" in item:
            task = asyncio.ensure_future(self._answer_http(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif item["method"] == METHOD_TRANSFORM and "id" in item:
            task = asyncio.ensure_future(self._answer_transform(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._on_notification(item["method"], item.get("params") or {})

    def _on_notification(self, method: str, params: Mapping[str, Any]) -> None:
        context = self._context
        if method == EVENT_CONNECTION_OPENED:
            opened = ConnectionOpened.from_json(params)
            self._formats[opened.id] = opened.format
            if context is not None:
                context.connections.append(opened)
                context._opened.put_nowait(opened)
        elif method == EVENT_RULE_MATCHED:
            if context is not None:
                context._rule_matched(dict(params))
        elif method == EVENT_CONNECTION_CLOSED:
            closed = ConnectionClosed.from_json(params)
            self._formats.pop(closed.id, None)
            if context is not None:
                future = context._closed.setdefault(closed.id, asyncio.get_running_loop().create_future())
                if not future.done():
                    future.set_result(closed)

    async def _answer_http(self, request: Mapping[str, Any]) -> None:
        """transformInterceptedHttpRequest/Response: the context's callback decides (none: pass)."""
        exchange = HttpExchange.from_params(request["params"])
        context = self._context
        callback = None if context is None else (
            context.transform_http_request if request["method"] == HTTP_METHODS[0] else context.transform_http_response)
        answer: Any = None
        if callback is not None and context is not None:
            try:
                answer = await _maybe_await(callback(exchange))
            except Exception as exc:  # a test's callback failed: pass it on, fail the test at exit
                log.error("HTTP callback failed on %s %s: %r; passed on unchanged", exchange.method, exchange.url, exc)
                context.errors.append(exc)
        with contextlib.suppress(ConnectionError):
            await self._send(jsonrpc.response(request["id"], answer if answer is not None else HTTP_PASS,
                                              self.encoding))  # fmt: skip

    async def _answer_transform(self, request: Mapping[str, Any]) -> None:
        message = InterceptedMessage.from_json(request["params"])
        frame = await self._decide(message)
        result = TransformResult.drop() if frame is None else TransformResult.replace(frame)
        with contextlib.suppress(ConnectionError):
            await self._send(jsonrpc.response(request["id"], result.to_json(self.encoding.binary), self.encoding))

    async def _decide(self, message: InterceptedMessage) -> Frame | None:
        fmt = ably.Format.for_frame(message.frame.type is MessageType.BINARY)
        self._formats.setdefault(message.connection_id, fmt)
        try:
            decoded: dict[str, Any] | None = ably.decode(message.frame.data, fmt)
        except ably.DecodeError:
            decoded = None
        item = Intercepted(message.id, message.connection_id, message.from_client, message.frame, decoded)
        context = self._context
        if context is None:
            log.info("passing through %s message %s outside any test: %s",
                     "client" if item.from_client else "server", item.id, item)  # fmt: skip
            return message.frame
        try:
            return await context.decide(item)
        except Exception as exc:  # a test's callback failed: pass the message on, fail the test at exit
            log.error("callback failed on message %s (%s): %r; passed on unchanged", item.id, item, exc)
            context.errors.append(exc)
            return message.frame
