"""The rule engine: what an event is about, the compiled rules in order, their counters and evaluation. No I/O.

Everything a frame meets while the rules look at it is here, so evaluating a
rule is one call: the :class:`Subject` (its Ably message decoded at most once,
only when a rule asks for it), each rule's predicates (made from its match once,
by compile.py, from the builders below), and :meth:`RuleSet.evaluate`.

Each event is checked against the rules in order. A rule whose match holds
counts the match; its first ``skip`` matches go by untouched, and after
``times`` applications it is inert (still listed, ``remaining: 0``), or gone if it
goes when spent (uts-proxy's rules). An ``observe`` rule records, notifies, and
evaluation goes on; the first other rule that applies decides (an action list
without a fate passes). The :class:`Outcome` says what the rules decided;
turning it into a verdict (asking the suite for ``transform``, sending
``ruleMatched``) is verdicts.py's.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from appserver.rules.schema import Condition, Match, RuleError
from shared import ably
from shared.connections import ConnectionOpened
from shared.dotted import MISSING, path_get
from shared.wire import Frame, MessageType

if TYPE_CHECKING:
    from appserver.rules.actions import Unit

Predicate = Callable[["Subject"], bool]

_UNDECODED: Any = object()

@dataclass(slots=True)
class Subject:
    event: str
    handshake: ConnectionOpened
    from_client: bool | None = None
    frame: Frame | None = None
    payload: bytes | None = None  # a ping's or pong's
    method: str | None = None  # an HTTP request's
    body: bytes | None = None  # an HTTP request's, when read
    _message: Any = field(default=_UNDECODED)

    @property
    def connection_id(self) -> str:
        return self.handshake.id

    @property
    def format(self) -> ably.Format:
        """The frame's format (binary frames are msgpack), else the connection's (its format= query)."""
        if self.frame is not None:  # Format.for_frame, inline: this is read for every frame a rule decodes
            return ably.Format.MSGPACK if self.frame.type is MessageType.BINARY else ably.Format.JSON
        return self.handshake.format

    def message(self) -> dict[str, Any] | None:
        """The frame's Ably protocol message, or None when there is none or it does not decode."""
        if self._message is _UNDECODED:
            self._message = None
            if self.body is not None:  # an HTTP request: its JSON body, if it is JSON
                try:
                    decoded = json.loads(self.body)
                except (ValueError, UnicodeDecodeError):
                    decoded = None
                self._message = decoded if isinstance(decoded, dict) else None
            elif self.frame is not None:
                try:
                    self._message = ably.decode(self.frame.data, self.format)
                except ably.DecodeError:
                    pass
        return self._message  # type: ignore[no-any-return]


def glob(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """Shell-style: ``*`` matches anything, ``/`` included; ``?`` one character; ``[…]`` a class."""
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE if ignore_case else 0)


@dataclass
class CompiledRule:
    id: str
    spec: dict[str, Any]  # as listRules shows it
    event: str
    predicates: tuple[Predicate, ...]
    fate: Unit | None
    effects: tuple[Unit, ...]
    after_ms: int | None
    times: int | None
    skip: int
    #: The verdict part when the rule always gives the same one and nothing else (pass or drop, no
    #: effects, no notification, no counters to honour): the engine's fast path.
    constant: Any = None
    is_observer: bool = False  # an observe rule: evaluation goes on after it
    notifies: bool = False  # observe or notify: ruleMatched
    side_effects: tuple[Unit, ...] = ()  # the effects but notify (the engine sends that itself)
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
    def remaining(self) -> int | None:
        return None if self.times is None else max(self.times - self.applied, 0)

    def matches(self, subject: Subject) -> bool:
        if subject.event != self.event:
            return False
        for predicate in self.predicates:
            if not predicate(subject):
                return False
        return True


class Outcome:
    """What the rules made of one event (a plain class: one is made per event a rule applies to)."""

    __slots__ = ("decided_by", "fate", "effects", "notify", "held")

    def __init__(self, decided_by: CompiledRule | None = None, fate: Unit | None = None) -> None:
        self.decided_by = decided_by
        self.fate = fate
        self.effects: list[tuple[CompiledRule, Unit]] = []
        self.notify: list[CompiledRule] = []  # observe and notify: ruleMatched for each
        #: Rules that inject: their waiters and ruleMatched wait until the injected frame is written.
        self.held: list[CompiledRule] = []


