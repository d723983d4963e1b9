"""The control API's methods, behind jsonrpcserver (the only module that imports it).

Errors are mapped to JSON-RPC codes here and nowhere else: a ProxyError
carries its code; a WireError is -32602 naming the field.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Awaitable, Callable, Protocol

from jsonrpcserver import Error, Result, Success
from jsonrpcserver.async_main import dispatch_to_serializable

from appserver.control import ControlSession
from appserver.errors import InterceptionFailed, InvalidParams, ProxyError
from appserver.launcher import LaunchError, ProxyMode
from appserver.lifecycle import Side
from appserver.registry import Registry
from appserver.relay import next_message_id
from shared.constants import (
    METHOD_CLOSE_CONNECTION,
    METHOD_INJECT,
    METHOD_MITMPROXY_READY,
    METHOD_START_INTERCEPTION,
)
from shared import jsonfast
from shared.wire import InjectRequest, WireError, require

log = logging.getLogger(__name__)


class Launcher(Protocol):
    """Starts mitmproxy with the redirector (launcher.py); the seam startInterception uses."""

    async def ensure(self, mode: ProxyMode, pid: int | None = None) -> None: ...
    def notify_ready(self) -> None: ...
    async def stop(self) -> None: ...


Method = Callable[..., Awaitable[Result]]

MODE_NONE = "none"
START_MODES = (ProxyMode.PROXY.value, ProxyMode.LOCAL.value, MODE_NONE)


def _guarded(method: Callable[..., Awaitable[Any]]) -> Method:
    @functools.wraps(method)
    async def wrapper(session: ControlSession, **params: Any) -> Result:
        try:
            return Success(await method(session, **params))
        except WireError as exc:
            return Error(InvalidParams.code, f"Invalid params: {exc}", {"field": exc.field})
        except ProxyError as exc:
            return Error(exc.code, str(exc))

    return wrapper


def make_methods(registry: Registry, launcher_of: Callable[[], Launcher | None]) -> dict[str, Method]:
    """The methods dict, bound to this app server's registry and (once it listens) launcher."""

    async def start_interception(session: ControlSession, **params: Any) -> dict[str, Any]:
        launcher = launcher_of()
        # Without a launcher (--no-mitmproxy, direct mode) there is no mode to choose: {} will do.
        mode = params.get("mode", MODE_NONE if launcher is None else None)
        if mode not in START_MODES:
            problem = "is required" if mode is None else f"must be one of {', '.join(map(repr, START_MODES))}"
            raise WireError("mode", f"{problem}: 'proxy' (mitmproxy as an HTTP proxy), 'local' (with 'pid': capture "
                                    "that process) or 'none' (start no mitmproxy: direct mode)")  # fmt: skip
        pid = require(params, "pid", int) if mode == ProxyMode.LOCAL.value else None
        if pid is not None and pid <= 0:
            raise WireError("pid", "must be a positive process id")
        was_active = registry.interception.active is session
        registry.interception.claim(session)
        if launcher is not None and mode != MODE_NONE:
            try:
                await launcher.ensure(ProxyMode(mode), pid)
            except LaunchError as exc:
                if not was_active:
                    registry.interception.release(session)
                raise InterceptionFailed(f"could not start mitmproxy in {mode} mode: {exc}") from exc
        return {}

    async def inject_message(session: ControlSession, **params: Any) -> dict[str, Any]:
        request = InjectRequest.from_json(params)
        await registry.connection(request.connection_id).inject(request.frame, request.from_client)
        return {"id": next_message_id()}

    async def close_connection(session: ControlSession, **params: Any) -> dict[str, Any]:
        connection = registry.connection(require(params, "connectionID", str))
        side = params.get("side", "both")
        sides = {"client": (Side.CLIENT,), "server": (Side.SERVER,), "both": (Side.CLIENT, Side.SERVER)}
        if side not in sides:
            raise WireError("side", "must be 'client', 'server' or 'both'")
        code = require(params, "code", int) if params.get("code") is not None else None
        reason = require(params, "reason", str) if params.get("reason") is not None else ""
        abrupt = require(params, "abrupt", bool) if params.get("abrupt") is not None else False
        try:
            await connection.close(sides[side], code, reason, abrupt)
        except ValueError as exc:
            raise WireError("code" if code is not None else "reason", f"is not sendable: {exc}") from exc
        return {}

    async def mitmproxy_ready(session: ControlSession, **params: Any) -> dict[str, Any]:
        log.info("mitmproxy reports it is ready")
        launcher = launcher_of()
        if launcher is not None:
            launcher.notify_ready()
        return {}

    return {
        METHOD_START_INTERCEPTION: _guarded(start_interception),
        METHOD_INJECT: _guarded(inject_message),
        METHOD_CLOSE_CONNECTION: _guarded(close_connection),
        METHOD_MITMPROXY_READY: _guarded(mitmproxy_ready),
    }


