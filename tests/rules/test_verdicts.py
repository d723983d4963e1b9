"""The Outcome → Verdict step as tables, with a fake suite and no server: what Rules.decide gives a frame, and
what it asks of or tells the suite."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from appserver.events import Closed, Opened
from appserver.rules.actions import Kind, Unit
from appserver.rules.compile import add_rules
from appserver.rules.verdicts import Rules
from appserver.verdict import DROP, PASS, Chain, CloseLegs, Decision, Delay, HttpResponse, HttpVerdict, Inject, Replace, Verdict
from appserver.rules import schema
from shared.connections import ClosedBy, ConnectionClosed, ConnectionOpened
from shared.wire import Frame

HANDSHAKE = ConnectionOpened("ws://realtime.test/?format=json", "realtime.test", "ws", "/", {"format": "json"}, {},
                             id="c1")  # fmt: skip
FRAME = Frame.text(json.dumps({"action": 15, "channel": "a"}))


class FakeSuite:
    decoded = False
    window = 1
    raw_frames = False

    def __init__(self, answer: Verdict = PASS) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str | None]] = []
        self.notified: list[dict[str, Any]] = []

    async def ask(self, connection_id: str, frame: Frame, from_client: bool, rule_id: str | None) -> Verdict:
        self.asked.append((connection_id, rule_id))
        return self.answer

    async def ask_http(self, *args: Any) -> HttpVerdict:
        raise AssertionError("not asked here")

    async def transform_response(self, *args: Any) -> HttpResponse:
        raise AssertionError("not asked here")

    def notify_soon(self, method: str, params: dict[str, Any]) -> None:
        self.notified.append(params)


async def rules_with(suite: FakeSuite, *specs: dict[str, Any]) -> Rules:
    rules = Rules(suite, lambda: "m1")
    add_rules(rules.ruleset, {"rules": list(specs)})
    await rules.publish(Opened(HANDSHAKE, None))
    return rules


async def decide(rules: Rules) -> Verdict | None:
    found = rules.decide("c1", FRAME, True)
    if found is not None and not isinstance(found, (type(PASS), type(DROP), Replace, Delay, Decision)):
        found = await found  # type: ignore[misc]
    return found  # type: ignore[return-value]


@pytest.mark.parametrize(
    "action, expected, asked, by",
    [
        ({"type": "pass"}, PASS, [], "r"),
        ({"type": "drop"}, DROP, [], "r"),
        ({"type": "delay", "ms": 5}, Delay(5), [], "r"),
        ({"type": "replace", "raw": {"type": "text", "data": "x"}}, Replace(Frame.text("x")), [], "r"),
        ({"type": "transform"}, DROP, [("c1", "r")], "r"),  # the suite's answer (the fake says drop)
        ([{"type": "drop"}, {"type": "close", "side": "client", "code": 4000}],
         Decision(DROP, (CloseLegs(("client",), 4000, "", False),)), [], "r"),
        ({"type": "inject", "raw": {"type": "text", "data": "i"}},
         Decision(PASS, (Inject(Frame.text("i"), True),)), [], "r"),
    ],
)  # fmt: skip
async def test_a_rule_s_outcome_is_its_verdict(action: Any, expected: Verdict, asked: list[Any], by: str) -> None:
    suite = FakeSuite(answer=DROP)
    rules = await rules_with(suite, {"id": "r", "match": {"action": "MESSAGE"}, "action": action})
    assert await decide(rules) == expected
    assert suite.asked == asked
    assert rules.decided_by == by


async def test_no_rule_is_no_opinion_and_observers_notify_without_deciding() -> None:
    suite = FakeSuite()
    rules = await rules_with(suite, {"id": "o", "match": {}, "action": {"type": "observe"}})
    assert await decide(rules) is None  # the dialogue decides, as if no rule were there
    assert [n["ruleId"] for n in suite.notified] == ["o"] and suite.asked == []
    empty = await rules_with(FakeSuite())
    assert empty.decide("c1", FRAME, True) is None


async def test_an_observer_with_a_side_effect_asks_the_suite_for_the_fate() -> None:
    suite = FakeSuite(answer=Replace(Frame.text("from the suite")))
    rules = await rules_with(suite, {"id": "o", "match": {}, "action": [{"type": "observe"},
                                     {"type": "close", "side": "server", "code": 4001}]})  # fmt: skip
    assert await decide(rules) == Decision(Replace(Frame.text("from the suite")),
                                           (CloseLegs(("server",), 4001, "", False),))
    assert suite.asked == [("c1", None)] and rules.decided_by == "suite"


async def test_an_unknown_fate_is_an_error_not_a_silent_pass(caplog: pytest.LogCaptureFixture) -> None:
    """A unit that gives something no frame can have is logged at ERROR with its rule; the frame passes."""
    suite = FakeSuite()
    rules = await rules_with(suite, {"id": "bad", "match": {"action": "MESSAGE"}, "action": {"type": "delay", "ms": 1}})
    [rule] = rules.ruleset.rules
    broken = Kind(schema.DelayAction, True, frozenset({"message"}), lambda config, where, event: lambda s: "later")
    rule.fate = Unit(broken, lambda subject: "later")
    with caplog.at_level(logging.ERROR):
        assert await decide(rules) == PASS
    assert "rule 'bad' gave 'later', which is not the fate of a frame" in caplog.text


async def test_a_leading_catch_all_is_one_counter() -> None:
    rules = await rules_with(FakeSuite(), {"id": "all", "match": {}, "action": {"type": "pass"}})
    for _ in range(3):
        assert rules.decide("c1", FRAME, True) is PASS
    assert rules.ruleset.listed()[0]["matched"] == 3
    await asyncio.sleep(0)


async def test_the_rules_are_in_their_chain_only_while_they_have_a_say() -> None:
    """A connection's chain (verdict.Chain) leaves out a decider with nothing to decide, so a frame no rule can
    touch costs no call; the rules step in with their first rule and out with their last, or once what a
    suppressOnwards starved has closed."""
    rules = Rules(FakeSuite(), lambda: "m1")
    chain = Chain((rules,))
    rules.on_engaged.append(chain.refresh)
    assert chain.deciders == ()
    await rules.publish(Opened(HANDSHAKE, None))
    add_rules(rules.ruleset, {"rules": [{"id": "drop", "match": {}, "action": {"type": "drop"}}]})
    assert chain.deciders == (rules,)
    assert await decide(rules) == DROP
    rules.ruleset.remove(["drop"])
    assert chain.deciders == ()
    add_rules(rules.ruleset, {"rules": [{"id": "quiet", "match": {}, "action": {"type": "suppressOnwards"}}]})
    assert await decide(rules) == PASS  # the frame that set it off passes; the client side starves from now on
    rules.ruleset.remove(["quiet"])
    assert rules.ruleset.empty and rules.suppressed == {("c1", True)}
    assert chain.deciders == (rules,)  # still starving c1's client side
    assert await decide(rules) == DROP
    await rules.publish(Closed(ConnectionClosed("c1", ClosedBy.CLIENT, 1000, "", True), HANDSHAKE.url))
    assert chain.deciders == ()
    add_rules(rules.ruleset, {"rules": [{"id": "r", "match": {}, "action": {"type": "pass"}}]})
    rules.forget("the test suite went away")
    assert chain.deciders == ()