class RuleSet:
    def __init__(self) -> None:
        self._rules: list[CompiledRule] = []
        self._ids = itertools.count(1)
        #: The first rule, when it decides every data frame the same way (``{match: {}, action: pass}``): the
        #: whole evaluation is then one counter (the engine's fastest path). An attribute: read for every frame.
        self.leading_catch_all: CompiledRule | None = None
        #: No rules at all (an attribute: read for every frame).
        self.empty = True
        #: Called after every change of the rules (the Rules decider tells its chains whether it has a say).
        self.on_change: Callable[[], None] | None = None

    def __bool__(self) -> bool:
        return bool(self._rules)

    @property
    def rules(self) -> tuple[CompiledRule, ...]:
        return tuple(self._rules)

    def _changed(self) -> None:
        self.empty = not self._rules
        first = self._rules[0] if self._rules else None
        catch_all = first is not None and first.event == "message" and not first.predicates
        self.leading_catch_all = first if catch_all and first is not None and first.constant is not None else None
        if self.on_change is not None:
            self.on_change()

    def insert(self, compiled: list[CompiledRule], prepend: bool = False) -> None:
        """Rules compiled by compile.add_rules (which checked them all first: all or nothing)."""
        self._rules = compiled + self._rules if prepend else self._rules + compiled
        self._changed()

    def taken_ids(self) -> set[str]:
        return {rule.id for rule in self._rules}

    def new_id(self, taken: set[str]) -> str:
        return next(rule_id for rule_id in (f"r{n}" for n in self._ids) if rule_id not in taken)

    def remove(self, ids: Sequence[str]) -> int:
        gone = set(ids)
        kept = [rule for rule in self._rules if rule.id not in gone]
        removed = len(self._rules) - len(kept)
        for rule in self._rules:
            if rule.id in gone:
                _fail_waiters(rule, f"rule {rule.id!r} was removed")
        self._rules = kept
        self._changed()
        return removed

    def clear(self, why: str = "the rules were cleared") -> int:
        removed = len(self._rules)
        for rule in self._rules:
            _fail_waiters(rule, why)
        self._rules = []
        self._changed()
        return removed

    def listed(self) -> list[dict[str, Any]]:
        return [{**rule.spec, "matched": rule.matched, "remaining": rule.remaining} for rule in self._rules]

    def get(self, rule_id: str) -> CompiledRule:
        for rule in self._rules:
            if rule.id == rule_id:
                return rule
        raise RuleError(f"id: no rule with id {rule_id!r}")

    def timers(self) -> list[CompiledRule]:
        """The timer rules a connection opened now gets (rules added later do not apply to it)."""
        return [rule for rule in self._rules if rule.event == "timer"]

    def evaluate(self, subject: Subject, only: CompiledRule | None = None) -> Outcome | None:
        """What the rules decide for this event; None when no rule matched it at all."""
        outcome: Outcome | None = None
        for rule in (only,) if only is not None else self._rules:
            if not rule.matches(subject):
                continue
            if rule.constant is not None and outcome is None:  # the fast path: a catch-all pass, say
                rule.matched += 1
                if rule.waiters:
                    _count_waiters(rule)
                return Outcome(rule, rule.fate)
            rule.matched += 1
            if rule.matched <= rule.skip or (rule.times is not None and rule.applied >= rule.times):
                if rule.waiters:
                    _count_waiters(rule)
                continue
            rule.applied += 1
            if rule.goes_when_spent and rule.times is not None and rule.applied >= rule.times:
                self._drop_spent(rule)
            if outcome is None:
                outcome = Outcome()
            if rule.injects:
                rule.unreported += 1  # told once its injection is written (hooks.py: report)
                outcome.held.append(rule)
            elif rule.waiters:
                _count_waiters(rule)
            if rule.side_effects:
                outcome.effects.extend((rule, unit) for unit in rule.side_effects)
            if rule.notifies:
                outcome.notify.append(rule)
            if not rule.is_observer:
                outcome.decided_by, outcome.fate = rule, rule.fate
                return outcome
        return outcome


    def _drop_spent(self, rule: CompiledRule) -> None:
        """A spent rule that goes: out of the list at once (evaluation iterates over the list it started with,
        since this one is left by copy); its waiters keep counting on the rule itself."""
        self._rules = [r for r in self._rules if r is not rule]
        self._changed()


def count_match(rule: CompiledRule) -> None:
    """One more match of a rule that decides alone (the fast paths)."""
    rule.matched += 1
    if rule.waiters:
        _count_waiters(rule)


def reported(rule: CompiledRule) -> None:
    """A held match of an injecting rule is now done (its frame written): waiters may count it."""
    rule.unreported = max(rule.unreported - 1, 0)
    if rule.waiters:
        _count_waiters(rule)


def _count_waiters(rule: CompiledRule) -> None:
    matched = rule.matched - rule.unreported
    for count, future in list(rule.waiters):
        if matched >= count and not future.done():
            future.set_result(matched)
            rule.waiters.remove((count, future))


def _fail_waiters(rule: CompiledRule, why: str) -> None:
    for _, future in rule.waiters:
        if not future.done():
            future.set_exception(RuleError(why))
    rule.waiters.clear()


async def wait_for(rule: CompiledRule, count: int, timeout_ms: int) -> int:
    """The rule's match count once it reaches ``count`` (past matches count); TimeoutError after timeout_ms."""
    if rule.matched - rule.unreported >= count:
        return rule.matched - rule.unreported
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    rule.waiters.append((count, future))
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            return await future
    finally:
        if (count, future) in rule.waiters:
            rule.waiters.remove((count, future))


# -- the predicates a match is made of ----------------------------------------------------------


def predicates(m: Match, actions: frozenset[int] | None) -> tuple[Predicate, ...]:
    """The match as predicates over a Subject (``actions``: its Ably actions, as numbers), made once when the rule
    is compiled and here beside the evaluation that calls them."""
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
    if actions is not None:
        found.append(lambda s: _action_of(s) in actions)
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
