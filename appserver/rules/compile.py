"""A rule as the suite writes it, converted and compiled once, when it is added.

:class:`Rule` is the schema of one rule (its ``action`` one of actions.py's
table, or a list of them); :func:`add_rules` converts ``addRules`` params with
msgspec (the path of the first bad field: ``rules[1].match.event``), makes the
checks no schema can (an unknown Ably action, two fates, an action on an
event it cannot act on, ``fields`` on a non-message event …), each a
:class:`RuleError` naming the path, and turns each match into the engine's
predicates; then adds them all, or none.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from appserver.rules import actions as units
from appserver.rules.actions import ACTION_NAMES, AnyAction
from appserver.rules.engine import CompiledRule, RuleSet, predicates
from appserver.rules.schema import EVENTS, ActionConfig, Match, RuleError, _Strict, to_builtins

#: Match fields that look into a data frame's decoded Ably message (or the frame itself), and the
#: events that have them.
MESSAGE_FIELDS = {"type": ("message",), "action": ("message",), "channel": ("message",),
                  "fields": ("message", "http"), "method": ("http",)}  # fmt: skip


class Rule(_Strict, frozen=True):
    match: Match
    action: AnyAction | list[AnyAction]
    id: str | None = None
    times: int | None = None
    skip: int = 0

    @property
    def actions(self) -> tuple[ActionConfig, ...]:
        return tuple(self.action) if isinstance(self.action, list) else (self.action,)


class AddRules(_Strict, frozen=True):
    rules: list[Rule]
    position: Literal["append", "prepend"] = "append"


def add_rules(ruleset: RuleSet, params: Any) -> list[str]:
    """addRules: all or nothing; RuleError naming the path of the first bad rule. The new rules' ids."""
    request: AddRules = convert(params, AddRules)
    taken = ruleset.taken_ids()
    compiled = []
    for index, rule in enumerate(request.rules):
        rule_id = rule.id if rule.id is not None else ruleset.new_id(taken)
        if rule_id in taken:
            raise RuleError(f"rules[{index}].id: a rule with id {rule_id!r} exists already")
        taken.add(rule_id)
        compiled.append(compile_rule(rule, rule_id, f"rules[{index}]"))
    ruleset.insert(compiled, prepend=request.position == "prepend")
    return [rule.id for rule in compiled]


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
    wanted = None if m.action is None else frozenset(units.resolve_actions(m.action, f"{where}.match.action"))
    fate, effects = units.compile_actions(rule.actions, m.event, f"{where}.action")
    spec = to_builtins(rule)
    spec["id"] = rule_id
    compiled = CompiledRule(rule_id, spec, m.event, predicates(m, wanted), fate, effects, m.afterMs, rule.times,
                            rule.skip)  # fmt: skip
    fate_kind = fate.kind if fate is not None else None
    compiled.reads_body = m.event == "http" and (m.fields is not None or bool(fate_kind and fate_kind.reads_body))
    compiled.is_observer = bool(fate_kind and fate_kind.observer)
    compiled.notifies = bool(fate_kind and fate_kind.notifies) or any(unit.kind.notifies for unit in effects)
    compiled.side_effects = tuple(unit for unit in effects if not unit.kind.notifies)
    compiled.injects = any(unit.kind.injects for unit in effects)
    if fate_kind is not None and fate_kind.constant is not None and not effects and rule.times is None \
            and not rule.skip:  # fmt: skip
        compiled.constant = fate_kind.constant
    return compiled


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
