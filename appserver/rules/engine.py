"""The rule engine: the active suite's rules in order, their counters, and evaluation. No I/O.

Each event is checked against the rules in order. A rule whose match holds
counts the match; its first ``skip`` matches go by untouched, and after
``times`` applications it is inert (still listed, ``remaining: 0``), or gone if it
goes when spent (uts-proxy's rules). An
``observe`` rule records, notifies, and evaluation goes on; the first other
rule that applies decides (an action list without a fate passes). The
:class:`Outcome` says what the rules decided; turning it into a verdict
(asking the suite for ``transform``, sending ``ruleMatched``) is hooks.py's.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from appserver.rules.actions import Unit
from appserver.rules.compile import CompiledRule, compile_rule
from appserver.rules.schema import AddRules, RuleError, convert
from appserver.rules.subject import Subject


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
        self._leading: CompiledRule | None = None

    def __bool__(self) -> bool:
        return bool(self._rules)

    @property
    def rules(self) -> tuple[CompiledRule, ...]:
        return tuple(self._rules)

    @property
    def leading_catch_all(self) -> CompiledRule | None:
        """The first rule, when it decides every data frame the same way (``{match: {}, action: pass}``):
        the whole evaluation is then one counter (the engine's fastest path)."""
        return self._leading

    def _changed(self) -> None:
        first = self._rules[0] if self._rules else None
        catch_all = first is not None and first.event == "message" and not first.predicates
        self._leading = first if catch_all and first is not None and first.constant is not None else None

    def add(self, params: Any) -> list[str]:
        """addRules: all or nothing; RuleError naming the path of the first bad rule."""
        request: AddRules = convert(params, AddRules)
        taken = {rule.id for rule in self._rules}
        compiled = []
        for index, rule in enumerate(request.rules):
            rule_id = rule.id if rule.id is not None else self._new_id(taken)
            if rule_id in taken:
                raise RuleError(f"rules[{index}].id: a rule with id {rule_id!r} exists already")
            taken.add(rule_id)
            compiled.append(compile_rule(rule, rule_id, f"rules[{index}]"))
        self._rules = compiled + self._rules if request.position == "prepend" else self._rules + compiled
        self._changed()
        return [rule.id for rule in compiled]

    def _new_id(self, taken: set[str]) -> str:
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
