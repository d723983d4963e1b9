"""The rule engine as tables, with no event loop: validation, matching, counters, fates and effects."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from appserver.rules.engine import RuleSet
from appserver.rules.schema import RuleError
from appserver.rules.compile import add_rules
from appserver.rules.engine import Subject
from appserver.verdict import CloseLegs, Delay, Inject, Pass, Replace, Silence
from shared.connections import ConnectionOpened
from shared.wire import Frame

HANDSHAKE = ConnectionOpened("ws://realtime.test/?v=6&format=json&key=k", "realtime.test", "ws", "/",
                             {"v": "6", "format": "json", "key": "k"}, {"User-Agent": "ably-js", "X-Trace": "1"})


def message(data: dict[str, Any], from_client: bool = False, binary: bool = False,
            handshake: ConnectionOpened = HANDSHAKE) -> Subject:  # fmt: skip
    frame = Frame.binary(msgpack.packb(data)) if binary else Frame.text(json.dumps(data))
    return Subject("message", handshake, from_client, frame)


def rules(*specs: dict[str, Any]) -> RuleSet:
    ruleset = RuleSet()
    add_rules(ruleset, {"rules": list(specs)})
    return ruleset


def decided(ruleset: RuleSet, subject: Subject) -> str | None:
    outcome = ruleset.evaluate(subject)
    return None if outcome is None or outcome.decided_by is None else outcome.decided_by.id


@pytest.mark.parametrize(
    "params, error",
    [
        ({"rules": [{"match": {}, "action": {"type": "drop"}}, {"match": {"action": "ATACH"}, "action": {"type": "drop"}}]},
         "rules[1].match.action: unknown Ably action 'ATACH' (valid: HEARTBEAT, ACK"),
        ({"rules": [{"match": {"action": 99}, "action": {"type": "drop"}}]}, "rules[0].match.action: unknown Ably action number 99"),
        ({"rules": [{"match": {}, "action": {"type": "dorp"}}]}, "rules[0].action.type: Invalid value 'dorp' (valid actions: pass,"),
        ({"rules": [{"match": {"event": "later"}, "action": {"type": "drop"}}]}, "rules[0].match.event: Invalid enum value 'later' (valid events:"),
        ({"rules": [{"match": {}, "action": [{"type": "drop"}, {"type": "delay", "ms": 5}]}]},
         "rules[0].action[1]: two fates in one action list ('drop' and 'delay')"),
        ({"rules": [{"match": {}, "action": {"type": "drop"}, "times": 0}]}, "rules[0].times: must be at least 1, got 0"),
        ({"rules": [{"match": {}, "action": {"type": "drop"}, "times": -2}]}, "rules[0].times: must be at least 1, got -2"),
        ({"rules": [{"match": {}, "action": {"type": "refuse"}}]}, "rules[0].action: 'refuse' cannot act on message events (it acts on: connect)"),
        ({"rules": [{"match": {"event": "timer", "afterMs": 5}, "action": {"type": "refuse"}}]}, "rules[0].action: 'refuse' cannot act on timer"),
        ({"rules": [{"match": {"event": "connect", "fields": {"a": 1}}, "action": {"type": "refuse"}}]},
         "rules[0].match.fields: only message and http events have it (this rule's event is 'connect')"),
        ({"rules": [{"match": {"event": "timer"}, "action": {"type": "notify"}}]}, "rules[0].match.afterMs: a timer rule needs afterMs"),
        ({"rules": [{"match": {"afterMs": 5}, "action": {"type": "notify"}}]}, "rules[0].match.afterMs: only timer rules have it"),
        ({"rules": [{"match": {}, "action": {"type": "replace"}}]}, "rules[0].action: give either 'message'"),
        ({"rules": [{"match": {}, "action": {"type": "replace", "raw": {"type": "binary", "data": "!!"}}}]}, "rules[0].action.raw: 'data' must be Base64"),
        ({"rules": [{"match": {}, "action": {"type": "close", "code": 1006}}]}, "rules[0].action: close code 1006 may not be sent"),
        ({"rules": [{"match": {}, "action": {"type": "delay"}}]}, "rules[0].action: Object missing required field `ms`"),
        ({"rules": [{"match": {"colour": "red"}, "action": {"type": "drop"}}]}, "rules[0].match: Object contains unknown field `colour`"),
        ({"rules": [{"match": {}, "action": {"type": "drop"}, "id": "a"}, {"match": {}, "action": {"type": "pass"}, "id": "a"}]},
         "rules[1].id: a rule with id 'a' exists already"),
        ({"rules": [{"match": {}, "action": {"type": "replace", "message": {"action": "NACKK"}}}]},
         "rules[0].action.message.action: unknown Ably action 'NACKK'"),
        ({"rules": "all of them"}, "rules: Expected `array`, got `str`"),
    ],
)  # fmt: skip
def test_bad_rules_are_refused_naming_the_path(params: dict[str, Any], error: str) -> None:
    """Every bad rule is a RuleError whose message names the path and says what would be valid; nothing is kept."""
    ruleset = rules({"id": "kept", "match": {}, "action": {"type": "pass"}})
    with pytest.raises(RuleError) as caught:
        add_rules(ruleset, params)
    assert str(caught.value).startswith(error), str(caught.value)
    assert [r["id"] for r in ruleset.listed()] == ["kept"]  # all or nothing


@pytest.mark.parametrize(
    "match, subject, holds",
    [
        ({}, message({"action": 15}), True),
        ({"fromClient": True}, message({"action": 15}), False),
        ({"fromClient": False}, message({"action": 15}), True),
        ({"type": "binary"}, message({"action": 15}, binary=True), True),
        ({"type": "binary"}, message({"action": 15}), False),
        ({"action": "ACK"}, message({"action": 1}), True),
        ({"action": 1}, message({"action": 1}, binary=True), True),
        ({"action": ["NACK", "ack"]}, message({"action": 1}), True),
        ({"action": "OBJECT_SYNC"}, message({"action": 20}), True),
        ({"action": "ANNOTATION"}, message({"action": 21}, binary=True), True),
        ({"action": "ACK"}, message({"action": 2}), False),
        ({"channel": "room*"}, message({"action": 15, "channel": "room:1/a"}), True),
        ({"channel": "room"}, message({"action": 15, "channel": "room:1"}), False),
        ({"channel": "room"}, message({"action": 15}), False),
        ({"fields": {"error.code": 40142, "flags": 16}}, message({"action": 9, "error": {"code": 40142}, "flags": 16}), True),
        ({"fields": {"error.code": 40142}}, message({"action": 9, "error": {"code": 40140}}), False),
        ({"fields": {"messages.0.name": "greeting"}}, message({"action": 15, "messages": [{"name": "greeting"}]}), True),
        ({"host": "*.TEST"}, message({"action": 15}), True),
        ({"host": "rest.test"}, message({"action": 15}), False),
        ({"path": "/"}, message({"action": 15}), True),
        ({"query": {"format": "json", "key": True, "resume": False}}, message({"action": 15}), True),
        ({"query": {"resume": True}}, message({"action": 15}), False),
        ({"query": {"v": "5"}}, message({"action": 15}), False),
        ({"headers": {"user-agent": "ably-js", "x-other": False}}, message({"action": 15}), True),
        ({"headers": {"X-Trace": "2"}}, message({"action": 15}), False),
        ({"connectionID": HANDSHAKE.id}, message({"action": 15}), True),
        ({"connectionID": "another"}, message({"action": 15}), False),
        ({"action": "ACK"}, Subject("message", HANDSHAKE, False, Frame.text("not json")), False),
    ],
)  # fmt: skip
def test_match_fields(match: dict[str, Any], subject: Subject, holds: bool) -> None:
    """Each match field holds exactly when the spec says (a frame that does not decode matches no Ably field)."""
    assert (decided(rules({"id": "r", "match": match, "action": {"type": "drop"}}), subject) == "r") is holds


def test_first_deciding_rule_wins_and_observers_go_on() -> None:
    """Observe rules record and evaluation goes on; the first other matching rule decides; later ones are not asked."""
    ruleset = rules({"id": "o", "match": {}, "action": {"type": "observe"}},
                    {"id": "ack", "match": {"action": "ACK"}, "action": {"type": "drop"}},
                    {"id": "all", "match": {}, "action": {"type": "pass"}})  # fmt: skip
    outcome = ruleset.evaluate(message({"action": 1}))
    assert outcome is not None and outcome.decided_by is not None
    assert (outcome.decided_by.id, [r.id for r in outcome.notify]) == ("ack", ["o"])
    counts = {r["id"]: r["matched"] for r in ruleset.listed()}
    assert counts == {"o": 1, "ack": 1, "all": 0}


def test_skip_and_times() -> None:
    """skip lets the first n matches go by; times makes the rule inert after n; matched counts them all."""
    ruleset = rules({"id": "r", "match": {"action": "ATTACHED"}, "action": {"type": "drop"}, "skip": 1, "times": 2})
    results = [decided(ruleset, message({"action": 11})) for _ in range(5)]
    assert results == [None, "r", "r", None, None]
    [listed] = ruleset.listed()
    assert (listed["matched"], listed["remaining"]) == (5, 0)


def test_prepend_keeps_its_own_order_ahead() -> None:
    ruleset = rules({"id": "old", "match": {}, "action": {"type": "pass"}})
    add_rules(ruleset, {"rules": [{"id": "a", "match": {}, "action": {"type": "drop"}},
                           {"id": "b", "match": {}, "action": {"type": "drop"}}], "position": "prepend"})  # fmt: skip
    assert [r["id"] for r in ruleset.listed()] == ["a", "b", "old"]
    assert decided(ruleset, message({"action": 0})) == "a"


def test_generated_ids_are_unique_and_remove_and_clear_count() -> None:
    ruleset = RuleSet()
    ids = add_rules(ruleset, {"rules": [{"match": {}, "action": {"type": "pass"}}] * 3})
    assert len(set(ids)) == 3
    assert ruleset.remove([ids[0], "nope"]) == 1
    assert ruleset.clear() == 2 and not ruleset


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
def test_replace_and_patch_re_encode_in_the_frames_format(binary: bool) -> None:
    """replace's message and patch's result are encoded like the matched frame: JSON text, or msgpack binary."""
    decode = msgpack.unpackb if binary else json.loads
    subject = message({"action": 4, "connectionDetails": {"maxIdleInterval": 15000, "clientId": "a"}}, binary=binary)
    ruleset = rules({"match": {"action": "CONNECTED"}, "action": {"type": "patch",
                     "set": {"connectionDetails.maxIdleInterval": 500, "connectionKey": "patched"},
                     "unset": ["connectionDetails.clientId"]}})  # fmt: skip
    outcome = ruleset.evaluate(subject)
    assert outcome is not None and outcome.fate is not None
    fate = outcome.fate.apply(subject)
    assert isinstance(fate, Replace) and (fate.frame.type.value == "binary") is binary
    assert decode(fate.frame.data) == {"action": 4, "connectionDetails": {"maxIdleInterval": 500},
                                        "connectionKey": "patched"}  # fmt: skip
    nack = rules({"match": {"action": "ACK"}, "action": {"type": "replace", "message": {"action": "NACK", "msgSerial": 0,
                  "error": {"code": 50000, "message": "no"}}}})  # fmt: skip
    ack = message({"action": 1, "msgSerial": 0}, binary=binary)
    out = nack.evaluate(ack)
    assert out is not None and out.fate is not None
    replaced = out.fate.apply(ack)
    assert decode(replaced.frame.data)["action"] == 2


def test_patch_creates_missing_objects_and_indexes_arrays() -> None:
    subject = message({"action": 15, "messages": [{"name": "a"}]})
    ruleset = rules({"match": {}, "action": {"type": "patch", "set": {"messages.0.name": "b", "extras.push.x": 1}}})
    outcome = ruleset.evaluate(subject)
    assert outcome is not None and outcome.fate is not None
    assert json.loads(outcome.fate.apply(subject).frame.data) == {"action": 15, "messages": [{"name": "b"}],
                                                                   "extras": {"push": {"x": 1}}}  # fmt: skip


def test_side_effects_in_order_with_their_defaults() -> None:
    """inject defaults to the matched frame's direction; close to both sides; an action list without a fate passes."""
    subject = message({"action": 1}, from_client=False)
    ruleset = rules({"id": "r", "match": {}, "action": [
        {"type": "inject", "message": {"action": "DISCONNECTED"}}, {"type": "close", "code": 4000, "reason": "bye"},
        {"type": "silence"}, {"type": "notify"}]})  # fmt: skip
    outcome = ruleset.evaluate(subject)
    assert outcome is not None and outcome.fate is None and [r.id for r in outcome.notify] == ["r"]
    inject, close, silence = (unit.apply(subject) for _, unit in outcome.effects)
    assert isinstance(inject, Inject) and inject.from_client is False
    assert json.loads(inject.frame.data) == {"action": 6}
    assert close == CloseLegs(("client", "server"), 4000, "bye", False)
    assert isinstance(silence, Silence)


