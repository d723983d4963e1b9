"""The rules on everything but data frames: the connect gate, the hooks on pings, pongs, closes and timers,
and the HTTP gate (SPEC Parts 3 and 4).

:class:`RuleHooks` is given the suite's :class:`~appserver.rules.verdicts.Rules`
and makes each event's verdict from the same steps a frame's is made of
(evaluate, apply, effects); where a rule says ``transform`` on an HTTP
exchange, the suite is asked through ``Rules.suite`` (control/suite.py).
"""

from __future__ import annotations

from collections.abc import Callable

from appserver.rules.actions import Transform
from appserver.rules.engine import CompiledRule, Subject
from appserver.rules.verdicts import Rules
from appserver.verdict import (ADMIT, DROP, HTTP_FORWARD, PASS, Admit, ConnectVerdict, Delay, Effect, HttpDrop,
                               HttpResponse, HttpVerdict, Refuse, ResponseEdit, Route, Silence, Timer, Verdict)
from shared.connections import ConnectionOpened


class RuleHooks:
    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    # -- handshakes: the connect gate --------------------------------------------------------

    async def admit(self, info: ConnectionOpened) -> ConnectVerdict:
        rules = self.rules
        if rules.ruleset.empty:
            return ADMIT
        subject = Subject("connect", info)
        outcome = rules.evaluate(subject)
        if outcome is None:
            return ADMIT
        fate = rules.apply(outcome.decided_by, outcome.fate, subject) if outcome.fate is not None else PASS
        effects = rules.effects(outcome, subject, applied=not isinstance(fate, Refuse))
        if isinstance(fate, Refuse):
            return fate
        served = tuple(e for e in effects if not isinstance(e, Silence))
        return Admit(
            delay_ms=fate.ms if isinstance(fate, Delay) else 0,
            route=fate if isinstance(fate, Route) else None,
            serve=served or None,
            effects=tuple(e for e in effects if isinstance(e, Silence)),
        )

    # -- pings, pongs, closes, timers --------------------------------------------------------

    def control(self, event: str, connection_id: str, from_client: bool, payload: bytes) -> Verdict:
        rules = self.rules
        if rules.suppressed and (connection_id, from_client) in rules.suppressed:
            return DROP  # a suppressed direction starves: its pings go too (uts-proxy relays none)
        handshake = rules.handshakes.get(connection_id)
        if rules.ruleset.empty or handshake is None:
            return PASS
        subject = Subject(event, handshake, from_client, payload=payload)
        outcome = rules.evaluate(subject)
        if outcome is None:
            return PASS
        effects = rules.effects(outcome, subject, applied=False)  # a ping's side effects are not applied
        if outcome.fate is None:
            return PASS
        return rules.verdict(rules.apply(outcome.decided_by, outcome.fate, subject), effects, outcome.decided_by)

    def closing(self, connection_id: str, from_client: bool, code: int | None, reason: str, abrupt: bool) -> Verdict:
        rules = self.rules
        handshake = rules.handshakes.get(connection_id)
        if rules.ruleset.empty or handshake is None:
            return PASS
        subject = Subject("close", handshake, from_client)
        extra = {"code": code, "reason": reason, "abrupt": abrupt}
        outcome = rules.evaluate(subject, extra=extra)
        if outcome is None:
            return PASS
        fate = rules.apply(outcome.decided_by, outcome.fate, subject) if outcome.fate is not None else PASS
        return rules.verdict(fate, rules.effects(outcome, subject, extra), outcome.decided_by)

    def timers(self, info: ConnectionOpened) -> list[Timer]:
        return [(rule.after_ms / 1000, self._firing(rule, info)) for rule in self.rules.ruleset.timers()
                if rule.after_ms is not None]  # fmt: skip

    def _firing(self, rule: CompiledRule, info: ConnectionOpened) -> Callable[[], tuple[Effect, ...]]:
        def fire() -> tuple[Effect, ...]:
            if rule not in self.rules.ruleset.timers():
                return ()  # removed meanwhile
            subject = Subject("timer", info)
            outcome = self.rules.evaluate(subject, only=rule)
            return () if outcome is None else self.rules.effects(outcome, subject)

        return fire

    # -- plain HTTP: the gate every request passes (SPEC Part 4) ---------------------------------

    @property
    def quiet(self) -> bool:
        return self.rules.ruleset.empty

    def wants_body(self, info: ConnectionOpened, method: str) -> bool:
        """Whether an http rule that could match this request looks into its body (``fields``)."""
        return any(rule.event == "http" and rule.reads_body for rule in self.rules.ruleset.rules)

    async def decide_http(self, info: ConnectionOpened, method: str, body: bytes | None) -> HttpVerdict:
        rules = self.rules
        if rules.ruleset.empty:
            return HTTP_FORWARD
        subject = Subject("http", info, method=method, body=body)
        outcome = rules.evaluate(subject)
        if outcome is not None and outcome.held:
            rules.effects(outcome, subject, applied=False)  # nothing is injected on HTTP
        if outcome is None or outcome.fate is None:
            return HTTP_FORWARD
        part = rules.apply(outcome.decided_by, outcome.fate, subject)
        if isinstance(part, Transform):
            assert outcome.decided_by is not None
            return await rules.suite.ask_http(info, method, body, outcome.decided_by.id, part.response)
        if isinstance(part, HttpResponse):
            return HttpVerdict(respond=part)
        if isinstance(part, HttpDrop):
            return HttpVerdict(drop=part)
        if isinstance(part, Delay):
            return HttpVerdict(delay_ms=part.ms)
        if isinstance(part, Route):
            return HttpVerdict(route=part)
        if isinstance(part, ResponseEdit):
            return HttpVerdict(edit=part)
        return HTTP_FORWARD

    async def transform_response(self, info: ConnectionOpened, rule_id: str,
                                 response: HttpResponse) -> HttpResponse | HttpDrop:  # fmt: skip
        return await self.rules.suite.transform_response(info, rule_id, response)
