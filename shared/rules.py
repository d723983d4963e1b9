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


def notify(**fields: Any) -> Rule:
    """Let matching frames pass and send ruleMatched; the rule decides (later rules are not asked)."""
    return rule([{"type": "pass"}, {"type": "notify"}], **fields)


def drop(**fields: Any) -> Rule:
    return rule({"type": "drop"}, **fields)


def transform(**fields: Any) -> Rule:
    """Ask the suite's transform callbacks about matching frames (and only those)."""
    return rule({"type": "transform"}, **fields)


def replace_with(message: dict[str, Any] | None = None, *, raw: dict[str, str] | None = None, **fields: Any) -> Rule:
    """Deliver this message instead (encoded in the connection's JSON or msgpack), or these raw bytes."""
    return rule({"type": "replace", **_raw_or_message(message, raw)}, **fields)


def patch(set: dict[str, Any] | None = None, unset: list[str] | None = None,
          flags: dict[str, list[str | int]] | None = None, **fields: Any) -> Rule:
    """Change fields of matching messages: ``patch(set={"connectionDetails.maxIdleInterval": 500}, …)``;
    ``flags={"set": ["ATTACH_RESUME"], "clear": [...]}`` sets and clears bits of ``flags``, keeping the others."""
    action: dict[str, Any] = {"type": "patch"}
    if set:
        action["set"] = set
    if unset:
        action["unset"] = unset
    if flags:
        action["flags"] = flags
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


def route_connect(host: str, proto: str = "ws", **fields: Any) -> Rule:
    """Dial this host (``proto`` ws or wss) instead of the one the client meant, for matching handshakes."""
    return rule({"type": "route", "host": host, "proto": proto}, event="connect", **fields)


def after(ms: int, *actions: dict[str, Any], **fields: Any) -> Rule:
    """A timer: ``ms`` after each connection opens, these side effects (``close_action()``, ``inject_action()``)."""
    return rule(list(actions), event="timer", after_ms=ms, **fields)


def drop_pings(**fields: Any) -> Rule:
    """Drop WebSocket pings (``from_client=False``: the server's), so the client's idle timer can fire.

    A server that enforces pongs closes first (its pings go unanswered): against one, patch
    ``connectionDetails.maxIdleInterval`` short and drop HEARTBEATs instead (docs/api.md, "Starving
    heartbeats")."""
    return rule({"type": "drop"}, event="ping", **fields)


def silence(**fields: Any) -> Rule:
    """From the matching event on, the connection's network goes quiet both ways; nothing is closed."""
    return rule([{"type": "pass"}, {"type": "silence"}], **fields)


def suppress_onwards(from_client: bool | None = None, **fields: Any) -> Rule:
    """From the matching event on, drop every frame and ping in one direction (``from_client``; default the
    matched frame's, towards the client on a timer) on every connection of the suite open then, the matched
    frame too (uts-proxy's ``suppress_onwards``)."""
    action: dict[str, Any] = {"type": "suppressOnwards"}
    if from_client is not None:
        action["fromClient"] = from_client
    return rule([action, {"type": "drop"}], **fields)


def close_action(code: int | None = None, reason: str = "", abrupt: bool = False, side: str = "both") -> dict[str, Any]:
    return _close_action(code, reason, abrupt, side)


def _close_action(code: int | None, reason: str, abrupt: bool, side: str = "both") -> dict[str, Any]:
    action: dict[str, Any] = {"type": "close", "side": side, "abrupt": abrupt}
    if code is not None:
        action["code"] = code
    if reason:
        action["reason"] = reason
    return action


def inject_action(message: dict[str, Any], from_client: bool | None = None, before: bool = False) -> dict[str, Any]:
    """``before``: sent ahead of the matched frame (uts-proxy's order), not after it."""
    action: dict[str, Any] = {"type": "inject", "message": message}
    if from_client is not None:
        action["fromClient"] = from_client
    if before:
        action["before"] = True
    return action


# -- plain HTTP (SPEC Part 4): rules with event "http" ---------------------------------------------

def _http_body(json: Any, body: str | None, body_base64: str | None) -> dict[str, Any]:
    if json is not _UNSET:
        return {"json": json}
    if body_base64 is not None:
        return {"bodyBase64": body_base64}
    return {} if body is None else {"body": body}


_UNSET: Any = object()


def http_respond(status: int = 200, *, json: Any = _UNSET, body: str | None = None, body_base64: str | None = None,
                 headers: dict[str, str] | None = None, **fields: Any) -> Rule:  # fmt: skip
    """Answer matching HTTP requests here (``method="GET", path="/time"``): the upstream is not contacted."""
    action: dict[str, Any] = {"type": "respond", "status": status, **_http_body(json, body, body_base64)}
    if headers:
        action["headers"] = headers
    return rule(action, event="http", **fields)


def http_delay(ms: int, **fields: Any) -> Rule:
    return rule({"type": "delay", "ms": ms}, event="http", **fields)


def http_drop(mode: str = "reset", **fields: Any) -> Rule:
    """No response: "reset" closes the client's connection, "hang" never answers."""
    return rule({"type": "drop", "mode": mode}, event="http", **fields)


def http_route(host: str, proto: str = "http", **fields: Any) -> Rule:
    """Send matching requests to another host (a local server standing in for a fallback host, say)."""
    return rule({"type": "route", "host": host, "proto": proto}, event="http", **fields)


def http_transform(response: bool = False, **fields: Any) -> Rule:
    """Ask the context's transform_http_request (and, with response, transform_http_response) callbacks."""
    return rule({"type": "transform", "response": response}, event="http", **fields)


def http_replace_response(status: int | None = None, *, json: Any = _UNSET, body: str | None = None,
                          headers: dict[str, str] | None = None, **fields: Any) -> Rule:  # fmt: skip
    action: dict[str, Any] = {"type": "replaceResponse", **_http_body(json, body, None)}
    if status is not None:
        action["status"] = status
    if headers:
        action["headers"] = headers
    return rule(action, event="http", **fields)


def http_patch_response(set: dict[str, Any] | None = None, unset: list[str] | None = None,
                        **fields: Any) -> Rule:  # fmt: skip
    action: dict[str, Any] = {"type": "patchResponse"}
    if set:
        action["set"] = set
    if unset:
        action["unset"] = unset
    return rule(action, event="http", **fields)
