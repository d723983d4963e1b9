"""Rule actions: each one entry of :data:`ACTIONS` — its schema (a Struct in schema.py), what it is (a fate or
a side effect, the events it acts on, its flags) and how its unit is built.

A unit turns a :class:`~appserver.rules.engine.Subject` into its part of the verdict. The engine and the
verdict step know no action by name: they read the flags. Adding an action is one Struct in schema.py and
one :class:`Kind` here (HTTP's are built in http_actions.py); the union a rule's ``action`` may be is made
from this table (:data:`AnyAction`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from appserver.relay.lifecycle import check_sendable
from appserver.rules import http_actions
from appserver.rules import schema as s
from appserver.rules.engine import Subject
from appserver.rules.schema import RuleError
from appserver.verdict import (DROP, PASS, CloseLegs, Delay, HttpDrop, Inject, Refuse, Replace, Route, Silence,
                               SuppressOnwards, Verdict)
from shared import ably
from shared.ably import Flag
from shared.dotted import path_set, path_unset
from shared.wire import Frame, WireError
from shared.wire import message_frame as wire_message_frame

ALL = frozenset(s.EVENTS)
FRAMES = frozenset({"message"})
CONTROL = frozenset({"ping", "pong"})
HTTP = frozenset({"http"})


class Transform:
    """The fate 'ask the suite' (transformInterceptedMessage, or for http transformInterceptedHttpRequest,
    with this rule's id)."""

    def __init__(self, response: bool = False) -> None:
        self.response = response


class Notify:
    """The side effect 'send the suite a ruleMatched notification'."""


TRANSFORM, NOTIFY = Transform(), Notify()
Part = Any  # a Fate, an Effect, Transform, Notify, Refuse or Route


#: What a unit builds from its validated config, where it is (for errors) and the rule's event.
Build = Callable[[Any, str, str], Callable[[Subject], Part]]


@dataclass(frozen=True)
class Kind:
    """One rule action."""

    schema: type[s.ActionConfig]
    #: A fate decides what happens to the matched frame or handshake (at most one per rule); else a side effect.
    is_fate: bool
    events: frozenset[str]
    build: Build
    #: Evaluation goes on after a rule whose fate this is (observe).
    observer: bool = False
    #: A match sends the suite ruleMatched (observe, notify).
    notifies: bool = False
    #: On http events the request body is read before the rule is decided (transform).
    reads_body: bool = False
    #: Sends a frame: the match is reported once the frame is written (inject).
    injects: bool = False
    #: The verdict of a rule with this fate and nothing else, on frames (pass, drop): the engine's fast path.
    constant: Verdict | None = None

    @property
    def name(self) -> str:
        return s.tag_of(self.schema)


@dataclass(frozen=True)
class Unit:
    """A rule's action, built: its kind and the function that gives its part of the verdict."""

    kind: Kind
    apply: Callable[[Subject], Part]

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def is_fate(self) -> bool:
        return self.kind.is_fate


def _const(value: Part) -> Build:
    return lambda config, where, event: lambda subject: value


def message_frame(message: dict[str, Any], fmt: ably.Format) -> Frame:
    """The message encoded as a frame of that format (its action already a number)."""
    return wire_message_frame(message, fmt, "message")


def _frame_maker(config: s.ReplaceAction | s.InjectAction, where: str) -> Callable[[Subject], Frame]:
    """The frame a replace or inject sends: ``raw`` as given, or ``message`` in the subject's format."""
    if (config.message is None) == (config.raw is None):
        raise RuleError(f"{where}: give either 'message' (an Ably protocol message) or 'raw', not both or neither")
    if config.raw is not None:
        try:
            raw = Frame.from_wire(s.to_builtins(config.raw))
        except WireError as exc:
            raise RuleError(f"{where}.raw: {exc}") from None
        return lambda subject: raw
    message = named_action(config.message or {}, where)
    for fmt in ably.Format:  # fail now, not when it fires
        try:
            message_frame(message, fmt)
        except WireError as exc:
            raise RuleError(f"{where}.{exc.field}: {exc.problem}") from None
    return lambda subject: message_frame(message, subject.format)


def resolve_actions(value: int | str | list[int | str], where: str) -> list[int]:
    """Ably action names or numbers as numbers; RuleError naming the first unknown one."""
    numbers = []
    for item in value if isinstance(value, list) else [value]:
        numbers.append(resolve_action(item, where))
    return numbers


def resolve_action(item: int | str, where: str) -> int:
    if isinstance(item, int) and not isinstance(item, bool):
        if item in ably.Action._value2member_map_:
            return item
        raise RuleError(f"{where}: unknown Ably action number {item} (valid: 0 to {max(ably.Action)})")
    if isinstance(item, str) and item.upper() in ably.Action.__members__:
        return int(ably.Action[item.upper()])
    raise RuleError(f"{where}: unknown Ably action {item!r} (valid: {', '.join(ably.Action.__members__)})")


def named_action(message: dict[str, Any], where: str) -> dict[str, Any]:
    """A message whose ``action`` may be a name ("NACK"): with its number."""
    if isinstance(message.get("action"), str):
        return {**message, "action": resolve_action(message["action"], f"{where}.message.action")}
    return message


def _replace(config: s.ReplaceAction, where: str, event: str) -> Callable[[Subject], Part]:
    make = _frame_maker(config, where)
    return lambda subject: Replace(make(subject))


def _flag_bits(names: list[str | int] | None, where: str) -> int:
    """The bits of these Ably flags (names or values); RuleError naming the one that is neither."""
    bits = 0
    for index, name in enumerate(names or []):
        if isinstance(name, int) and not isinstance(name, bool):
            if name < 0:
                raise RuleError(f"{where}[{index}]: a flag value must be 0 or more, got {name}")
            bits |= name
        elif isinstance(name, str) and name.upper() in Flag.__members__:
            bits |= int(Flag[name.upper()])
        else:
            known = ", ".join(Flag.__members__)
            raise RuleError(f"{where}[{index}]: unknown Ably flag {name!r} (known: {known}, or a number)")
    return bits


def _patch(config: s.PatchAction, where: str, event: str) -> Callable[[Subject], Part]:
    sets = [(tuple(k.split(".")), v) for k, v in (config.set or {}).items()]
    unsets = [tuple(k.split(".")) for k in config.unset or []]
    raise_bits = _flag_bits(config.flags.set, f"{where}.flags.set") if config.flags else 0
    clear_bits = _flag_bits(config.flags.clear, f"{where}.flags.clear") if config.flags else 0
    if not sets and not unsets and config.flags is None:
        raise RuleError(f"{where}: a patch needs 'set', 'unset' or 'flags'")

    def patched(subject: Subject) -> Part:
        message = subject.message()
        if message is None:
            return PASS  # nothing to patch in a frame that is no Ably message
        new = copy.deepcopy(message)
        for path, value in sets:
            path_set(new, path, value)
        for path in unsets:
            path_unset(new, path)
        if config.flags is not None:  # the other bits of flags stay as they were
            old = new.get("flags")
            flags = (old if isinstance(old, int) and not isinstance(old, bool) else 0) | raise_bits
            new["flags"] = flags & ~clear_bits
        return Replace(message_frame(new, subject.format))

    return patched


def _delay(config: s.DelayAction, where: str, event: str) -> Callable[[Subject], Part]:
    if config.ms < 0:
        raise RuleError(f"{where}.ms: must be 0 or more, got {config.ms}")
    delay = Delay(config.ms)
    return lambda subject: delay


def _inject(config: s.InjectAction, where: str, event: str) -> Callable[[Subject], Part]:
    make = _frame_maker(config, where)

    def inject(subject: Subject) -> Part:
        towards_server = config.fromClient if config.fromClient is not None else bool(subject.from_client)
        return Inject(make(subject), towards_server, before=config.before)

    return inject


def _close(config: s.CloseAction, where: str, event: str) -> Callable[[Subject], Part]:
    try:
        check_sendable(config.code, config.reason or "")
    except ValueError as exc:
        raise RuleError(f"{where}: {exc}") from None
    sides = ("client", "server") if config.side == "both" else (config.side,)
    close = CloseLegs(sides, config.code, config.reason or "", config.abrupt)
    return lambda subject: close


def _refuse(config: s.RefuseAction, where: str, event: str) -> Callable[[Subject], Part]:
    if not 300 <= config.status <= 599:
        raise RuleError(f"{where}.status: must be an HTTP status from 300 to 599, got {config.status}")
    refuse = Refuse(config.status, tuple((config.headers or {}).items()), config.body or "")
    return lambda subject: refuse


def _route(config: s.RouteAction, where: str, event: str) -> Callable[[Subject], Part]:
    if (config.proto in ("ws", "wss")) != (event == "connect"):
        raise RuleError(f"{where}.proto: on {event} events a route's proto is "
                        f"{'ws or wss' if event == 'connect' else 'http or https'}, not {config.proto!r}")
    route = Route(config.host, config.proto)
    return lambda subject: route


def _transform(config: s.TransformAction, where: str, event: str) -> Callable[[Subject], Part]:
    if config.response and event != "http":
        raise RuleError(f"{where}.response: only an http transform asks about the response too")
    part = Transform(response=True) if config.response else TRANSFORM
    return lambda subject: part


def _drop(config: s.DropAction, where: str, event: str) -> Callable[[Subject], Part]:
    if config.mode is not None and event != "http":
        raise RuleError(f"{where}.mode: only an http drop has a mode (reset or hang)")
    http_drop = HttpDrop(config.mode or "reset")
    return lambda subject: http_drop if subject.event == "http" else DROP


def _suppress_onwards(config: s.SuppressOnwardsAction, where: str, event: str) -> Callable[[Subject], Part]:
    def suppress(subject: Subject) -> Part:
        direction = config.fromClient if config.fromClient is not None else bool(subject.from_client)
        return SuppressOnwards(direction)

    return suppress


_KINDS = (
    Kind(s.PassAction, True, ALL, _const(PASS), constant=PASS),
    Kind(s.ObserveAction, True, ALL, _const(PASS), observer=True, notifies=True),
    Kind(s.DropAction, True, FRAMES | CONTROL | HTTP, _drop, constant=DROP),
    Kind(s.TransformAction, True, FRAMES | HTTP, _transform, reads_body=True),
    Kind(s.ReplaceAction, True, FRAMES, _replace),
    Kind(s.PatchAction, True, FRAMES, _patch),
    Kind(s.DelayAction, True, FRAMES | CONTROL | HTTP | {"connect", "close"}, _delay),
    Kind(s.RefuseAction, True, frozenset({"connect"}), _refuse),
    Kind(s.RouteAction, True, frozenset({"connect"}) | HTTP, _route),
    Kind(s.RespondAction, True, HTTP, http_actions.respond),
    Kind(s.ReplaceResponseAction, True, HTTP, http_actions.replace_response),
    Kind(s.PatchResponseAction, True, HTTP, http_actions.patch_response),
    Kind(s.InjectAction, False, FRAMES | {"connect", "timer", "close"}, _inject, injects=True),
    Kind(s.CloseAction, False, FRAMES | {"connect", "timer"}, _close),
    Kind(s.NotifyAction, False, ALL, _const(NOTIFY), notifies=True),
    Kind(s.SilenceAction, False, ALL, _const(Silence())),
    Kind(s.SuppressOnwardsAction, False, FRAMES | {"timer"}, _suppress_onwards),
)
#: Every rule action, by its ``type``.
ACTIONS: dict[str, Kind] = {kind.name: kind for kind in _KINDS}
ACTION_NAMES = tuple(ACTIONS)

if TYPE_CHECKING:
    AnyAction = s.ActionConfig
else:  # the tagged union msgspec validates a rule's action against, one member per entry
    AnyAction = Union[tuple(kind.schema for kind in _KINDS)]


def compile_actions(actions: tuple[Any, ...], event: str, where: str) -> tuple[Unit | None, tuple[Unit, ...]]:
    """The rule's fate (None: pass) and its side effects, in order; RuleError naming the path."""
    fate: Unit | None = None
    effects: list[Unit] = []
    for index, config in enumerate(actions):
        at = f"{where}[{index}]" if len(actions) > 1 else where
        kind = ACTIONS[s.tag_of(type(config))]
        if event not in kind.events:
            raise RuleError(f"{at}: {kind.name!r} cannot act on {event} events (it acts on: "
                            f"{', '.join(e for e in s.EVENTS if e in kind.events)})")  # fmt: skip
        unit = Unit(kind, kind.build(config, at, event))
        if kind.is_fate:
            if fate is not None:
                raise RuleError(f"{at}: two fates in one action list ({fate.name!r} and {kind.name!r}): at most one "
                                f"of {', '.join(n for n, k in ACTIONS.items() if k.is_fate)}")  # fmt: skip
            fate = unit
        else:
            effects.append(unit)
    return fate, tuple(effects)


__all__ = ["ACTIONS", "ACTION_NAMES", "NOTIFY", "TRANSFORM", "AnyAction", "Kind", "Notify", "Transform", "Unit",
           "compile_actions"]
