"""The one JSON-RPC 2.0 peer core, used by both ends of the control API: the envelope's encoding, and the calls.

Either end both calls and is called: the app server calls the suite's
``transformInterceptedMessage`` and answers its methods; the suite's client
calls the proxy's methods and answers its transforms. :class:`Peer` owns the
calling half: pending calls by id with their deadlines, resolved by the
responses fed to it and failed as a whole when the connection goes away (the
pattern of websockets' pending pings). Routing is one rule: a payload with
``result`` or ``error`` and no ``method`` is a response, and never reaches a
dispatcher. How requests are answered is each end's business (the app server
keeps jsonrpcserver behind one module, appserver/control/rpc.py).

An :class:`Encoding` says how an envelope travels (SPEC Part 10): :data:`JSON`
in text frames, the default, or :data:`MSGPACK` in binary frames, negotiated
as the WebSocket subprotocol ``jsonrpc-msgpack``, in which a binary frame's
``data`` is raw bytes rather than Base64. JSON is written with orjson where it
can (every intercepted message is two envelopes, and a 64 KiB binary message
is 87 KB of Base64 in one), the standard library otherwise: orjson refuses
integers beyond 64 bits, which are valid JSON. JSON is read with msgspec, to
exactly the standard library's values (:func:`json_loads`); orjson would turn
such integers into floats and change a request's id.

Timeouts use one timer per peer rather than one per call: every intercepted
message is a call, and a per-call timer costs more than the rest of the
bookkeeping together.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Any, Awaitable, Callable, Mapping

import msgpack  # type: ignore[import-untyped]
import msgspec
import orjson

log = logging.getLogger(__name__)

#: The WebSocket subprotocol of a control connection whose envelopes are msgpack (SPEC Part 10).
MSGPACK_SUBPROTOCOL = "jsonrpc-msgpack"


_fast_loads = msgspec.json.Decoder().decode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_loads(text: str | bytes) -> Any:
    """Parse JSON; ValueError (or RecursionError for absurd nesting) when it is not JSON.

    msgspec reads a document to the values Python's json module gives (integers of any size stay integers,
    floats round alike, a repeated key keeps its last value) several times faster than ``json.loads`` with
    ``parse_constant``, which builds a new decoder on every call: every intercepted message is an envelope to
    read on each end. What msgspec refuses is read again by ``json.loads``, so that a lone surrogate escape, a
    BOM in bytes or ``1e400`` read as they always did, and what neither reads fails with json's own message."""
    try:
        return _fast_loads(text)
    except msgspec.MsgspecError:  # rare: every check and message of the standard library
        return json.loads(text, parse_constant=_reject_constant)


def json_dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # e.g. an integer beyond 64 bits
        return json.dumps(value, allow_nan=False, separators=(",", ":"))


class Encoding:
    """How a control connection's envelopes travel: each one a text frame of JSON, or a binary frame of msgpack.
    ``binary``: its frames are binary, and a frame's ``data`` (transformInterceptedMessage, its answer,
    injectMessage, ruleMatched) is the bytes themselves, not Base64."""

    def __init__(self, name: str, binary: bool, dumps: Callable[[Any], str | bytes],
                 loads: Callable[[Any], Any]) -> None:  # fmt: skip
        self.name = name
        self.binary = binary
        self.dumps = dumps
        #: Parse one frame's payload; ValueError when it is not of this encoding.
        self.loads = loads

    def batch(self, encoded: list[Any]) -> str | bytes:
        """Envelopes already encoded, as one batch (JSON-RPC 2.0 §6), or the one alone."""
        if len(encoded) == 1:
            return encoded[0]  # type: ignore[no-any-return]
        if self.binary:  # a msgpack array is its header followed by its items as they are encoded
            n = len(encoded)
            header = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2) if n < 65536 else b"\xdd" + n.to_bytes(4)
            return header + b"".join(encoded)
        return "[" + ",".join(encoded) + "]"

    def __repr__(self) -> str:
        return f"<Encoding {self.name}>"


def _msgpack_loads(data: Any) -> Any:
    try:
        return msgpack.unpackb(data, raw=False)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise ValueError(f"not msgpack: {exc}") from exc


