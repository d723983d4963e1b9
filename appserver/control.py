"""The control API's WebSocket sessions: requests in, our calls out.

Every text frame is one JSON-RPC object or batch. Requests and notifications
from the test suite go to the dispatcher (rpc.py), each in its own task so a
slow method never blocks the receive loop. Responses to *our* requests (the
suite answering `transformInterceptedMessage`) never reach the dispatcher:
they resolve a pending future in the session's :class:`Correlator`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import WSCloseCode, WSMsgType, web

from appserver.errors import SuiteGone
from shared import jsonfast

log = logging.getLogger(__name__)

_session_ids = itertools.count(1)


class RemoteError(Exception):
    """The test suite answered one of our requests with a JSON-RPC error."""


class Correlator:
    """Pending outgoing requests, matched to responses by id.

    Timeouts use one timer per session rather than one per call: every
    intercepted message is a call, and a per-call timeout costs more than the
    rest of the bookkeeping together.
    """

    def __init__(self, send: Callable[[str], Awaitable[None]]) -> None:
        self._send = send
        self._pending: dict[int, tuple[asyncio.Future[Any], float]] = {}  # id → (future, deadline)
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._gone = False

    async def call(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        """Send a request and return its result; TimeoutError, RemoteError or SuiteGone."""
        if self._gone:
            raise SuiteGone()
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        future: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + timeout
        self._pending[request_id] = (future, deadline)
        if self._timer is None or deadline < self._timer.when():
            self._arm(deadline)
        try:
            await self._send(jsonfast.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
            return await future
        except ConnectionError as exc:
            raise SuiteGone() from exc
        finally:
            del self._pending[request_id]

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        """Fail the calls that are overdue; re-arm for the earliest deadline left."""
        self._timer = None
        now = asyncio.get_running_loop().time()
        waiting = [(future, deadline) for future, deadline in self._pending.values() if not future.done()]
        for future, deadline in waiting:
            if deadline <= now:
                future.set_exception(TimeoutError())
        later = [deadline for _, deadline in waiting if deadline > now]
        if later:
            self._arm(min(later))

    def resolve(self, response: dict[str, Any]) -> None:
        future, _ = self._pending.get(response.get("id"), (None, 0.0))  # type: ignore[arg-type]
        if future is None or future.done():
            log.warning("ignoring a response to no pending request: id %r", response.get("id"))
            return
        if "error" in response:
            future.set_exception(RemoteError(json.dumps(response["error"])))
        elif "result" in response:
            future.set_result(response["result"])
        else:
            future.set_exception(RemoteError("a response with neither result nor error"))

    def fail_all(self) -> None:
        """The control socket closed: nothing may wait on it any more."""
        self._gone = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(SuiteGone())


def is_response(payload: Any) -> bool:
    return isinstance(payload, dict) and "method" not in payload and ("result" in payload or "error" in payload)


#: Answers a parsed request, notification or batch; returns the reply text ("" for none).
Dispatch = Callable[["ControlSession", Any], Awaitable[str]]


class ControlSession:
    """One control-API WebSocket; the test suite it belongs to, if it calls startInterception."""

    def __init__(self, ws: web.WebSocketResponse, dispatch: Dispatch, transport: asyncio.BaseTransport | None = None) -> None:
        self.id = next(_session_ids)
        self.ws = ws
        self.transport = transport
        self._dispatch = dispatch
        self.correlator = Correlator(self._send)
        self._tasks: set[asyncio.Task[None]] = set()

    async def _send(self, text: str) -> None:
        if self.ws.closed:
            raise ConnectionResetError("control connection closed")
        await self.ws.send_str(text)

    async def call(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        return await self.correlator.call(method, params, timeout)

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        try:
            await self._send(jsonfast.dumps({"jsonrpc": "2.0", "method": method, "params": params}))
        except ConnectionError:
            log.debug("control session %d: notification %s not sent, connection closed", self.id, method)

    async def serve(self) -> None:
        """Receive until the socket closes; then fail whatever waits on it."""
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.TEXT:
                    self._on_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    self._spawn(self._reply(_error(-32600, "Invalid Request: control messages must be text frames")))
                elif msg.type is WSMsgType.ERROR:  # e.g. a frame over the size limit: aiohttp closes with 1009
                    log.warning("control session %d closed by a protocol error: %s", self.id, msg.data)
        finally:
            # What was sent before the close still counts (mitmproxyReady is sent and the
            # socket closed at once): let dispatched calls finish; each has its own bound.
            self.correlator.fail_all()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_text(self, text: str) -> None:
        try:
            payload = jsonfast.loads(text)
        except (ValueError, RecursionError) as exc:
            self._spawn(self._reply(_error(-32700, f"Parse error: {exc}")))
            return
        if is_response(payload):
            self.correlator.resolve(payload)
        else:
            self._spawn(self._answer(payload))

    async def _answer(self, payload: Any) -> None:
        reply = await self._dispatch(self, payload)
        if reply:
            await self._reply(reply)

    async def _reply(self, text: str) -> None:
        try:
            await self._send(text)
        except ConnectionError:
            log.debug("control session %d: reply not sent, connection closed", self.id)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        await self.close(WSCloseCode.GOING_AWAY, "app server shutting down")

    async def close(self, code: int, reason: str) -> None:
        """Close the control connection with that code and reason (waiting for the peer's answer)."""
        await self.ws.close(code=code, message=reason.encode())


def _error(code: int, message: str) -> str:
    return jsonfast.dumps({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": None})
