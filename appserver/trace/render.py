"""How the trace shows what it kept (record.py): a frame's type, size, Ably action and channel, its data up to
the limit (text, or Base64), who decided it; worked out when events are read, not when they are recorded."""

from __future__ import annotations

import base64
from typing import Any

from appserver.verdict import Delay, Drop, Pass, Replace, Verdict, split
from shared import ably
from shared.wire import Frame, MessageType


def frame_fields(frame: Frame, data_limit: int, kept: bool = False) -> dict[str, Any]:
    """A frame as the trace shows it: its type, size, Ably action and channel, its data up to the limit.
    ``kept``: the data as cut (``_data``, rendered later by :func:`shown`), for what a trace keeps."""
    data = frame.data
    binary = frame.type is MessageType.BINARY
    raw = data if isinstance(data, bytes) else data.encode("utf-8")
    fields: dict[str, Any] = {"type": frame.type.value, "size": len(raw)}
    try:
        message = ably.decode(data, ably.Format.for_frame(binary))
    except ably.DecodeError:
        message = None
    if message is not None:
        action = message.get("action")
        if isinstance(action, int):
            fields["action"] = ably.action_name(action)
        if isinstance(message.get("channel"), str):
            fields["channel"] = message["channel"]
    if kept:
        fields["_data"] = raw[:data_limit] if binary else data[:data_limit]  # at most 4 bytes a character
    else:
        fields.update(body_fields(raw if binary else data, data_limit))
    return fields


def shown(fields: dict[str, Any], data_limit: int) -> dict[str, Any]:
    """What frame_fields(…, kept=True) kept, as the trace shows it."""
    out = {k: v for k, v in fields.items() if k != "_data"}
    out.update(body_fields(fields["_data"], data_limit, fields["size"]))
    return out


def body_fields(data: str | bytes, data_limit: int, size: int | None = None) -> dict[str, Any]:
    """``data`` (text) or ``dataBase64``, cut to the limit (``truncated`` then says so); ``size``: of the
    whole, when ``data`` was cut already."""
    if isinstance(data, str):
        cut = data.encode("utf-8")[:data_limit].decode("utf-8", "ignore") if len(data) * 4 > data_limit else data
        fields: dict[str, Any] = {"data": cut}
        whole = len(cut) == len(data)
    else:
        fields = {"dataBase64": base64.b64encode(data[:data_limit]).decode("ascii")}
        whole = len(data) <= data_limit
    if not whole or size is not None and size > data_limit:
        fields["truncated"] = True
    return fields


def text_or_bytes(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def who_decided(by: str | None) -> dict[str, str]:
    """Who decided a frame: ``ruleId`` (a rule), ``by: "suite"`` (asked) or ``"suppressed"`` (its direction
    is, by suppressOnwards), nothing (nobody: it passed)."""
    if by is None:
        return {}
    return {"by": by} if by in ("suite", "suppressed") else {"ruleId": by}


def fate_name(verdict: Verdict) -> tuple[str, list[str]]:
    """What became of a frame ("pass", "drop", "replace", "delay 20 ms"), and its side effects' names."""
    fate, effects = split(verdict)
    if isinstance(fate, Pass):
        name = "pass"
    elif isinstance(fate, Drop):
        name = "drop"
    elif isinstance(fate, Replace):
        name = "replace"
    elif isinstance(fate, Delay):
        name = f"delay {fate.ms} ms"
    else:
        name = type(fate).__name__.lower()
    return name, [type(effect).__name__.lower() for effect in effects]


#: At most this many changed paths are listed for one replaced frame.
MAX_CHANGES = 20


def changes(before: Frame, after: Frame) -> dict[str, list[Any]] | None:
    """What a replacement changed in the decoded Ably message, by dotted path: ``{path: [old, new]}`` (None
    for a path absent on that side); None when either side is not an Ably message."""
    try:
        old = ably.decode(before.data, ably.Format.for_frame(before.type is MessageType.BINARY))
        new = ably.decode(after.data, ably.Format.for_frame(after.type is MessageType.BINARY))
    except ably.DecodeError:
        return None
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None
    out: dict[str, list[Any]] = {}
    _diff(old, new, "", out)
    return out


def _diff(old: Any, new: Any, path: str, out: dict[str, list[Any]]) -> None:
    if len(out) >= MAX_CHANGES:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            _diff(old.get(key), new.get(key), f"{path}.{key}" if path else str(key), out)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new)):
            _diff(a, b, f"{path}.{index}" if path else str(index), out)
    elif old != new:
        out[path] = [_json_safe(old), _json_safe(new)]


def _json_safe(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return value


def plain(headers: Any) -> dict[str, str]:
    """Headers with plain str names (aiohttp's are a str subclass, which orjson does not take as keys)."""
    pairs = headers.items() if hasattr(headers, "items") else headers
    return {str(name): str(value) for name, value in pairs}
