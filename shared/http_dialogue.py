"""The client library's side of the HTTP dialogue (SPEC Part 4): what transform callbacks get and return.

    ctx.transform_http_request = lambda req: respond(503) if req.path == "/time" else None
    ctx.transform_http_response = lambda res: replace_response(json={**res.decoded, "extra": 1})

A request or response callback gets an :class:`HttpExchange` whose ``decoded``
is its body as JSON or msgpack (by its Content-Type), or None. It returns None
to pass it on unchanged, or one of the answers built here.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

import msgpack  # type: ignore[import-untyped]


@dataclass
class HttpExchange:
    """One intercepted HTTP request (``method``, ``url``) or response (``status``), with its body."""

    id: str
    headers: dict[str, str]
    body: bytes
    method: str | None = None
    url: str | None = None
    status: int | None = None
    rule_id: str | None = None
    _decoded: Any = field(default=None, repr=False)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> HttpExchange:
        return cls(id=str(params["id"]), headers=dict(params.get("headers") or {}),
                   body=base64.b64decode(params.get("body") or ""), method=params.get("method"),
                   url=params.get("url"), status=params.get("status"), rule_id=params.get("ruleId"))  # fmt: skip

    @property
    def path(self) -> str:
        return urlsplit(self.url or "").path

    @property
    def content_type(self) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")

    @property
    def decoded(self) -> Any:
        """The body as JSON (application/json) or msgpack (application/x-msgpack), else None."""
        kind = self.content_type.lower()
        try:
            if "json" in kind:
                return json.loads(self.body)
            if "msgpack" in kind:
                return msgpack.unpackb(self.body)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return None
        return None


def _body(json_value: Any = None, body: str | bytes | None = None, has_json: bool = False) -> dict[str, Any]:
    if has_json:
        return {"json": json_value}
    if isinstance(body, bytes):
        return {"bodyBase64": base64.b64encode(body).decode("ascii")}
    if body is not None:
        return {"body": body}
    return {}


_NO_JSON: Any = object()


def respond(status: int, *, json: Any = _NO_JSON, body: str | bytes | None = None,
            headers: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Answer the request here: the upstream is not contacted."""
    response: dict[str, Any] = {"status": status, **_body(json, body, json is not _NO_JSON)}
    if headers is not None:
        response["headers"] = dict(headers)
    return {"action": "respond", "response": response}


def replace_request(*, method: str | None = None, url: str | None = None, headers: Mapping[str, str] | None = None,
                    json: Any = _NO_JSON, body: str | bytes | None = None) -> dict[str, Any]:  # fmt: skip
    request: dict[str, Any] = {**_body(json, body, json is not _NO_JSON)}
    if method is not None:
        request["method"] = method
    if url is not None:
        request["url"] = url
    if headers is not None:
        request["headers"] = dict(headers)
    return {"action": "replace", "request": request}


def replace_response(*, status: int | None = None, headers: Mapping[str, str] | None = None, json: Any = _NO_JSON,
                     body: str | bytes | None = None) -> dict[str, Any]:  # fmt: skip
    response: dict[str, Any] = {**_body(json, body, json is not _NO_JSON)}
    if status is not None:
        response["status"] = status
    if headers is not None:
        response["headers"] = dict(headers)
    return {"action": "replace", "response": response}


def drop(mode: str = "reset") -> dict[str, Any]:
    """No response: "reset" closes the client's connection, "hang" never answers."""
    return {"action": "drop", "mode": mode}


PASS: dict[str, Any] = {"action": "pass"}
