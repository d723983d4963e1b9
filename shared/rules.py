"""Rules as typed values for the Python client (SPEC Part 3), with helpers that read like the intent.

    await interception.add_rules(
        rules.refuse_connect(503),                      # the next connect fails with 503
        rules.drop(action="ATTACHED", times=1),         # the first ATTACHED never arrives
        rules.delay(500, action="ACK"),                 # every ACK half a second late
    )

Match fields are keyword arguments in Python spelling (``from_client``,
``connection_id``); every helper also takes ``id``, ``times`` and ``skip``.
The proxy validates every rule and names what is wrong; these helpers only
build the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

_MATCH_NAMES = {"from_client": "fromClient", "connection_id": "connectionID", "after_ms": "afterMs"}


@dataclass(frozen=True)
class Rule:
    match: dict[str, Any]
    action: dict[str, Any] | list[dict[str, Any]]
    id: str | None = None
    times: int | None = None
    skip: int = 0

    def to_json(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"match": self.match, "action": self.action}
        if self.id is not None:
            rule["id"] = self.id
        if self.times is not None:
            rule["times"] = self.times
        if self.skip:
            rule["skip"] = self.skip
        return rule

    def once(self) -> Rule:
        return replace(self, times=1)

    def named(self, rule_id: str) -> Rule:
        return replace(self, id=rule_id)


def match(**fields: Any) -> dict[str, Any]:
    """A match from Python keywords: ``match(from_client=False, action="ACK")``."""
    return {_MATCH_NAMES.get(k, k): v for k, v in fields.items() if v is not None}


def rule(actions: dict[str, Any] | list[dict[str, Any]], /, *, id: str | None = None, times: int | None = None,
         skip: int = 0, **fields: Any) -> Rule:  # fmt: skip
    """Any rule: its action (or list of actions), then its match as keywords (``action=`` is the Ably action)."""
    return Rule(match(**fields), actions, id, times, skip)


def _raw_or_message(message: dict[str, Any] | None, raw: dict[str, str] | None) -> dict[str, Any]:
    return {"raw": raw} if raw is not None else {"message": message}


# -- the fate of matching frames ----------------------------------------------------------------

def pass_all(**fields: Any) -> Rule:
    """Pass everything (the earlier rules aside) without asking the suite: the dialogue off."""
    return rule({"type": "pass"}, **fields)


def observe(**fields: Any) -> Rule:
    """Let matching frames pass and tell the suite (ruleMatched), without making them wait."""
    return rule({"type": "observe"}, **fields)


def drop(**fields: Any) -> Rule:
    return rule({"type": "drop"}, **fields)


def transform(**fields: Any) -> Rule:
    """Ask the suite's transform callbacks about matching frames (and only those)."""
    return rule({"type": "transform"}, **fields)


def replace_with(message: dict[str, Any] | None = None, *, raw: dict[str, str] | None = None, **fields: Any) -> Rule:
    """Deliver this message instead (encoded in the connection's JSON or msgpack), or these raw bytes."""
    return rule({"type": "replace", **_raw_or_message(message, raw)}, **fields)


def patch(set: dict[str, Any] | None = None, unset: list[str] | None = None, **fields: Any) -> Rule:
    """Change fields of matching messages: ``patch(set={"connectionDetails.maxIdleInterval": 500}, …)``."""
    action: dict[str, Any] = {"type": "patch"}
    if set:
        action["set"] = set
    if unset:
        action["unset"] = unset
    return rule(action, **fields)


def delay(ms: int, **fields: Any) -> Rule:
    """Deliver matching frames ms later (their direction waits behind them)."""
    return rule({"type": "delay", "ms": ms}, **fields)


# -- handshakes, timers, the network --------------------------------------------------------------

def refuse_connect(status: int = 503, body: str | None = None, times: int | None = 1, **fields: Any) -> Rule:
    """Fail the next client handshake (``times``) with this HTTP status; the upstream is never dialled."""
    action: dict[str, Any] = {"type": "refuse", "status": status}
    if body is not None:
        action["body"] = body
    return rule(action, event="connect", times=times, **fields)


def answer_connect(*messages: dict[str, Any], close: int | None = None, abrupt: bool = False,
                   times: int | None = 1, **fields: Any) -> Rule:  # fmt: skip
    """Accept the next handshake with no upstream, send these messages, then close (code, or abrupt)."""
    actions: list[dict[str, Any]] = [{"type": "inject", "message": m} for m in messages]
    if close is not None or abrupt:
        actions.append(_close_action(close, "", abrupt))
    return rule(actions, event="connect", times=times, **fields)


def after(ms: int, *actions: dict[str, Any], **fields: Any) -> Rule:
    """A timer: ``ms`` after each connection opens, these side effects (``close_action()``, ``inject_action()``)."""
    return rule(list(actions), event="timer", after_ms=ms, **fields)


def drop_pings(**fields: Any) -> Rule:
    """Drop WebSocket pings (``from_client=False``: the server's), so the client's idle timer can fire."""
    return rule({"type": "drop"}, event="ping", **fields)


def silence(**fields: Any) -> Rule:
    """From the matching event on, the connection's network goes quiet both ways; nothing is closed."""
    return rule([{"type": "pass"}, {"type": "silence"}], **fields)


def close_action(code: int | None = None, reason: str = "", abrupt: bool = False, side: str = "both") -> dict[str, Any]:
    return _close_action(code, reason, abrupt, side)


def _close_action(code: int | None, reason: str, abrupt: bool, side: str = "both") -> dict[str, Any]:
    action: dict[str, Any] = {"type": "close", "side": side, "abrupt": abrupt}
    if code is not None:
        action["code"] = code
    if reason:
        action["reason"] = reason
    return action


def inject_action(message: dict[str, Any], from_client: bool | None = None) -> dict[str, Any]:
    action: dict[str, Any] = {"type": "inject", "message": message}
    if from_client is not None:
        action["fromClient"] = from_client
    return action
