"""Rules as the suite writes them (SPEC Part 3), validated by msgspec at the boundary.

msgspec turns the untrusted JSON of ``addRules`` into frozen typed values in
one pass and says where it failed (``$.rules[1].match.event``); the checks no
schema can express (an unknown Ably action, two fates in one list, an action
on an event it cannot act on) are made by compile.py with the same kind of
path. Either way the message becomes one -32602 (:class:`RuleError`).

Every action is one Struct tagged by its ``type``; :data:`ACTIONS` lists them
all, and adding an action is one Struct here and one unit in actions.py.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Union

import msgspec

EVENTS = ("message", "connect", "timer", "ping", "pong", "close", "http")
Event = Literal["message", "connect", "timer", "ping", "pong", "close", "http"]
Side = Literal["client", "server", "both"]
#: A query or header condition: equal to this text, or present (True) / absent (False).
Condition = Union[str, bool]


class RuleError(ValueError):
    """A rule the proxy cannot use; the message starts with the path of what is wrong."""


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class Match(_Strict, frozen=True):
    event: Event = "message"
    fromClient: bool | None = None
    connectionID: str | None = None
    type: Literal["text", "binary"] | None = None
    host: str | None = None
    path: str | None = None
    query: dict[str, Condition] | None = None
    headers: dict[str, Condition] | None = None
    action: int | str | list[int | str] | None = None
    channel: str | None = None
    fields: dict[str, Any] | None = None
    afterMs: int | None = None
    method: str | None = None


class Raw(_Strict, frozen=True):
    type: Literal["text", "binary"]
    data: str


class _Action(_Strict, tag_field="type", frozen=True):
    pass


class PassAction(_Action, tag="pass", frozen=True):
    pass


class ObserveAction(_Action, tag="observe", frozen=True):
    pass


class DropAction(_Action, tag="drop", frozen=True):
    mode: Literal["reset", "hang"] | None = None  # http only


class TransformAction(_Action, tag="transform", frozen=True):
    response: bool = False  # http: also ask transformInterceptedHttpResponse


class ReplaceAction(_Action, tag="replace", frozen=True):
    message: dict[str, Any] | None = None
    raw: Raw | None = None


class FlagChange(_Strict, frozen=True):
    """Bits of an integer field to set and clear, by Ably flag name (``ATTACH_RESUME``) or value."""

    set: list[str | int] | None = None
    clear: list[str | int] | None = None


class PatchAction(_Action, tag="patch", frozen=True):
    set: dict[str, Any] | None = None
    unset: list[str] | None = None
    flags: FlagChange | None = None


class DelayAction(_Action, tag="delay", frozen=True):
    ms: int


class InjectAction(_Action, tag="inject", frozen=True):
    message: dict[str, Any] | None = None
    raw: Raw | None = None
    fromClient: bool | None = None
    before: bool = False  # sent before the matched frame's fate (uts-proxy's inject_to_client), not after


class CloseAction(_Action, tag="close", frozen=True):
    side: Side = "both"
    code: int | None = None
    reason: str | None = None
    abrupt: bool = False


class NotifyAction(_Action, tag="notify", frozen=True):
    pass


class SilenceAction(_Action, tag="silence", frozen=True):
    pass


class SuppressOnwardsAction(_Action, tag="suppressOnwards", frozen=True):
    """From now on drop every frame and ping in one direction (``fromClient``; default the matched frame's,
    towards the client on timers) on every connection of the suite open now (uts-proxy's suppress_onwards)."""

    fromClient: bool | None = None


class RefuseAction(_Action, tag="refuse", frozen=True):
    status: int = 503
    headers: dict[str, str] | None = None
    body: str | None = None


class RouteAction(_Action, tag="route", frozen=True):
    host: str
    proto: Literal["ws", "wss", "http", "https"]


class _Body(_Action, frozen=True):
    """An HTTP body written one of three ways: text, a JSON value, or Base64 bytes."""

    body: str | None = None
    json: Any | msgspec.UnsetType = msgspec.UNSET
    bodyBase64: str | None = None
    headers: dict[str, str] | None = None


class RespondAction(_Body, tag="respond", frozen=True):
    status: int = 200


class ReplaceResponseAction(_Body, tag="replaceResponse", frozen=True):
    status: int | None = None


class PatchResponseAction(_Action, tag="patchResponse", frozen=True):
    status: int | None = None
    headers: dict[str, str] | None = None
    set: dict[str, Any] | None = None
    unset: list[str] | None = None


AnyAction = Union[
    PassAction, ObserveAction, DropAction, TransformAction, ReplaceAction, PatchAction, DelayAction,
    InjectAction, CloseAction, NotifyAction, SilenceAction, SuppressOnwardsAction, RefuseAction, RouteAction,
    RespondAction,
    ReplaceResponseAction, PatchResponseAction,
]  # fmt: skip
ACTIONS: tuple[type[_Action], ...] = AnyAction.__args__  # type: ignore[attr-defined]
ACTION_NAMES = tuple(str(a.__struct_config__.tag) for a in ACTIONS)


class Rule(_Strict, frozen=True):
    match: Match
    action: AnyAction | list[AnyAction]
    id: str | None = None
    times: int | None = None
    skip: int = 0

    @property
    def actions(self) -> tuple[_Action, ...]:
        return tuple(self.action) if isinstance(self.action, list) else (self.action,)


class AddRules(_Strict, frozen=True):
    rules: list[Rule]
    position: Literal["append", "prepend"] = "append"


def convert(params: Any, kind: type[msgspec.Struct]) -> Any:
    """Params as a typed value, or RuleError naming the path (``rules[1].match.event: …``)."""
    try:
        return msgspec.convert(params, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise RuleError(_readable(str(exc))) from None


def _readable(message: str) -> str:
    """msgspec's "Problem - at `$.rules[0].action.type`" as "rules[0].action.type: problem (what is valid)"."""
    problem, at, where = message.rpartition(" - at `")
    path = where.rstrip("`").removeprefix("$.").removeprefix("$") if at else ""
    if not at:
        problem = message
    if not path:  # the params object itself: "rules: is required", not "Object missing required field `rules`"
        missing = re.fullmatch(r"Object missing required field `([^`]+)`", problem)
        return f"{missing.group(1)}: is required" if missing else problem
    if path.endswith(".type") and problem.startswith("Invalid value"):
        problem += f" (valid actions: {', '.join(ACTION_NAMES)})"
    elif path.endswith(".event"):
        problem += f" (valid events: {', '.join(EVENTS)})"
    return f"{path}: {problem}"


def to_builtins(value: msgspec.Struct) -> Any:
    return msgspec.to_builtins(value)
