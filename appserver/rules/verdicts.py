"""The rules as the first link of every decider chain: an event's Outcome made a verdict.

:class:`Rules` holds the suite's :class:`~appserver.rules.engine.RuleSet` and
decides each data frame in one call (:meth:`Rules.decide`): at once when a
rule decides alone, or as an awaitable when a rule says ``transform`` (the
suite is asked, through the :class:`Suite` it was given: every call to the
suite leaves from control/). Here an :class:`~appserver.rules.engine.Outcome`
becomes a verdict — a fate's unit gives the fate, effect units the side
effects — and ``observe``/``notify`` send ``ruleMatched`` without making the
traffic wait. The other events' gates and hooks (handshakes, pings, closes,
timers, HTTP) are hooks.py's, made of the same steps.
It is also a sink of opens and closes: it keeps each open connection's
handshake, which rules match on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol, cast

from appserver.events import Closed, Event, Opened
from appserver.rules.actions import Transform, Unit
from appserver.rules.engine import CompiledRule, Outcome, RuleSet, Subject, count_match, reported
from appserver.verdict import (DROP, PASS, Decision, DecisionRecorder, Delay, Drop, Effect, HttpDrop, HttpResponse,
                               HttpVerdict, Inject, Pass, Replace, SuppressOnwards, Verdict)
from shared.connections import ConnectionOpened
from shared.constants import EVENT_RULE_MATCHED
from shared.wire import Frame, jsonable

log = logging.getLogger(__name__)

#: Who decided a frame dropped because its direction is suppressed (``suppressOnwards``).
SUPPRESSED = "suppressed"
#: The fates a data frame can have.
FATES = (Pass, Drop, Replace, Delay)


class UnknownFate(TypeError):
    """A rule's unit gave something that is no fate for its event (a bug in an action, never silently PASS)."""


class Suite(Protocol):
    """What the rules need of the active suite (control/suite.py): every call to it leaves from there."""

    decoded: bool
    #: startInterception/openSession ``window`` (SPEC Part 10).
    window: int

    @property
    def raw_frames(self) -> bool:
        """Its control connection carries frame data as bytes (msgpack), not Base64."""
        ...

    def ask(self, connection_id: str, frame: Frame, from_client: bool, rule_id: str | None) -> Awaitable[Verdict]: ...
    async def ask_http(self, info: ConnectionOpened, method: str, body: bytes | None, rule_id: str,
                       response: bool) -> HttpVerdict: ...  # fmt: skip
    async def transform_response(self, info: ConnectionOpened, rule_id: str,
                                 response: HttpResponse) -> HttpResponse | HttpDrop: ...  # fmt: skip
    def notify_soon(self, method: str, params: dict[str, Any]) -> None: ...


