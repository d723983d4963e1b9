"""uts-proxy's rules in ours, as a table (appserver/uts/rules.py): each uts match and action, the rule it
becomes, and that every rule it makes is one our engine accepts."""

from __future__ import annotations

from typing import Any

import pytest

from appserver.rules.compile import add_rules
from appserver.rules.engine import RuleSet
from appserver.uts.rules import UtsError, UtsRule, parse, translate

MESSAGE = {"action": 6, "error": {"code": 80003}}
JSON_HEADERS = {"Content-Type": "application/json"}
TABLE: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]] = [
    # match, action → our rule's match and action (None: a rule that can never match)
    ({"type": "ws_connect"}, {"type": "refuse_connection"},
     {"match": {"event": "connect"}, "action": {"type": "refuse", "status": 502, "body": "connection refused by proxy rule"}}),
    ({"type": "ws_connect", "queryContains": {"resume": "*", "format": "json"}}, {"type": "accept_and_close", "closeCode": 4000},
     {"match": {"event": "connect", "query": {"resume": True, "format": "json"}},
      "action": [{"type": "pass"}, {"type": "close", "side": "both", "code": 4000}]}),
    ({"type": "ws_connect"}, {"type": "disconnect"}, {"match": {"event": "connect"}, "action": {"type": "pass"}}),
    ({"type": "ws_frame_to_server", "action": "attach", "channel": "c"}, {"type": "suppress"},
     {"match": {"event": "message", "fromClient": True, "action": 10, "channel": "c"}, "action": {"type": "drop"}}),
    ({"type": "ws_frame_to_client", "action": "15"}, {"type": "delay", "delayMs": 20},
     {"match": {"event": "message", "fromClient": False, "action": 15}, "action": {"type": "delay", "ms": 20}}),
    ({"type": "ws_frame_to_client"}, {"type": "passthrough"},
     {"match": {"event": "message", "fromClient": False}, "action": {"type": "pass"}}),
    ({"type": "ws_frame_to_client"}, {"type": "inject_to_client", "message": MESSAGE},
     {"match": {"event": "message", "fromClient": False},
      "action": [{"type": "pass"}, {"type": "inject", "message": MESSAGE, "fromClient": False, "before": True}]}),
    ({"type": "ws_frame_to_server"}, {"type": "inject_to_client_and_close", "message": MESSAGE},
     {"match": {"event": "message", "fromClient": True},
      "action": [{"type": "drop"}, {"type": "inject", "message": MESSAGE, "fromClient": False},
                 {"type": "close", "side": "both", "code": 1000}]}),
    ({"type": "ws_frame_to_client"}, {"type": "replace", "message": MESSAGE},
     {"match": {"event": "message", "fromClient": False}, "action": {"type": "replace", "message": MESSAGE}}),
    ({"type": "ws_frame_to_client"}, {"type": "disconnect"},
     {"match": {"event": "message", "fromClient": False},
      "action": [{"type": "drop"}, {"type": "close", "side": "both", "abrupt": True}]}),
    ({"type": "ws_frame_to_client"}, {"type": "close", "closeCode": 4001},
     {"match": {"event": "message", "fromClient": False},
      "action": [{"type": "drop"}, {"type": "close", "side": "both", "code": 4001}]}),
    ({"type": "ws_frame_to_server"}, {"type": "suppress_onwards"},
     {"match": {"event": "message", "fromClient": True}, "action": [{"type": "suppressOnwards"}, {"type": "drop"}]}),
    ({"type": "ws_frame_to_client"}, {"type": "http_drop"},
     {"match": {"event": "message", "fromClient": False}, "action": {"type": "pass"}}),
    ({"type": "delay_after_ws_connect", "delayMs": 500}, {"type": "suppress_onwards"},
     {"match": {"event": "timer", "afterMs": 500},
      "action": [{"type": "pass"}, {"type": "suppressOnwards", "fromClient": False}]}),
    ({"type": "delay_after_ws_connect", "delayMs": 5}, {"type": "inject_to_client_and_close", "message": MESSAGE,
                                                         "closeCode": 4002},
     {"match": {"event": "timer", "afterMs": 5},
      "action": [{"type": "pass"}, {"type": "inject", "message": MESSAGE, "fromClient": False},
                 {"type": "close", "side": "both", "code": 4002}]}),
    ({"type": "delay_after_ws_connect"}, {"type": "disconnect"},
     {"match": {"event": "timer", "afterMs": 0},
      "action": [{"type": "pass"}, {"type": "close", "side": "both", "abrupt": True}]}),
    ({"type": "http_request", "method": "post", "pathContains": "/channels/[x]*"}, {"type": "http_respond", "status": 401,
                                                                                     "body": {"e": 1}},
     {"match": {"event": "http", "method": "POST", "path": "*/channels/[[]x][*]*"},
      "action": {"type": "respond", "status": 401, "headers": JSON_HEADERS, "json": {"e": 1}}}),
    ({"type": "http_request"}, {"type": "http_replace_response", "headers": {"content-type": "text/plain"}},
     {"match": {"event": "http"},
      "action": {"type": "replaceResponse", "status": 200, "headers": {"content-type": "text/plain"}, "body": ""}}),
    ({"type": "http_request"}, {"type": "http_delay", "delayMs": 7},
     {"match": {"event": "http"}, "action": {"type": "delay", "ms": 7}}),
    ({"type": "http_request"}, {"type": "http_drop"}, {"match": {"event": "http"}, "action": {"type": "drop", "mode": "reset"}}),
    ({"type": "ws_frame_to_client", "action": "CONECTED"}, {"type": "suppress"}, None),
    ({"type": "ws_frame_to_client", "action": "99"}, {"type": "suppress"}, None),
    ({"type": "websocket"}, {"type": "suppress"}, None),
]  # fmt: skip


