"""The rule actions of HTTP exchanges (SPEC Part 4): respond, replaceResponse, patchResponse.

Registered, with the others, in actions.ACTIONS.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from appserver.rules import schema as s
from appserver.rules.schema import RuleError
from appserver.rules.engine import Subject
from appserver.verdict import HttpResponse, ResponseEdit

Part = Any


def _body(config: s.RespondAction | s.ReplaceResponseAction, where: str) -> tuple[bytes | None, str | None]:
    """The body a respond or replaceResponse writes, and its default Content-Type."""
    given = [name for name in ("body", "json", "bodyBase64")
             if getattr(config, name) is not msgspec.UNSET and getattr(config, name) is not None
             or (name == "json" and config.json is None)]  # fmt: skip
    if len(given) > 1:
        raise RuleError(f"{where}: give one of 'body', 'json' and 'bodyBase64', not {' and '.join(given)}")
    if config.bodyBase64 is not None:
        try:
            return base64.b64decode(config.bodyBase64, validate=True), "application/octet-stream"
        except (binascii.Error, ValueError):
            raise RuleError(f"{where}.bodyBase64: must be Base64") from None
    if config.json is not msgspec.UNSET:
        return orjson.dumps(config.json), "application/json"
    if config.body is not None:
        return config.body.encode(), "text/plain; charset=utf-8"
    return None, None


def _headers(headers: dict[str, str] | None, content_type: str | None) -> tuple[tuple[str, str], ...]:
    given = dict(headers or {})
    if content_type is not None and not any(k.lower() == "content-type" for k in given):
        given["Content-Type"] = content_type
    return tuple(given.items())


def respond(config: s.RespondAction, where: str, event: str) -> Callable[[Subject], Part]:
    if not 100 <= config.status <= 599:
        raise RuleError(f"{where}.status: must be an HTTP status, got {config.status}")
    body, content_type = _body(config, where)
    response = HttpResponse(config.status, _headers(config.headers, content_type), body or b"")
    return lambda subject: response


def replace_response(config: s.ReplaceResponseAction, where: str, event: str) -> Callable[[Subject], Part]:
    body, content_type = _body(config, where)
    edit = ResponseEdit(config.status, _headers(config.headers, content_type), body)
    return lambda subject: edit


def patch_response(config: s.PatchResponseAction, where: str, event: str) -> Callable[[Subject], Part]:
    sets = tuple((tuple(k.split(".")), v) for k, v in (config.set or {}).items())
    unsets = tuple(tuple(k.split(".")) for k in config.unset or [])
    if not (sets or unsets or config.status or config.headers):
        raise RuleError(f"{where}: a patchResponse needs 'set', 'unset', 'status' or 'headers'")
    edit = ResponseEdit(config.status, tuple((config.headers or {}).items()), None, sets, unsets)
    return lambda subject: edit