class Rules:
    #: A sink for Opened/Closed only (to know each connection's handshake).
    frames = False

    def __init__(self, suite: Suite, message_id: Callable[[], str], decisions: DecisionRecorder | None = None) -> None:
        self.ruleset = RuleSet()
        #: Called whenever it gains or loses its say on frames (its chains' refresh).
        self.on_engaged: list[Callable[[], None]] = []
        self.ruleset.on_change = self._engaged_changed
        self.suite = suite
        self._message_id = message_id
        self._decisions = decisions
        #: Each open connection's handshake, by id (what rules match on besides the frame).
        self.handshakes: dict[str, ConnectionOpened] = {}
        #: The rule that decided the last frame ("suite": it was asked), set just before the verdict is given:
        #: the pump reads it right after, with no suspension in between.
        self.decided_by: str | None = None
        #: (connection id, from_client): a direction of a connection whose every frame and ping is dropped from
        #: now on (a ``suppressOnwards`` rule fired while it was open); gone with the connection or the rules.
        self.suppressed: set[tuple[str, bool]] = set()

    @property
    def window(self) -> int:
        """The suite's window: a rule that asks the suite asks it as the suite's own dialogue would."""
        return self.suite.window

    @property
    def engaged(self) -> bool:
        """It has a say on frames while it has rules, or a suppressed direction to starve."""
        return not self.ruleset.empty or bool(self.suppressed)

    def _engaged_changed(self) -> None:
        for callback in self.on_engaged:
            callback()

    def forget(self, why: str) -> None:
        """The suite went away: its rules and what they suppressed go with it."""
        self.ruleset.clear(why)
        self.suppressed.clear()
        self._engaged_changed()

    # -- the sink ---------------------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        if isinstance(event, Opened):
            self.handshakes[event.info.id] = event.info
        elif isinstance(event, Closed):
            self.handshakes.pop(event.closed.id, None)
            if self.suppressed:
                self.suppressed -= {(event.closed.id, True), (event.closed.id, False)}
                self._engaged_changed()

    def seen(self, event: Any) -> None:
        """Not a frame sink (``frames`` is False): never told per-frame events."""

    def records_http(self) -> bool:
        return False

    def frame(self, connection_id: str, from_client: bool, frame: Frame, verdict: Verdict, by: str | None) -> None:
        """Not a frame sink."""

    # -- data frames: the first link of the chain -------------------------------------------

    def decide(self, connection_id: str, frame: Frame, from_client: bool) -> Verdict | Awaitable[Verdict] | None:
        if self.suppressed and (connection_id, from_client) in self.suppressed:
            self.decided_by = SUPPRESSED
            return DROP
        ruleset = self.ruleset
        if ruleset.empty:
            return None  # no rules: the dialogue as in Part 1
        catch_all = ruleset.leading_catch_all
        if catch_all is not None:  # e.g. {match: {}, action: pass} alone: one counter, no subject
            count_match(catch_all)
            self.decided_by = catch_all.id
            return catch_all.constant  # type: ignore[no-any-return]
        handshake = self.handshakes.get(connection_id)
        if handshake is None:
            return None
        subject = Subject("message", handshake, from_client, frame)
        outcome = self.evaluate(subject)
        if outcome is None:
            return None
        decided_by = outcome.decided_by
        if decided_by is not None and decided_by.constant is not None and not outcome.effects:
            self.decided_by = decided_by.id
            return decided_by.constant  # type: ignore[no-any-return]  # the fast path: pass or drop
        effects = self.effects(outcome, subject)
        if decided_by is None and not effects:
            return None  # only observers: the dialogue decides, as if no rule were there
        part = PASS if outcome.fate is None else self.apply(decided_by, outcome.fate, subject)
        if decided_by is None or isinstance(part, Transform):
            # No rule decided (observers with side effects), or one said "ask the suite".
            return self._asking(subject, decided_by, effects)
        self.decided_by = decided_by.id
        return self.verdict(part, effects, decided_by)

    async def _asking(self, subject: Subject, rule: CompiledRule | None, effects: tuple[Effect, ...]) -> Verdict:
        assert subject.frame is not None and subject.from_client is not None
        part = await self.suite.ask(subject.connection_id, subject.frame, subject.from_client,
                                    rule.id if rule is not None else None)  # fmt: skip
        self.decided_by = rule.id if rule is not None else "suite"
        return self.verdict(part, effects, rule)

    # -- the steps every event's verdict is made of (hooks.py uses them too) -------------------

    def evaluate(self, subject: Subject, only: CompiledRule | None = None,
                 extra: dict[str, Any] | None = None) -> Outcome | None:  # fmt: skip
        """The rules' outcome for this event (None: no rule matched, or a rule failed: passed on); its
        notifications sent, its decision recorded (a frame's is on the frame's own trace event)."""
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

    @staticmethod
    def apply(rule: CompiledRule | None, unit: Unit, subject: Subject) -> Any:
        """A unit's part of the verdict; PASS (with an ERROR) if the unit fails."""
        try:
            return unit.apply(subject)
        except Exception:  # a bug in an action: the event passes on unchanged
            log.exception("rule %r: its %s failed on connection %s: passed on unchanged",
                          rule.id if rule else None, unit.name, subject.connection_id)  # fmt: skip
            return PASS

    @staticmethod
    def verdict(fate: Any, effects: tuple[Effect, ...], rule: CompiledRule | None = None) -> Verdict:
        """A fate with side effects as one verdict. A fate that is none of a frame's is an error: logged with
        the rule's id, and the frame passes with its effects (never a silent PASS)."""
        if isinstance(fate, Decision):
            fate, effects = fate.fate, fate.effects + effects
        if not isinstance(fate, FATES):
            error = UnknownFate(f"rule {rule.id if rule else None!r} gave {fate!r}, which is not the fate of a frame")
            log.error("%s: passed on unchanged", error)
            fate = PASS
        return Decision(fate, effects) if effects else fate

    def effects(self, outcome: Outcome, subject: Subject, extra: dict[str, Any] | None = None,
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
                    self.suppressed.update((cid, effect.from_client) for cid in self.handshakes)
                    self._engaged_changed()
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

    def _notify(self, rule: CompiledRule, subject: Subject, extra: dict[str, Any] | None) -> None:
        self.suite.notify_soon(EVENT_RULE_MATCHED, matched_params(rule, subject, extra, self._message_id(),
                                                                  self.suite.decoded, self.suite.raw_frames))  # fmt: skip


# -- what the rules tell others: ruleMatched (SPEC Part 3), a decision for the trace (SPEC Part 5) ----------


def matched_params(rule: CompiledRule, subject: Subject, extra: dict[str, Any] | None, message_id: str,
                   decoded: bool, raw: bool = False) -> dict[str, Any]:  # fmt: skip
    """ruleMatched's params; ``raw``: for a msgpack control connection (binary data as bytes)."""
    frame = subject.frame
    if frame is not None:  # the common case (observing frames), built in one go
        params: dict[str, Any] = {"ruleId": rule.id, "event": subject.event, "connectionID": subject.connection_id,
                                  "fromClient": subject.from_client, "id": message_id, "type": frame.type.value,
                                  "data": frame.wire_data(raw), "matched": rule.matched}  # fmt: skip
        if decoded:
            params["message"] = jsonable(subject.message())
        return params
    params = {"ruleId": rule.id, "event": subject.event, "connectionID": subject.connection_id,
              "matched": rule.matched}  # fmt: skip
    if subject.from_client is not None:
        params["fromClient"] = subject.from_client
    if subject.event == "connect":
        h = subject.handshake
        params.update(path=h.path, query=h.query, headers=h.headers, host=h.host)
    elif subject.event == "http":
        params.update(method=subject.method, url=subject.handshake.url)
    if extra:
        params.update(extra)
    return params


def decision_fields(subject: Subject, outcome: Outcome) -> dict[str, Any]:
    """A decision about anything but a frame (a frame's is on its own trace event): which rule, what."""
    fields: dict[str, Any] = {"event": subject.event}
    if subject.from_client is not None:
        fields["fromClient"] = subject.from_client
    if outcome.decided_by is not None and outcome.fate is not None:
        fields.update(ruleId=outcome.decided_by.id, action=outcome.fate.name)
    if outcome.effects:
        fields["effects"] = [{"ruleId": rule.id, "action": unit.name} for rule, unit in outcome.effects]
    if subject.event in ("connect", "http"):
        fields["url"] = subject.handshake.url
    return fields
