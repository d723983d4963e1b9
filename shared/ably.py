"""Codec for Ably realtime protocol messages, as carried in WebSocket frames.

An Ably realtime connection carries one *protocol message* per WebSocket
frame: a map with an integer ``action`` and optional fields such as
``channel``, ``msgSerial``, ``messages``, ``presence``, ``connectionDetails``,
``error`` and ``flags``. The client chooses the format when it connects:
JSON in text frames or msgpack in binary frames.

This module turns frames into plain dicts with Ably's wire field names and
back, and renders one-line summaries for logs. It does no I/O. The numbers
and names of ``Action`` and ``Flag`` follow ably-js 2.x
(``src/common/lib/types/protocolmessagecommon.ts``, as released in 2.17.1).

Decoding is faithful to the wire: nothing is renamed, converted or dropped,
so ``encode(decode(frame))`` carries the same message. Encoding to JSON adds
one convenience taken from ably-js (``encodeDataForWire``): bytes in
``messages[].data`` or ``presence[].data`` are sent base64-encoded with
``base64`` appended to that message's ``encoding``. Bytes anywhere else
cannot be carried by JSON and raise ``EncodeError``. The one-line summaries
logs use (``describe``, ``summarize``, ``action_name``, ``flag_names``) are at
the end, in this module: they need the codec, and the codec needs nothing of them.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Mapping
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]
import msgspec

__all__ = [
    "Action",
    "DecodeError",
    "EncodeError",
    "Flag",
    "Format",
    "action_name",
    "decode",
    "describe",
    "encode",
    "flag_names",
    "summarize",
]


class DecodeError(ValueError):
    """A frame is not a protocol message in the given format."""


class EncodeError(ValueError):
    """A message cannot be written in the requested format."""


class Action(enum.IntEnum):
    """Protocol message actions (ably-js ``actions``)."""

    HEARTBEAT = 0
    ACK = 1
    NACK = 2
    CONNECT = 3
    CONNECTED = 4
    DISCONNECT = 5
    DISCONNECTED = 6
    CLOSE = 7
    CLOSED = 8
    ERROR = 9
    ATTACH = 10
    ATTACHED = 11
    DETACH = 12
    DETACHED = 13
    PRESENCE = 14
    MESSAGE = 15
    SYNC = 16
    AUTH = 17
    ACTIVATE = 18
    OBJECT = 19  # named STATE before LiveObjects shipped
    OBJECT_SYNC = 20  # named STATE_SYNC before LiveObjects shipped
    ANNOTATION = 21


class Flag(enum.IntFlag):
    """Protocol message flags (ably-js ``flags``): attach state, then channel modes."""

    HAS_PRESENCE = 1 << 0
    HAS_BACKLOG = 1 << 1
    RESUMED = 1 << 2
    TRANSIENT = 1 << 4
    ATTACH_RESUME = 1 << 5
    HAS_OBJECTS = 1 << 7
    PRESENCE = 1 << 16
    PUBLISH = 1 << 17
    SUBSCRIBE = 1 << 18
    PRESENCE_SUBSCRIBE = 1 << 19
    ANNOTATION_PUBLISH = 1 << 21
    ANNOTATION_SUBSCRIBE = 1 << 22
    OBJECT_SUBSCRIBE = 1 << 24
    OBJECT_PUBLISH = 1 << 25
    MODE_ALL = (
        PRESENCE
        | PUBLISH
        | SUBSCRIBE
        | PRESENCE_SUBSCRIBE
        | ANNOTATION_PUBLISH
        | ANNOTATION_SUBSCRIBE
        | OBJECT_SUBSCRIBE
        | OBJECT_PUBLISH
    )


class Format(enum.Enum):
    """Wire format of a connection; fixed per connection by the client."""

    JSON = "json"
    MSGPACK = "msgpack"

    @classmethod
    def for_frame(cls, is_binary: bool) -> Format:
        """The format a frame is in: binary frames carry msgpack, text frames JSON."""
        return cls.MSGPACK if is_binary else cls.JSON


# Fields whose entries may carry binary `data` that JSON must base64-encode.
_DATA_LISTS: Final = ("messages", "presence")
# describe(): scalar fields shown as name=value, in this order.
# describe(): list fields shown as name=<length>.
# Iterating an IntFlag yields only its single-bit members (not MODE_ALL).


# --- decoding ---------------------------------------------------------------


def decode(data: str | bytes, fmt: Format) -> dict[str, Any]:
    """Decode one frame's payload into a protocol message dict."""
    value = _decode_json(data) if fmt is Format.JSON else _decode_msgpack(data)
    if not isinstance(value, dict):
        raise DecodeError(f"top-level value is {type_name(value)}, not a map")
    bad_keys = [key for key in value if not isinstance(key, str)]
    if bad_keys:
        raise DecodeError(f"top-level map has a non-string key {bad_keys[0]!r}")
    return value


