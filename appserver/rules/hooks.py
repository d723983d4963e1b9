"""The rule engine as the relay sees it: the first decider of every chain, the connect gate, the
hooks on pings, pongs, closes and timers, and a sink that keeps each connection's handshake.

This is where an :class:`~appserver.rules.engine.Outcome` becomes a verdict:
a fate's unit gives the frame's fate, effect units give side effects,
``transform`` asks the suite (with the rule's id), and ``observe``/``notify``
send ``ruleMatched`` without making the traffic wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol, cast

from appserver.relay.events import Closed, Event, Opened
from appserver.rules.actions import Transform
from appserver.rules.http_dialogue import (parse_request_answer, parse_response_answer, request_params,
                                           response_params)
from appserver.rules.compile import CompiledRule
from appserver.rules.engine import Outcome, RuleSet, count_match, reported
from appserver.rules.reports import decision_fields, matched_params
from appserver.rules.subject import Subject
from appserver.verdict import (ADMIT, DROP, HTTP_FORWARD, PASS, Admit, ConnectVerdict, Decision, Decisions, Delay,
                               Drop, Effect, HttpDrop, HttpResponse, HttpVerdict, Inject, Pass, Refuse, Replace,
                               ResponseEdit, Route, Silence, SuppressOnwards, Timer, Verdict)
from shared.constants import EVENT_RULE_MATCHED, METHOD_HTTP_REQUEST, METHOD_HTTP_RESPONSE
from shared.connections import ConnectionOpened
from shared.wire import Frame, WireError

log = logging.getLogger(__name__)

#: Who decided a frame dropped because its direction is suppressed (``suppressOnwards``).
SUPPRESSED = "suppressed"


class Suite(Protocol):
    """What the rules need of the active suite (control/suite.py)."""

    decoded: bool

    async def ask(self, connection_id: str, frame: Frame, from_client: bool, rule_id: str | None) -> Verdict: ...
    async def ask_raw(self, method: str, params: dict[str, Any], what: str) -> Any: ...
    def next_id(self) -> str: ...
    def notify_soon(self, method: str, params: dict[str, Any]) -> None: ...


class Rules:
    #: A sink for Opened/Closed only (to know each connection's handshake).
    frames = False

    def __init__(self, suite: Suite, message_id: Callable[[], str], decisions: Decisions | None = None) -> None:
        self.ruleset = RuleSet()
        self._suite = suite
        self._message_id = message_id
        self._decisions = decisions
        self._handshakes: dict[str, ConnectionOpened] = {}
        #: The rule that decided the last frame ("suite": it was asked), set just before decide returns: the
        #: connection reads it right after, with no suspension in between.
        self.decided_by: str | None = None
        #: (connection id, from_client): a direction of a connection whose every frame and ping is dropped from
        #: now on (a ``suppressOnwards`` rule fired while it was open); gone with the connection or the rules.
        self.suppressed: set[tuple[str, bool]] = set()

    # -- the sink ---------------------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        if isinstance(event, Opened):
            self._handshakes[event.info.id] = event.info
        elif isinstance(event, Closed):
            self._handshakes.pop(event.closed.id, None)
            if self.suppressed:
                self.suppressed -= {(event.closed.id, True), (event.closed.id, False)}

    def seen(self, event: Any) -> None:
        """Not a frame sink (``frames`` is False): never told per-frame events."""

    def frame(self, connection_id: str, from_client: bool, frame: Frame, verdict: Verdict, by: str | None) -> None:
        """Not a frame sink."""


    # -- data frames: the first link of the chain -------------------------------------------

    async def decide(self, connection_id: str, frame: Frame, from_client: bool) -> Verdict | None:
        if self.suppressed and (connection_id, from_client) in self.suppressed:
            self.decided_by = SUPPRESSED
            return DROP
        ruleset = self.ruleset
        if not ruleset:
            return None  # no rules: the dialogue as in Part 1
        catch_all = ruleset.leading_catch_all
        if catch_all is not None:  # e.g. {match: {}, action: pass} alone: one counter, no subject
            count_match(catch_all)
            self.decided_by = catch_all.id
            return catch_all.constant  # type: ignore[no-any-return]
        handshake = self._handshakes.get(connection_id)
        if handshake is None:
            return None
        subject = Subject("message", handshake, from_client, frame)
        outcome = self._evaluate(subject)
        if outcome is None:
            return None
        decided_by = outcome.decided_by
        if decided_by is not None and decided_by.constant is not None and not outcome.effects:
            self.decided_by = decided_by.id
            return decided_by.constant  # type: ignore[no-any-return]  # the fast path: pass or drop
        effects = self._effects(outcome, subject)
        if outcome.decided_by is None and not effects:
            return None  # only observers: the dialogue decides, as if no rule were there
        part = PASS if outcome.fate is None else self._apply(outcome.decided_by, outcome.fate, subject)
        if outcome.decided_by is None or isinstance(part, Transform):
            # No rule decided (observers with side effects), or one said "ask the suite".
            rule_id = outcome.decided_by.id if outcome.decided_by is not None else None
            part = await self._suite.ask(connection_id, frame, from_client, rule_id)
        self.decided_by = decided_by.id if decided_by is not None else "suite"
        return self._verdict(part, effects)

    @staticmethod
    def _apply(rule: CompiledRule | None, unit: Any, subject: Subject) -> Any:
        try:
            return unit.apply(subject)
        except Exception:  # a bug in an action: the frame passes on unchanged
            log.exception("rule %r: its %s failed on connection %s: passed on unchanged",
                          rule.id if rule else None, unit.name, subject.connection_id)  # fmt: skip
            return PASS

    @staticmethod
    def _verdict(fate: Any, effects: tuple[Effect, ...]) -> Verdict:
        if isinstance(fate, Decision):
            fate, effects = fate.fate, fate.effects + effects
        if not isinstance(fate, (Pass, Drop, Replace, Delay)):
            fate = PASS
        return Decision(fate, effects) if effects else fate

    # -- handshakes: the connect gate --------------------------------------------------------

    async def admit(self, info: ConnectionOpened) -> ConnectVerdict:
        if not self.ruleset:
            return ADMIT
        subject = Subject("connect", info)
        outcome = self._evaluate(subject)
        if outcome is None:
            return ADMIT
        fate = self._apply(outcome.decided_by, outcome.fate, subject) if outcome.fate is not None else PASS
        effects = self._effects(outcome, subject, applied=not isinstance(fate, Refuse))
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
        if self.suppressed and (connection_id, from_client) in self.suppressed:
            return DROP  # a suppressed direction starves: its pings go too (uts-proxy relays none)
        handshake = self._handshakes.get(connection_id)
        if not self.ruleset or handshake is None:
            return PASS
        subject = Subject(event, handshake, from_client, payload=payload)
        outcome = self._evaluate(subject)
        if outcome is None:
            return PASS
        effects = self._effects(outcome, subject, applied=False)  # a ping's side effects are not applied
        if outcome.fate is None:
            return PASS
        return self._verdict(self._apply(outcome.decided_by, outcome.fate, subject), effects)

    def closing(self, connection_id: str, from_client: bool, code: int | None, reason: str, abrupt: bool) -> Verdict:
        handshake = self._handshakes.get(connection_id)
        if not self.ruleset or handshake is None:
            return PASS
        subject = Subject("close", handshake, from_client)
        extra = {"code": code, "reason": reason, "abrupt": abrupt}
        outcome = self._evaluate(subject, extra=extra)
        if outcome is None:
            return PASS
        fate = self._apply(outcome.decided_by, outcome.fate, subject) if outcome.fate is not None else PASS
        return self._verdict(fate, self._effects(outcome, subject, extra))

    def timers(self, info: ConnectionOpened) -> list[Timer]:
        return [(rule.after_ms / 1000, self._firing(rule, info)) for rule in self.ruleset.timers()
                if rule.after_ms is not None]  # fmt: skip

    def _firing(self, rule: CompiledRule, info: ConnectionOpened) -> Callable[[], tuple[Effect, ...]]:
        def fire() -> tuple[Effect, ...]:
            if rule not in self.ruleset.timers():
                return ()  # removed meanwhile
            subject = Subject("timer", info)
            outcome = self._evaluate(subject, only=rule)
            return () if outcome is None else self._effects(outcome, subject)

        return fire

    # -- plain HTTP: the gate every request passes (SPEC Part 4) ---------------------------------

    def wants_body(self, info: ConnectionOpened, method: str) -> bool:
        """Whether an http rule that could match this request looks into its body (``fields``)."""
        return any(rule.event == "http" and rule.reads_body for rule in self.ruleset.rules)

    async def decide_http(self, info: ConnectionOpened, method: str, body: bytes | None) -> HttpVerdict:
        if not self.ruleset:
            return HTTP_FORWARD
        subject = Subject("http", info, method=method, body=body)
        outcome = self._evaluate(subject)
        if outcome is not None and outcome.held:
            self._effects(outcome, subject, applied=False)  # nothing is injected on HTTP
        if outcome is None or outcome.fate is None:
            return HTTP_FORWARD
        part = self._apply(outcome.decided_by, outcome.fate, subject)
        if isinstance(part, Transform):
            assert outcome.decided_by is not None
            return await self._ask_http(info, method, body, outcome.decided_by.id, part.response)
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

    async def _ask_http(self, info: ConnectionOpened, method: str, body: bytes | None, rule_id: str,
                        response: bool) -> HttpVerdict:  # fmt: skip
        """transformInterceptedHttpRequest; what the suite said (forward unchanged when it said nothing usable)."""
        exchange = self._suite.next_id()
        what = f"HTTP request {exchange} ({method} {info.url})"
        raw = await self._suite.ask_raw(METHOD_HTTP_REQUEST, request_params(exchange, info, method, body, rule_id),
                                        what)  # fmt: skip
        verdict: HttpVerdict | None = None
        if raw is not None:
            try:
                verdict = parse_request_answer(raw)
            except WireError as exc:
                log.error("%s passed on unchanged: the test suite's answer was unusable: %s", what, exc)
        if response and (verdict is None or verdict.request is not None):
            return HttpVerdict(request=verdict.request if verdict else None, transform_response=rule_id)
        return verdict or HTTP_FORWARD

    async def transform_response(self, info: ConnectionOpened, rule_id: str,
                                 response: HttpResponse) -> HttpResponse | HttpDrop:  # fmt: skip
        exchange = self._suite.next_id()
        what = f"HTTP response {exchange} ({response.status} for {info.url})"
        raw = await self._suite.ask_raw(METHOD_HTTP_RESPONSE, response_params(exchange, info, response), what)
        if raw is None:
            return response
        try:
            return parse_response_answer(raw, response)
        except WireError as exc:
            log.error("%s passed on unchanged: the test suite's answer was unusable: %s", what, exc)
            return response

    # -- shared ------------------------------------------------------------------------------

    def _evaluate(self, subject: Subject, only: CompiledRule | None = None,
                  extra: dict[str, Any] | None = None) -> Outcome | None:  # fmt: skip
        try:
            outcome = self.ruleset.evaluate(subject, only)
        except Exception:  # a bug in a rule must never break the connection: pass the event on
            log.exception("a rule failed on a %s event of connection %s: passed on unchanged", subject.event,
                          subject.connection_id)  # fmt: skip
            return None
        if outcome is not None:
            for rule in outcome.notify:
                if rule not in outcome.held:  # an injecting rule notifies once its frame is written
                    self._notify(rule, subject, extra)
            if self._decisions is not None and subject.event != "message" and (outcome.fate or outcome.effects):
                self._decisions.decision(subject.connection_id, **decision_fields(subject, outcome))
        return outcome

    def _notify(self, rule: CompiledRule, subject: Subject, extra: dict[str, Any] | None) -> None:
        self._suite.notify_soon(EVENT_RULE_MATCHED, matched_params(rule, subject, extra, self._message_id(),
                                                                   self._suite.decoded))  # fmt: skip

    def _effects(self, outcome: Outcome, subject: Subject, extra: dict[str, Any] | None = None,
                 applied: bool = True) -> tuple[Effect, ...]:  # fmt: skip
        """The side effects' parts. A rule that injects is reported (waitForRule, ruleMatched) only once
        its last injected frame is written (SPEC Part 9): the report rides on that Inject's ``done``;
        when the effects will not be applied (``applied`` False), or it has no inject, it is reported now."""
        effects: list[Effect] = []
        last_inject: dict[str, int] = {}
        for rule, unit in outcome.effects:
            try:
                effect = unit.apply(subject)
            except Exception:
                log.exception("rule %r: its %s failed on connection %s: left out", rule.id, unit.name,
                              subject.connection_id)  # fmt: skip
                continue
            if isinstance(effect, SuppressOnwards):  # the rules' own business, applied at once
                if applied:  # on every connection of the suite open now; those opened later start clean
                    self.suppressed.update((cid, effect.from_client) for cid in self._handshakes)
                continue
            if isinstance(effect, Inject):
                last_inject[rule.id] = len(effects)
            effects.append(effect)
        for rule in outcome.held:
            report = self._report(rule, subject, extra)
            index = last_inject.get(rule.id)
            if index is None or not applied:
                report()
            else:
                effects[index] = replace(cast(Inject, effects[index]), done=report)
        return tuple(effects)

    def _report(self, rule: CompiledRule, subject: Subject, extra: dict[str, Any] | None) -> Callable[[], None]:
        def report() -> None:
            reported(rule)
            if rule.notifies:
                self._notify(rule, subject, extra)

        return report