def test_delay_and_connect_and_control_events() -> None:
    """delay is a fate; connect, ping and timer events are matched only by rules of that event."""
    ruleset = rules({"id": "ping", "match": {"event": "ping", "fromClient": False}, "action": {"type": "drop"}},
                    {"id": "late", "match": {"action": "ACK"}, "action": {"type": "delay", "ms": 250}},
                    {"id": "refuse", "match": {"event": "connect", "query": {"resume": True}},
                     "action": {"type": "refuse", "status": 401}})  # fmt: skip
    ack = message({"action": 1})
    outcome = ruleset.evaluate(ack)
    assert outcome is not None and outcome.fate is not None and outcome.fate.apply(ack) == Delay(250)
    assert decided(ruleset, Subject("ping", HANDSHAKE, False, payload=b"")) == "ping"
    assert decided(ruleset, Subject("ping", HANDSHAKE, True, payload=b"")) is None
    assert decided(ruleset, Subject("connect", HANDSHAKE)) is None  # no resume in the query
    resuming = ConnectionOpened("ws://x/", "x", "ws", "/", {"resume": "abc"}, {})
    assert decided(ruleset, Subject("connect", resuming)) == "refuse"
    assert isinstance(rules({"match": {}, "action": {"type": "pass"}}).evaluate(ack).fate.apply(ack), Pass)  # type: ignore[union-attr]


def test_a_catch_all_rule_never_decodes() -> None:
    """Decoding happens only when a rule needs a decoded field."""
    subject = message({"action": 15})
    rules({"match": {"fromClient": False}, "action": {"type": "pass"}}).evaluate(subject)
    assert subject._message is not None and not isinstance(subject._message, dict)  # still undecoded
    rules({"match": {"action": "MESSAGE"}, "action": {"type": "pass"}}).evaluate(subject)
    assert subject._message == {"action": 15}
