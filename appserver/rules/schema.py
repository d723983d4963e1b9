"""Rules as the suite writes them (SPEC Part 3), validated by msgspec at the boundary.

msgspec turns the untrusted JSON of ``addRules`` into frozen typed values in
one pass and says where it failed (``$.rules[1].match.event``); the checks no
schema can express (an unknown Ably action, two fates in one list, an action
on an event it cannot act on) are made by compile.py with the same kind of
path. Either way the message becomes one -32602 (:class:`RuleError`).

Every action is one Struct tagged by its ``type``, registered with its unit in
actions.py's :data:`~appserver.rules.actions.ACTIONS` (which makes the union a
rule's ``action`` may be); a rule itself (:class:`~appserver.rules.compile.Rule`)
is in compile.py, which converts and compiles it.
"""

from __future__ import annotations

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


class ActionConfig(_Strict, tag_field="type", frozen=True):
    """A rule action's config, tagged by its ``type``."""


class PassAction(ActionConfig, tag="pass", frozen=True):
    pass


class ObserveAction(ActionConfig, tag="observe", frozen=True):
    pass


class DropAction(ActionConfig, tag="drop", frozen=True):
    mode: Literal["reset", "hang"] | None = None  # http only


class TransformAction(ActionConfig, tag="transform", frozen=True):
    response: bool = False  # http: also ask transformInterceptedHttpResponse


class ReplaceAction(ActionConfig, tag="replace", frozen=True):
    message: dict[str, Any] | None = None
    raw: Raw | None = None


class FlagChange(_Strict, frozen=True):
    """Bits of an integer field to set and clear, by Ably flag name (``ATTACH_RESUME``) or value."""

    set: list[str | int] | None = None
    clear: list[str | int] | None = None


class PatchAction(ActionConfig, tag="patch", frozen=True):
    set: dict[str, Any] | None = None
    unset: list[str] | None = None
    flags: FlagChange | None = None


class DelayAction(ActionConfig, tag="delay", frozen=True):
    ms: int


class InjectAction(ActionConfig, tag="inject", frozen=True):
    message: dict[str, Any] | None = None
    raw: Raw | None = None
    fromClient: bool | None = None
    before: bool = False  # sent before the matched frame's fate (uts-proxy's inject_to_client), not after


class CloseAction(ActionConfig, tag="close", frozen=True):
    side: Side = "both"
    code: int | None = None
    reason: str | None = None
    abrupt: bool = False


class NotifyAction(ActionConfig, tag="notify", frozen=True):
    pass


class SilenceAction(ActionConfig, tag="silence", frozen=True):
    pass


class SuppressOnwardsAction(ActionConfig, tag="suppressOnwards", frozen=True):
    """From now on drop every frame and ping in one direction (``fromClient``; default the matched frame's,
    towards the client on timers) on every connection of the suite open now (uts-proxy's suppress_onwards)."""

    fromClient: bool | None = None


class RefuseAction(ActionConfig, tag="refuse", frozen=True):
    status: int = 503
    headers: dict[str, str] | None = None
    body: str | None = None


class RouteAction(ActionConfig, tag="route", frozen=True):
    host: str
    proto: Literal["ws", "wss", "http", "https"]


class _Body(ActionConfig, frozen=True):
    """An HTTP body written one of three ways: text, a JSON value, or Base64 bytes."""

    body: str | None = None
    json: Any | msgspec.UnsetType = msgspec.UNSET
    bodyBase64: str | None = None
    headers: dict[str, str] | None = None


class RespondAction(_Body, tag="respond", frozen=True):
    status: int = 200


class ReplaceResponseAction(_Body, tag="replaceResponse", frozen=True):
    status: int | None = None


class PatchResponseAction(ActionConfig, tag="patchResponse", frozen=True):
    status: int | None = None
    headers: dict[str, str] | None = None
    set: dict[str, Any] | None = None
    unset: list[str] | None = None


def tag_of(kind: type[ActionConfig]) -> str:
    """An action Struct's ``type``."""
    return str(kind.__struct_config__.tag)


def to_builtins(value: msgspec.Struct) -> Any:
    return msgspec.to_builtins(value)
