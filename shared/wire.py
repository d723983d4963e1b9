"""The JSON-RPC payloads of the contract (SPEC.md), as frozen dataclasses.

Both the app server and the test-suite client build and parse these, so the
shape of every params and result object is written down exactly once.
Parsing raises :class:`WireError` naming the offending field.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass
from typing import Any, Mapping

from shared import ably


class WireError(ValueError):
    """A params or result object is not of the contract's shape."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"'{field}' {problem}")
        self.field = field
        self.problem = problem


class MessageType(enum.StrEnum):
    TEXT = "text"
    BINARY = "binary"


class Answer(enum.StrEnum):
    DROP = "drop"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class Frame:
    """One WebSocket data message: text carries str, binary carries bytes."""

    type: MessageType
    data: str | bytes

    @classmethod
    def text(cls, data: str) -> Frame:
        return cls(MessageType.TEXT, data)

    @classmethod
    def binary(cls, data: bytes) -> Frame:
        return cls(MessageType.BINARY, data)

    def wire_data(self, raw: bool = False) -> str | bytes:
        """The `data` field: the text itself, or Base64 of the bytes (``raw``: the bytes themselves, as a
        msgpack control connection carries them)."""
        if isinstance(self.data, str) or raw:
            return self.data
        return base64.b64encode(self.data).decode("ascii")

    @classmethod
    def from_wire(cls, params: Mapping[str, Any]) -> Frame:
        """Parse the `type` and `data` fields of a params or result object."""
        kind = params.get("type")
        data = params.get("data")
        if kind not in (MessageType.TEXT, MessageType.BINARY):
            raise WireError("type", "must be 'text' or 'binary'")
        if kind == MessageType.BINARY and isinstance(data, (bytes, bytearray)):  # msgpack: the bytes themselves
            return cls.binary(bytes(data))
        if not isinstance(data, str):
            raise WireError("data", "must be a string")
        if kind == MessageType.TEXT:
            return cls.text(data)
        try:
            return cls.binary(binascii.a2b_base64(data, strict_mode=True))
        except (binascii.Error, ValueError) as exc:
            raise WireError("data", "must be Base64 when 'type' is 'binary'") from exc