def _decode_json(data: str | bytes) -> Any:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"JSON frame is not UTF-8: {exc}") from exc
    try:
        try:
            return _fast_json(data)  # as json.loads reads it (see shared/jsonrpc.py's json_loads), faster
        except msgspec.MsgspecError:  # what msgspec refuses, json.loads decides, with its own message
            return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"invalid JSON: {_reason(exc)}") from exc


_fast_json = msgspec.json.Decoder().decode


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; Ably (and JSON) does not.
    raise ValueError(f"{name} is not valid JSON")




def _decode_msgpack(data: str | bytes) -> Any:
    if isinstance(data, str):
        raise DecodeError("msgpack needs a binary frame, got text")
    try:
        # strict_map_key=False: nested maps with non-string keys are valid
        # msgpack and must reach the test suite rather than fail the frame.
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"invalid msgpack: {_reason(exc)}") from exc


# --- encoding ---------------------------------------------------------------


def encode(message: Mapping[str, Any], fmt: Format) -> str | bytes:
    """Encode a protocol message: JSON text or msgpack bytes."""
    if fmt is Format.MSGPACK:
        return _encode_msgpack(message)
    return _encode_json(message)


def _encode_msgpack(message: Mapping[str, Any]) -> bytes:
    try:
        packed: bytes = msgpack.packb(dict(message), use_bin_type=True)
    except (TypeError, ValueError, OverflowError, msgpack.PackException) as exc:
        raise EncodeError(f"cannot encode as msgpack: {_reason(exc)}") from exc
    return packed


def _encode_json(message: Mapping[str, Any]) -> str:
    wire = _base64_data(message)
    try:
        path = _find_bytes(wire, "")
        if path is None:
            return json.dumps(wire, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(f"cannot encode as JSON: {_reason(exc)}") from exc
    raise EncodeError(f"JSON cannot carry bytes (at {path}); use msgpack")


def _base64_data(message: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of message with bytes `data` in messages/presence base64-encoded."""
    wire = dict(message)
    for field in _DATA_LISTS:
        entries = wire.get(field)
        if isinstance(entries, list):
            wire[field] = [_base64_entry(entry) for entry in entries]
    return wire


def _base64_entry(entry: Any) -> Any:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("data"), bytes | bytearray):
        return entry
    encoding = entry.get("encoding")
    return {
        **entry,
        "data": base64.b64encode(entry["data"]).decode("ascii"),
        "encoding": f"{encoding}/base64" if encoding else "base64",
    }


def _find_bytes(value: Any, path: str) -> str | None:
    """The path of the first bytes value inside value, or None."""
    if isinstance(value, bytes | bytearray | memoryview):
        return path
    if isinstance(value, Mapping):
        children: Any = ((f"{path}.{key}" if path else str(key), v) for key, v in value.items())
    elif isinstance(value, list | tuple):
        children = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for child_path, child in children:
        found = _find_bytes(child, child_path)
        if found is not None:
            return found
    return None


def _reason(exc: BaseException) -> str:
    """exc's message, or its class name when it has none (msgpack's FormatError)."""
    return str(exc) or type(exc).__name__


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# -- one-line summaries for logs (describe, summarize), and the names of actions and flags --------------

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
