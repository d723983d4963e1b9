"""A rule compiled once, when it is added: globs, dotted paths and Ably action names resolved.

:func:`compile_rule` makes the checks no schema can (an unknown Ably action,
two fates, an action on an event it cannot act on, ``fields`` on a non-message
event …), each a :class:`RuleError` naming the path, and turns the match into
a list of small predicates over a :class:`Subject`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appserver.rules import actions as units
from appserver.rules.schema import Condition, Match, Rule, RuleError, to_builtins
from appserver.rules.subject import MISSING, Subject, glob, path_get
from appserver.verdict import DROP, PASS

Predicate = Callable[[Subject], bool]
#: Match fields that look into a data frame's decoded Ably message (or the frame itself), and the
#: events that have them.
MESSAGE_FIELDS = {"type": ("message",), "action": ("message",), "channel": ("message",),
                  "fields": ("message", "http"), "method": ("http",)}  # fmt: skip


@dataclass
class CompiledRule:
    id: str
    spec: dict[str, Any]  # as listRules shows it
    event: str
    predicates: tuple[Predicate, ...]
    fate: units.Unit | None
    effects: tuple[units.Unit, ...]
    after_ms: int | None
    times: int | None
    skip: int
    #: The verdict part when the rule always gives the same one and nothing else (pass or drop, no
    #: effects, no notification, no counters to honour): the engine's fast path.
    constant: Any = None
    is_observer: bool = False  # an observe rule: evaluation goes on after it
    notifies: bool = False  # observe or notify: ruleMatched
    side_effects: tuple[units.Unit, ...] = ()  # the effects but notify (the engine sends that itself)
    injects: bool = False  # has an inject side effect: it is reported once the frame is written
    reads_body: bool = False  # an http rule with fields: the request body is read before it is decided
    #: Removed from the rules once spent (``times`` applied), as uts-proxy removes its rules; otherwise a spent
    #: rule stays listed, inert, with ``remaining: 0``.
    goes_when_spent: bool = False
    matched: int = 0
    applied: int = 0
    unreported: int = 0  # matches whose injection is not written yet (not counted for waitForRule)
    waiters: list[Any] = field(default_factory=list)  # (count, future) of waitForRule

    @property
    def observes(self) -> bool:
        """An observe rule records and notifies; evaluation then goes on."""
        return self.fate is not None and self.fate.name == "observe"

    @property
    def remaining(self) -> int | None:
        return None if self.times is None else max(self.times - self.applied, 0)

    def matches(self, subject: Subject) -> bool:
        if subject.event != self.event:
            return False
        for predicate in self.predicates:
            if not predicate(subject):
                return False
        return True


def compile_rule(rule: Rule, rule_id: str, where: str) -> CompiledRule:
    m = rule.match
    if rule.times is not None and rule.times <= 0:
        raise RuleError(f"{where}.times: must be at least 1, got {rule.times}")
    if rule.skip < 0:
        raise RuleError(f"{where}.skip: must be 0 or more, got {rule.skip}")
    for name, events in MESSAGE_FIELDS.items():
        if getattr(m, name) is not None and m.event not in events:
            raise RuleError(f"{where}.match.{name}: only {' and '.join(events)} events have it "
                            f"(this rule's event is {m.event!r})")  # fmt: skip
    if m.event == "timer" and (m.afterMs is None or m.afterMs < 0):
        raise RuleError(f"{where}.match.afterMs: a timer rule needs afterMs, a number of milliseconds ≥ 0")
    if m.event != "timer" and m.afterMs is not None:
        raise RuleError(f"{where}.match.afterMs: only timer rules have it (this rule's event is {m.event!r})")
    fate, effects = units.compile_actions(rule.actions, m.event, f"{where}.action")
    spec = to_builtins(rule)
    spec["id"] = rule_id
    compiled = CompiledRule(rule_id, spec, m.event, _predicates(m, f"{where}.match"), fate, effects, m.afterMs,
                            rule.times, rule.skip)  # fmt: skip
    compiled.reads_body = m.event == "http" and (m.fields is not None or (fate is not None and fate.name == "transform"))
    compiled.is_observer = fate is not None and fate.name == "observe"
    compiled.notifies = compiled.is_observer or any(unit.name == "notify" for unit in effects)
    compiled.side_effects = tuple(unit for unit in effects if unit.name != "notify")
    compiled.injects = any(unit.name == "inject" for unit in effects)
    if fate is not None and fate.name in ("pass", "drop") and not effects and rule.times is None and not rule.skip:
        compiled.constant = PASS if fate.name == "pass" else DROP
    return compiled


def _predicates(m: Match, where: str) -> tuple[Predicate, ...]:
    found: list[Predicate] = []
    if m.fromClient is not None:
        found.append(_equal(lambda s: s.from_client, m.fromClient))
    if m.connectionID is not None:
        found.append(_equal(lambda s: s.connection_id, m.connectionID))
    if m.host is not None:
        found.append(_globbed(lambda s: s.handshake.host, m.host, ignore_case=True))
    if m.path is not None:
        found.append(_globbed(lambda s: s.handshake.path.split("?", 1)[0], m.path))
    if m.query is not None:
        found.append(_conditions(m.query, lambda s: s.handshake.query, ignore_case=False))
    if m.headers is not None:
        found.append(_conditions(m.headers, lambda s: s.handshake.headers, ignore_case=True))
    if m.type is not None:
        found.append(_equal(lambda s: s.frame.type.value if s.frame is not None else None, m.type))
    if m.action is not None:
        wanted = frozenset(units.resolve_actions(m.action, f"{where}.action"))
        found.append(lambda s: _action_of(s) in wanted)
    if m.channel is not None:
        found.append(_globbed(lambda s: _field(s, "channel"), m.channel))
    if m.method is not None:
        found.append(_equal(lambda s: (s.method or "").upper(), m.method.upper()))
    elif m.event == "http":
        found.append(lambda s: not _preflight(s))  # a browser's CORS preflight: only for method "OPTIONS"
    if m.fields is not None:
        expected = [(tuple(path.split(".")), value) for path, value in m.fields.items()]

        def fields_hold(s: Subject) -> bool:
            msg = s.message()
            return msg is not None and all(path_get(msg, path) == value for path, value in expected)

        found.append(fields_hold)
    return tuple(found)


def _preflight(s: Subject) -> bool:
    """A browser's CORS preflight (OPTIONS with Access-Control-Request-Method), not a request of the SDK's."""
    return s.method == "OPTIONS" and any(k.lower() == "access-control-request-method" for k in s.handshake.headers)


def _equal(get: Callable[[Subject], Any], value: Any) -> Predicate:
    return lambda s: bool(get(s) == value)


def _globbed(get: Callable[[Subject], Any], pattern: str, ignore_case: bool = False) -> Predicate:
    regex = glob(pattern, ignore_case)

    def holds(s: Subject) -> bool:
        value = get(s)
        return isinstance(value, str) and regex.match(value) is not None

    return holds


def _conditions(conditions: dict[str, Condition], values: Callable[[Subject], dict[str, str]],
                ignore_case: bool) -> Predicate:  # fmt: skip
    wanted = {(k.lower() if ignore_case else k): v for k, v in conditions.items()}

    def holds(s: Subject) -> bool:
        have = {(k.lower() if ignore_case else k): v for k, v in values(s).items()}
        return all((name in have) is v if isinstance(v, bool) else have.get(name) == v for name, v in wanted.items())

    return holds


def _action_of(s: Subject) -> Any:
    action = _field(s, "action")
    return action if isinstance(action, int) and not isinstance(action, bool) else MISSING


def _field(s: Subject, name: str) -> Any:
    message = s.message()
    return MISSING if message is None else message.get(name, MISSING)
