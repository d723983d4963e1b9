"""The one JSON-RPC 2.0 peer core, used by both ends of the control API.

Either end both calls and is called: the app server calls the suite's
``transformInterceptedMessage`` and answers its methods; the suite's client
calls the proxy's methods and answers its transforms. :class:`Peer` owns the
calling half: pending calls by id with their deadlines, resolved by the
responses fed to it and failed as a whole when the connection goes away (the
pattern of websockets' pending pings). Routing is one rule: a payload with
``result`` or ``error`` and no ``method`` is a response, and never reaches a
dispatcher. How requests are answered is each end's business (the app server
keeps jsonrpcserver behind one module, appserver/control/rpc.py).

Timeouts use one timer per peer rather than one per call: every intercepted
message is a call, and a per-call timer costs more than the rest of the
bookkeeping together.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, Awaitable, Callable, Mapping

from shared import jsonfast

log = logging.getLogger(__name__)


class RemoteError(Exception):
    """The other end answered one of our calls with a JSON-RPC error."""

    def __init__(self, error: Any) -> None:
        self.error: Mapping[str, Any] = error if isinstance(error, dict) else {"message": repr(error)}
        self.code = self.error.get("code")
        self.remote_message = str(self.error.get("message", ""))
        super().__init__(jsonfast.dumps(error) if error is not None else "error")


class PeerGone(ConnectionError):
    """The connection closed while (or before) we waited on it."""


def is_response(payload: Any) -> bool:
    return isinstance(payload, dict) and "method" not in payload and ("result" in payload or "error" in payload)


def request(request_id: Any, method: str, params: Any) -> str:
    return jsonfast.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


def response(request_id: Any, result: Any) -> str:
    return jsonfast.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def notification(method: str, params: Any) -> str:
    return jsonfast.dumps({"jsonrpc": "2.0", "method": method, "params": params})


class Peer:
    """Our calls to the other end over ``send`` (one JSON text each), and their answers."""

    def __init__(self, send: Callable[[str], Awaitable[None]]) -> None:
        self._send = send
        self._pending: dict[int, tuple[asyncio.Future[Any], float]] = {}  # id → (future, deadline)
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._gone = False

    async def call(self, method: str, params: Any, timeout: float) -> Any:
        """Send a request and return its result; TimeoutError, RemoteError or PeerGone."""
        if self._gone:
            raise PeerGone("the connection is closed")
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        future: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + timeout
        self._pending[request_id] = (future, deadline)
        if self._timer is None or deadline < self._timer.when():
            self._arm(deadline)
        try:
            await self._send(request(request_id, method, params))
            return await future
        except ConnectionError as exc:
            raise PeerGone(str(exc) or "the connection is closed") from exc
        finally:
            del self._pending[request_id]

    async def notify(self, method: str, params: Any) -> None:
        """Send a notification; PeerGone (a ConnectionError) when the connection is closed."""
        await self._send(notification(method, params))

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

    def feed(self, payload: Any) -> bool:
        """Take a parsed payload: True if it was a response (now resolved or ignored), else False
        (a request, notification or batch: the caller's to answer)."""
        if not is_response(payload):
            return False
        future, _ = self._pending.get(payload.get("id"), (None, 0.0))
        if future is None or future.done():
            log.warning("ignoring a response to no pending call: id %r", payload.get("id"))
        elif "error" in payload:
            future.set_exception(RemoteError(payload["error"]))
        else:
            future.set_result(payload["result"])
        return True

    def close(self, why: str = "the connection closed") -> None:
        """The connection is gone: nothing may wait on it any more."""
        self._gone = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(PeerGone(why))
