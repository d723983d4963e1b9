"""One-line summaries of Ably protocol messages for logs (``describe``, ``summarize``), and the
names of actions and flags; re-exported by shared.ably, whose codec they use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from shared.ably import Action, DecodeError, Flag, Format, type_name, decode

_SUMMARY_FIELDS: Final = ("channel", "connectionId", "msgSerial", "count", "channelSerial")
_SUMMARY_LISTS: Final = ("messages", "presence", "annotations", "state")
_MAX_VALUE_CHARS: Final = 60
_MAX_REASON_CHARS: Final = 160
_KNOWN_FLAG_BITS: Final = sum(flag.value for flag in Flag)


def action_name(action: int) -> str:
    """The action's name, or ``UNKNOWN(n)`` for a number ably-js does not define."""
    try:
        return Action(action).name
    except ValueError:
        return f"UNKNOWN({action})"


def flag_names(flags: int) -> str:
    """Set flags as ``A|B``, unknown bits as hex, ``0`` when none are set."""
    names = [flag.name for flag in Flag if flags & flag and flag.name]
    unknown = flags & ~_KNOWN_FLAG_BITS
    if unknown:
        names.append(hex(unknown))
    return "|".join(names) or "0"


def describe(data: str | bytes, fmt: Format | None = None) -> str:
    """A one-line summary of a frame for logs; never raises."""
    try:
        return _describe(data, fmt)
    except Exception as exc:  # noqa: BLE001 - a log line must never break the proxy
        return f"undescribable frame: {_short(repr(exc), _MAX_REASON_CHARS)}"


def _describe(data: str | bytes, fmt: Format | None) -> str:
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, str | bytes):
        return f"undecodable frame: payload is {type_name(data)}, not str or bytes"
    kind = "text" if isinstance(data, str) else "binary"
    if fmt is None:
        fmt = Format.JSON if isinstance(data, str) else Format.MSGPACK
    try:
        message = decode(data, fmt)
    except DecodeError as exc:
        reason = _short(str(exc), _MAX_REASON_CHARS)
        return f"undecodable {kind} frame ({_byte_length(data)} bytes): {reason}"
    return summarize(message)


def summarize(message: Mapping[str, Any]) -> str:
    """A one-line summary of a decoded protocol message."""
    parts = [_action_label(message.get("action"))]
    parts += [f"{f}={_short(message[f])}" for f in _SUMMARY_FIELDS if f in message]
    if "flags" in message:
        parts.append(f"flags={_flags_label(message['flags'])}")
    for field in _SUMMARY_LISTS:
        if field in message:
            value = message[field]
            parts.append(f"{field}={len(value) if isinstance(value, list) else _short(value)}")
    if message.get("error") is not None:
        parts.append(_error_label(message["error"]))
    return " ".join(parts)


def _action_label(action: Any) -> str:
    if action is None:
        return "NO_ACTION"
    if isinstance(action, int) and not isinstance(action, bool):
        return action_name(action)
    return f"INVALID_ACTION({_short(repr(action))})"


def _flags_label(flags: Any) -> str:
    if isinstance(flags, int) and not isinstance(flags, bool):
        return flag_names(flags)
    return _short(flags)


def _error_label(error: Any) -> str:
    if not isinstance(error, Mapping):
        return f"error={_short(error)}"
    keys = ("code", "statusCode", "message")
    shown = [f"{key}={_short(error[key])}" for key in keys if key in error]
    return " ".join(shown) or "error={}"


def _short(value: Any, limit: int = _MAX_VALUE_CHARS) -> str:
    """value on one line, at most limit characters."""
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    text = value if isinstance(value, str) else repr(value)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    if len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def _byte_length(data: str | bytes) -> int:
    if isinstance(data, str):
        return len(data.encode("utf-8", "surrogatepass"))
    return len(data)