@pytest.mark.parametrize(("match", "action", "ours"), TABLE)
def test_a_uts_rule_becomes_ours(match: dict[str, Any], action: dict[str, Any], ours: dict[str, Any] | None) -> None:
    translated = translate(parse({"match": match, "action": action}, UtsRule), 3)
    assert translated.rule == ours
    assert translated.label == "rule-3"
    if ours is not None:
        assert add_rules(RuleSet(), {"rules": [ours]})  # our engine takes it as it is


@pytest.mark.parametrize(("count", "times", "ours", "goes"), [
    (0, 0, {}, False), (0, 3, {"times": 3}, True), (2, 0, {"skip": 1, "times": 1}, False),
    (2, 1, {"skip": 1, "times": 1}, True), (2, 5, {"skip": 1, "times": 1}, False),
])  # fmt: skip
def test_count_and_times(count: int, times: int, ours: dict[str, Any], goes: bool) -> None:
    """count N: the Nth occurrence only; times N: gone after N firings (a counted rule fires once, and goes only
    if its times says so, as uts-proxy keeps it listed otherwise)."""
    given = {"match": {"type": "ws_connect", "count": count}, "action": {"type": "passthrough"}, "times": times,
             "comment": "mine"}  # fmt: skip
    translated = translate(parse(given, UtsRule), 0)
    assert translated.rule is not None
    assert {k: v for k, v in translated.rule.items() if k in ("skip", "times")} == ours
    assert translated.goes_when_spent is goes and translated.label == "mine"


def test_a_timer_is_never_counted() -> None:
    given = {"match": {"type": "delay_after_ws_connect", "count": 3}, "action": {"type": "close"}}
    assert "skip" not in (translate(parse(given, UtsRule), 0).rule or {})


@pytest.mark.parametrize(("given", "says"), [
    ({"match": {"type": "ws_connect"}}, "action"),
    ({"match": {"type": "ws_connect"}, "action": {"type": "close"}, "times": "1"}, "times"),
    ({"match": {"type": "ws_connect", "typo": 1}, "action": {"type": "close"}}, "typo"),
    ({"match": {"type": "ws_frame_to_client"}, "action": {"type": "replace"}}, "message: is required"),
])  # fmt: skip
def test_bad_rules_name_what_is_wrong(given: dict[str, Any], says: str) -> None:
    with pytest.raises(UtsError, match=says):
        translate(parse(given, UtsRule), 0)


def test_the_uts_port_option() -> None:
    from appserver.config import from_args

    assert from_args([]).uts_port is None  # off unless asked for
    assert from_args(["--uts-port", "9100"]).uts_port == 9100
    with pytest.raises(SystemExit):
        from_args(["--uts-port", "70000"])