def require(params: Mapping[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    """The value of a required field of the given JSON type, or WireError."""
    if field not in params:
        raise WireError(field, "is required")
    value = params[field]
    # bool is an int in Python but not in JSON.
    if isinstance(value, bool) and kind is not bool:
        raise WireError(field, f"must be {_kind_name(kind)}")
    if not isinstance(value, kind):
        raise WireError(field, f"must be {_kind_name(kind)}")
    return value


MAX_WINDOW = 256


def window_of(params: Mapping[str, Any]) -> int:
    """The ``window`` of startInterception, openSession and attachSession (SPEC Part 10): 1 when absent."""
    if "window" not in params:
        return 1
    value = require(params, "window", int)
    if not 1 <= value <= MAX_WINDOW:
        raise WireError("window", f"must be from 1 to {MAX_WINDOW}, got {value}")
    return int(value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {bool: "a boolean", int: "an integer", str: "a string", dict: "an object"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


@dataclass(frozen=True, slots=True)
class InterceptedMessage:
    """Params of `transformInterceptedMessage` (proxy → suite)."""

    id: str
    connection_id: str
    frame: Frame
    from_client: bool

    def to_json(self, raw: bool = False) -> dict[str, Any]:
        """``raw``: for a msgpack control connection (binary data as bytes)."""
        return {
            "id": self.id,
            "connectionID": self.connection_id,
            "type": self.frame.type.value,
            "data": self.frame.wire_data(raw),
            "fromClient": self.from_client,
        }

    @classmethod
    def from_json(cls, params: Mapping[str, Any]) -> InterceptedMessage:
        return cls(
            id=str(require(params, "id", (str, int))),
            connection_id=require(params, "connectionID", str),
            frame=Frame.from_wire(params),
            from_client=require(params, "fromClient", bool),
        )


@dataclass(frozen=True, slots=True)
class TransformResult:
    """Result of `transformInterceptedMessage`: drop, or replace with `frame`."""

    action: Answer
    frame: Frame | None = None

    @classmethod
    def drop(cls) -> TransformResult:
        return cls(Answer.DROP)

    @classmethod
    def replace(cls, frame: Frame) -> TransformResult:
        return cls(Answer.REPLACE, frame)

    def to_json(self, raw: bool = False) -> dict[str, Any]:
        if self.frame is None:
            return {"action": self.action.value}
        return {"action": self.action.value, "type": self.frame.type.value, "data": self.frame.wire_data(raw)}

    @classmethod
    def from_json(
        cls, result: Any, sent: Frame | None = None, sent_data: str | bytes | None = None,
        fmt: ably.Format | None = None,
    ) -> TransformResult:
        """Parse a result. Given what was sent (``sent`` and its wire ``sent_data``), a replace with
        the very same type and data returns ``sent`` itself, sparing a Base64 decode per message.
        A replace may give ``message`` (an Ably protocol message) instead: it is encoded in ``fmt``."""
        if (
            sent is not None
            and isinstance(result, dict)
            and result.get("action") == Answer.REPLACE
            and result.get("type") == sent.type
            and result.get("data") == sent_data
        ):
            return cls.replace(sent)
        if not isinstance(result, dict):
            raise WireError("result", "must be an object")
        action = result.get("action")
        if action == Answer.DROP:
            return cls.drop()
        if action == Answer.REPLACE and "message" in result and fmt is not None:
            return cls.replace(message_frame(result["message"], fmt, "message"))
        if action == Answer.REPLACE:
            return cls.replace(Frame.from_wire(result))
        raise WireError("action", "must be 'drop' or 'replace'")


@dataclass(frozen=True, slots=True)
class InjectRequest:
    """Params of `injectMessage` (suite → proxy): a frame, or (``frame`` None) an Ably ``message``
    for the proxy to encode in the connection's own format."""

    connection_id: str
    from_client: bool
    frame: Frame | None
    message: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, params: Mapping[str, Any]) -> InjectRequest:
        if "message" in params:
            message = require(params, "message", dict)
            return cls(require(params, "connectionID", str), require(params, "fromClient", bool), None, message)
        return cls(
            connection_id=require(params, "connectionID", str),
            from_client=require(params, "fromClient", bool),
            frame=Frame.from_wire(params),
        )

    def frame_in(self, fmt: ably.Format) -> Frame:
        """The frame to send on a connection of that format."""
        if self.frame is not None:
            return self.frame
        return message_frame(self.message or {}, fmt, "message")

    def to_json(self, raw: bool = False) -> dict[str, Any]:
        if self.frame is None:
            return {"connectionID": self.connection_id, "fromClient": self.from_client, "message": self.message}
        return {
            "connectionID": self.connection_id,
            "fromClient": self.from_client,
            "type": self.frame.type.value,
            "data": self.frame.wire_data(raw),
        }


def message_frame(message: Any, fmt: ably.Format, field: str) -> Frame:
    """An Ably protocol message (its action by number or name) encoded as a frame of that format."""
    if not isinstance(message, dict):
        raise WireError(field, "must be an object (an Ably protocol message)")
    action = message.get("action")
    if isinstance(action, str):
        if action.upper() not in ably.Action.__members__:
            raise WireError(f"{field}.action", f"is not an Ably action: {action!r}")
        message = {**message, "action": int(ably.Action[action.upper()])}
    try:
        data = ably.encode(message, fmt)
    except ably.EncodeError as exc:
        raise WireError(field, f"cannot be encoded as {fmt.name}: {exc}") from exc
    return Frame.binary(data) if isinstance(data, bytes) else Frame.text(data)


def jsonable(value: Any) -> Any:
    """A decoded message for JSON: bytes (msgpack binary fields) as Base64 text."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value