_JSON_TYPES = ((bool, "a boolean"), (str, "a string"), ((int, float), "a number"), (list, "an array"),
               (dict, "an object"), (type(None), "null"))  # bool before int: True is an int in Python


def json_type_name(value: Any) -> str:
    return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


def readable_id(item: Any) -> Any:
    """The request's id if it can be read (a string or a number, JSON-RPC 2.0 §4), else None."""
    if isinstance(item, dict):
        request_id = item.get("id")
        if isinstance(request_id, (str, int, float)) and not isinstance(request_id, bool):
            return request_id
    return None


def envelope_error(item: Any) -> dict[str, Any] | None:
    """The error answer for an object that is not a JSON-RPC 2.0 request we can dispatch, else None.

    jsonrpcserver checks the envelope with a schema and answers every failure -32600 with id null;
    a caller whose id we could read would then wait for an answer that never names its call.
    """
    def error(code: int, message: str) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": readable_id(item)}

    if not isinstance(item, dict):
        return error(-32600, f"Invalid Request: expected an object, got {json_type_name(item)}")
    if item.get("jsonrpc") != "2.0":
        return error(-32600, "Invalid Request: 'jsonrpc' must be \"2.0\"")
    if not isinstance(item.get("method"), str):
        return error(-32600, "Invalid Request: 'method' must be a string")
    if "id" in item and readable_id(item) is None and item["id"] is not None:
        return error(-32600, f"Invalid Request: 'id' must be a string or a number, got {json_type_name(item['id'])}")
    extra = sorted(set(item) - {"jsonrpc", "method", "params", "id"})
    if extra:
        return error(-32600, f"Invalid Request: unexpected member {extra[0]!r}")
    if "params" in item and not isinstance(item["params"], dict):
        return error(-32602, f"Invalid params: expected an object, got {json_type_name(item['params'])}")
    return None


def make_dispatch(methods: dict[str, Method]) -> Callable[[ControlSession, Any], Awaitable[str]]:
    """A dispatcher for ControlSession: a parsed payload in, reply text out ("" for none).

    A batch's requests are checked and dispatched one by one, so one bad request gets its own
    error beside its neighbours' answers (JSON-RPC 2.0 §6).
    """

    async def one(session: ControlSession, item: Any) -> Any:
        error = envelope_error(item)
        if error is not None:
            return error
        return await dispatch_to_serializable("", methods=methods, context=session, deserializer=lambda _: item)

    async def dispatch(session: ControlSession, parsed: Any) -> str:
        if isinstance(parsed, list):
            if not parsed:
                return jsonfast.dumps({"jsonrpc": "2.0", "error": {"code": -32600, "message":
                                       "Invalid Request: an empty batch"}, "id": None})  # fmt: skip
            answers = [a for a in await asyncio.gather(*(one(session, item) for item in parsed)) if a is not None]
            return jsonfast.dumps(answers) if answers else ""
        answer = await one(session, parsed)
        return "" if answer is None else jsonfast.dumps(answer)

    return dispatch