def _msgpack_dumps(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


JSON = Encoding("json", False, json_dumps, json_loads)
MSGPACK = Encoding("msgpack", True, _msgpack_dumps, _msgpack_loads)
ENCODINGS = {"json": JSON, "msgpack": MSGPACK}


class RemoteError(Exception):
    """The other end answered one of our calls with a JSON-RPC error."""

    def __init__(self, error: Any) -> None:
        self.error: Mapping[str, Any] = error if isinstance(error, dict) else {"message": repr(error)}
        self.code = self.error.get("code")
        self.remote_message = str(self.error.get("message", ""))
        super().__init__(json_dumps(error) if error is not None else "error")


class PeerGone(ConnectionError):
    """The connection closed while (or before) we waited on it."""


def is_response(payload: Any) -> bool:
    return isinstance(payload, dict) and "method" not in payload and ("result" in payload or "error" in payload)


def request(request_id: Any, method: str, params: Any, encoding: Encoding = JSON) -> str | bytes:
    return encoding.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


def response(request_id: Any, result: Any, encoding: Encoding = JSON) -> str | bytes:
    return encoding.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def notification(method: str, params: Any, encoding: Encoding = JSON) -> str | bytes:
    return encoding.dumps({"jsonrpc": "2.0", "method": method, "params": params})


#: What :meth:`Peer.take` returns for a response it resolved: nothing is left to answer.
ANSWERED: Any = object()


class Peer:
    """Our calls to the other end over ``send`` (one envelope each, in ``encoding``), and their answers."""

    def __init__(self, send: Callable[[Any], Awaitable[None]], encoding: Encoding = JSON) -> None:
        self._send = send
        self.encoding = encoding
        self._pending: dict[int, tuple[asyncio.Future[Any], float]] = {}  # id → (future, deadline)
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._gone = False

    def request(self, method: str, params: Any, timeout: float) -> tuple[str | bytes, asyncio.Future[Any]]:
        """A request to send, encoded, and the future of its result (TimeoutError once ``timeout`` has passed,
        RemoteError, or PeerGone): for a caller that sends it itself and awaits the answer directly."""
        if self._gone:
            raise PeerGone("the connection is closed")
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        future: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + timeout
        self._pending[request_id] = (future, deadline)
        if self._timer is None or deadline < self._timer.when():
            self._arm(deadline)
        return request(request_id, method, params, self.encoding), future

    def withdraw(self, future: asyncio.Future[Any]) -> None:
        """A request that could not be sent: nothing waits for its answer."""
        future.cancel()
        for request_id, (pending, _) in list(self._pending.items()):
            if pending is future:
                del self._pending[request_id]

    async def call(self, method: str, params: Any, timeout: float) -> Any:
        """Send a request and return its result; TimeoutError, RemoteError or PeerGone."""
        data, future = self.request(method, params, timeout)
        try:
            await self._send(data)
        except ConnectionError as exc:
            self.withdraw(future)
            raise PeerGone(str(exc) or "the connection is closed") from exc
        return await future

    async def notify(self, method: str, params: Any) -> None:
        """Send a notification; PeerGone (a ConnectionError) when the connection is closed."""
        await self._send(notification(method, params, self.encoding))

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        """Fail the calls that are overdue and forget those nobody waits for; re-arm for the earliest deadline
        left."""
        self._timer = None
        now = asyncio.get_running_loop().time()
        for request_id, (future, deadline) in list(self._pending.items()):
            if future.done():  # its caller was cancelled
                del self._pending[request_id]
            elif deadline <= now:
                del self._pending[request_id]
                future.set_exception(TimeoutError())
        if self._pending:
            self._arm(min(deadline for _, deadline in self._pending.values()))

    def take(self, data: str | bytes) -> Any:
        """Take a received envelope: a response resolves its call (:data:`ANSWERED` is returned); anything else
        (a request, notification or batch, parsed) is returned for the caller to answer. ValueError when it
        does not parse."""
        payload = self.encoding.loads(data)
        return ANSWERED if self.feed(payload) else payload

    def feed(self, payload: Any) -> bool:
        """Take a parsed payload: True if it was a response (now resolved or ignored), else False
        (a request, notification or batch: the caller's to answer)."""
        if not is_response(payload):
            return False
        future, _ = self._pending.pop(payload.get("id"), (None, 0.0))
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
        pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(PeerGone(why))
