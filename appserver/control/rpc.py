"""The control API's JSON-RPC dispatch: jsonrpcserver behind this one module.

Envelopes are checked here first, so that every request whose id can be read
is answered with that id; errors are mapped to JSON-RPC codes here and nowhere
else: a ProxyError carries its code, a WireError is -32602 naming the field.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Awaitable, Callable

from jsonrpcserver import Error, Result, Success
from jsonrpcserver.async_main import dispatch_to_serializable

from appserver.control.methods import Method
from appserver.control.params import unknown_message, unknown_parameter
from appserver.control.socket import ControlSocket
from appserver.errors import InvalidParams, ProxyError
from appserver.rules.schema import RuleError
from shared.wire import WireError


#: Methods only the redirector calls: not listed to a suite that misspelt one.
INTERNAL = frozenset({"mitmproxyReady"})


def _guarded(name: str, method: Method) -> Callable[..., Awaitable[Result]]:
    @functools.wraps(method)
    async def wrapper(session: ControlSocket, **params: Any) -> Result:
        unknown = unknown_parameter(name, params)
        if unknown is not None:
            return Error(InvalidParams.code, f"Invalid params: {unknown_message(name, unknown)}", {"field": unknown})
        try:
            return Success(await method(session, **params))
        except WireError as exc:
            return Error(InvalidParams.code, f"Invalid params: {exc}", {"field": exc.field})
        except RuleError as exc:
            return Error(InvalidParams.code, f"Invalid params: {exc}")
        except ProxyError as exc:
            return Error(exc.code, str(exc))

    return wrapper


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


def make_dispatch(plain: dict[str, Method]) -> Callable[[ControlSocket, Any], Awaitable[Any]]:
    """A dispatcher for ControlSocket: a parsed payload in, the reply out (None for none), which the socket encodes.

    A batch's requests are checked and dispatched one by one, so one bad request gets its own
    error beside its neighbours' answers (JSON-RPC 2.0 §6).
    """

    methods = {name: _guarded(name, method) for name, method in plain.items()}
    known = ", ".join(sorted(m for m in methods if m not in INTERNAL))

    async def one(session: ControlSocket, item: Any) -> Any:
        error = envelope_error(item)
        if error is not None:
            return error
        answer = await dispatch_to_serializable("", methods=methods, context=session, deserializer=lambda _: item)
        if item["method"] not in methods and isinstance(answer, dict) and "error" in answer:
            answer["error"]["message"] = f"Method not found: {item['method']!r} (the control API has: {known})"
        return answer

    async def dispatch(session: ControlSocket, parsed: Any) -> Any:
        if isinstance(parsed, list):
            if not parsed:
                return {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request: an empty batch"},
                        "id": None}  # fmt: skip
            answers = [a for a in await asyncio.gather(*(one(session, item) for item in parsed)) if a is not None]
            return answers or None
        return await one(session, parsed)

    return dispatch
