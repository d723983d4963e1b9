"""The suite's HTTP dialogue (SPEC Part 4): transformInterceptedHttpRequest / …Response params and answers.

Params carry the body as Base64; answers write bodies the way rules do: ``body``
(text), ``json`` (a value) or ``bodyBase64``. An answer that cannot be used
raises :class:`WireError`; the caller then passes the request or response on
unchanged, with an ERROR log (as for WebSocket transforms).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Mapping

import orjson

from appserver.verdict import HttpDrop, HttpResponse, HttpVerdict, RequestEdit
from shared.connections import ConnectionOpened
from shared.wire import WireError

#: The Content-Type a body gets when the answer names none, by how it was written (as for rules).
CONTENT_TYPES = {"json": "application/json", "body": "text/plain; charset=utf-8",
                 "bodyBase64": "application/octet-stream"}  # fmt: skip


def request_params(exchange_id: str, info: ConnectionOpened, method: str, body: bytes | None,
                   rule_id: str | None) -> dict[str, Any]:  # fmt: skip
    params: dict[str, Any] = {"id": exchange_id, "connectionID": info.id, "method": method, "url": info.url, "headers": info.headers,
                              "body": base64.b64encode(body or b"").decode("ascii")}  # fmt: skip
    if rule_id is not None:
        params["ruleId"] = rule_id
    return params


def response_params(exchange_id: str, info: ConnectionOpened, response: HttpResponse) -> dict[str, Any]:
    return {"id": exchange_id, "connectionID": info.id, "status": response.status, "headers": dict(response.headers),
            "body": base64.b64encode(response.body).decode("ascii")}  # fmt: skip


def parse_request_answer(answer: Any) -> HttpVerdict | None:
    """None: pass the request on as it is."""
    action = _action(answer, ("pass", "replace", "respond", "drop"))
    if action == "pass":
        return None
    if action == "drop":
        return HttpVerdict(drop=HttpDrop(_mode(answer)))
    if action == "respond":
        return HttpVerdict(respond=parse_response(answer.get("response"), "response"))
    request = answer.get("request")
    if not isinstance(request, dict):
        raise WireError("request", "must be an object with method, url, headers and/or a body")
    method, url = request.get("method"), request.get("url")
    if method is not None and not isinstance(method, str) or url is not None and not isinstance(url, str):
        raise WireError("request", "'method' and 'url' must be strings")
    headers = _headers(request.get("headers"), "request.headers") if "headers" in request else None
    return HttpVerdict(request=RequestEdit(method, url, headers, body_of(request, "request")))


def parse_response_answer(answer: Any, original: HttpResponse) -> HttpResponse | HttpDrop:
    action = _action(answer, ("pass", "replace", "drop"))
    if action == "pass":
        return original
    if action == "drop":
        return HttpDrop(_mode(answer))
    return parse_response(answer.get("response"), "response", original)


def parse_response(value: Any, field: str, base: HttpResponse | None = None) -> HttpResponse:
    if not isinstance(value, dict):
        raise WireError(field, "must be an object with status, headers and/or a body")
    status = value.get("status", base.status if base else None)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise WireError(f"{field}.status", "must be an HTTP status")
    headers = _headers(value["headers"], f"{field}.headers") if "headers" in value else (base.headers if base else ())
    body = body_of(value, field)
    if body is None:
        return HttpResponse(status, headers, base.body if base else b"")
    if not any(name.lower() == "content-type" for name, _ in _headers(value.get("headers", {}), field)):
        kind = CONTENT_TYPES[next(k for k in ("bodyBase64", "json", "body") if k in value)]
        headers = (*((n, v) for n, v in headers if n.lower() != "content-type"), ("Content-Type", kind))
    return HttpResponse(status, headers, body)


def body_of(value: Mapping[str, Any], field: str) -> bytes | None:
    """``body`` (text), ``json`` (a value) or ``bodyBase64``; None when none is given."""
    if "bodyBase64" in value:
        try:
            return base64.b64decode(value["bodyBase64"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise WireError(f"{field}.bodyBase64", "must be Base64") from None
    if "json" in value:
        return orjson.dumps(value["json"])
    if "body" in value:
        if not isinstance(value["body"], str):
            raise WireError(f"{field}.body", "must be text (use bodyBase64 for bytes, json for a value)")
        return str(value["body"]).encode()
    return None


def _action(answer: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(answer, dict) or answer.get("action") not in allowed:
        raise WireError("action", f"must be one of {', '.join(map(repr, allowed))}")
    return str(answer["action"])


def _mode(answer: Mapping[str, Any]) -> str:
    mode = answer.get("mode", "reset")
    if mode not in ("reset", "hang"):
        raise WireError("mode", "must be 'reset' or 'hang'")
    return str(mode)


def _headers(value: Any, field: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise WireError(field, "must be an object of header names to text values")
    return tuple(value.items())
