"""uts-proxy's rules (its docs/API.md, "Rule Format") in our rule language (SPEC Part 3), one for one.

A uts rule is ``{match: {type, count?, action?, channel?, method?, pathContains?, queryContains?,
delayMs?}, action: {type, closeCode?, delayMs?, message?, status?, body?, headers?}, times?, comment?}``.
Each becomes one of our rules, with uts-proxy's semantics where ours differ:

- ``count: N`` fires on the Nth time the rule's condition holds and never again (``skip: N-1``,
  ``times: 1``); ``times: N`` removes the rule after N firings (it *goes*, where ours would stay listed);
- ``inject_to_client`` sends its message ahead of the frame that triggered it (``before``);
- ``suppress_onwards`` quiets one direction (frames and pings) of the session's connections open when it
  fires, the triggering frame included;
- ``refuse_connection`` answers the handshake 502; ``accept_and_close`` accepts and closes without
  dialling the upstream; any other action on ``ws_connect`` lets the connection through (uts-proxy's
  behaviour), as an unknown action type does anywhere;
- an unknown match type or Ably action name is accepted and never matches (uts-proxy's behaviour).

Bad shapes (a string for ``times``, a rule without ``match``, a field uts-proxy does not know) are a
:class:`UtsError` naming the path, which the API answers 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from shared import ably

#: The Content-Type uts-proxy gives an HTTP response a rule makes, when the rule sets none.
JSON_TYPE = "application/json"
REFUSED_STATUS = 502
REFUSED_BODY = "connection refused by proxy rule"
NORMAL_CLOSURE = 1000


class UtsError(ValueError):
    """A request body uts-proxy's API cannot use; the message names what is wrong."""


class _Loose(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class UtsMatch(_Loose, frozen=True):
    type: str
    count: int = 0
    action: str | int | None = None
    channel: str | None = None
    method: str | None = None
    pathContains: str | None = None
    queryContains: dict[str, str] | None = None
    delayMs: int = 0


class UtsAction(_Loose, frozen=True):
    type: str
    closeCode: int = 0
    delayMs: int = 0
    message: dict[str, Any] | None = None
    status: int = 0
    body: Any = msgspec.UNSET
    headers: dict[str, str] | None = None


class UtsRule(_Loose, frozen=True):
    match: UtsMatch
    action: UtsAction
    times: int = 0
    comment: str = ""


class Target(_Loose, frozen=True):
    realtimeHost: str = ""
    restHost: str = ""
    insecure: bool = False


class CreateSession(_Loose, frozen=True):
    target: Target
    port: int = 0
    rules: list[UtsRule] | None = None
    timeoutMs: int = 0


class AddRules(_Loose, frozen=True):
    rules: list[UtsRule]
    position: str = "append"


class ImperativeAction(_Loose, frozen=True):
    type: str
    message: dict[str, Any] | None = None
    closeCode: int = 0


def parse(body: Any, kind: type[msgspec.Struct]) -> Any:
    """A request body (parsed JSON) as ``kind``, or UtsError: ``rules[0].times: Expected `int`, got `str```."""
    try:
        return msgspec.convert(body, kind, strict=True)
    except msgspec.ValidationError as exc:
        problem, at, where = str(exc).rpartition(" - at `")
        path = where.rstrip("`").removeprefix("$.").removeprefix("$") if at else ""
        raise UtsError(f"{path}: {problem}" if path else (problem or str(exc))) from None


@dataclass(frozen=True)
class Translated:
    """One uts rule as ours: ``rule`` is None for one that can never match (kept so that ruleCount counts it)."""

    rule: dict[str, Any] | None
    #: Whether it goes once spent (uts-proxy removes a rule after ``times`` firings).
    goes_when_spent: bool
    label: str


def label(rule: UtsRule, index: int) -> str:
    """What uts-proxy's log says in ``ruleMatched``: the comment, else ``rule-N`` (N its place when added)."""
    return rule.comment or f"rule-{index}"


def translate(rule: UtsRule, index: int) -> Translated:
    match = _match(rule.match)
    spent = rule.times > 0 and (rule.match.count <= 0 or rule.times == 1)
    if match is None:
        return Translated(None, spent, label(rule, index))
    ours: dict[str, Any] = {"match": match, "action": _actions(rule.match.type, rule.action)}
    counted = rule.match.count > 0 and rule.match.type != "delay_after_ws_connect"  # timers are not counted
    if counted:
        ours.update(skip=rule.match.count - 1, times=1)
    elif rule.times > 0:
        ours["times"] = rule.times
    return Translated(ours, spent, label(rule, index))


def _match(m: UtsMatch) -> dict[str, Any] | None:
    """Our match for it, or None when it can never match."""
    if m.type in ("ws_frame_to_server", "ws_frame_to_client"):
        match: dict[str, Any] = {"event": "message", "fromClient": m.type == "ws_frame_to_server"}
        if m.action is not None and m.action != "":
            action = _ably_action(m.action)
            if action is None:
                return None
            match["action"] = action
        if m.channel:
            match["channel"] = m.channel
        return match
    if m.type == "ws_connect":
        match = {"event": "connect"}
        if m.queryContains:
            match["query"] = {k: True if v == "*" else v for k, v in m.queryContains.items()}
        return match
    if m.type == "http_request":
        match = {"event": "http"}
        if m.method:
            match["method"] = m.method.upper()
        if m.pathContains:
            match["path"] = f"*{_glob_escape(m.pathContains)}*"
        return match
    if m.type == "delay_after_ws_connect":
        return {"event": "timer", "afterMs": max(m.delayMs, 0)}
    return None


def _ably_action(given: str | int) -> int | None:
    """An Ably action by name (any case) or number (as text or a number), or None if there is none such."""
    text = str(given).strip()
    if text.isdigit():
        number = int(text)
        return number if number in {int(a) for a in ably.Action} else None
    member = ably.Action.__members__.get(text.upper())
    return int(member) if member is not None else None


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _close(code: int) -> dict[str, Any]:
    return {"type": "close", "side": "both", "code": code if code > 0 else NORMAL_CLOSURE}


def _inject(message: dict[str, Any] | None, before: bool) -> dict[str, Any]:
    if message is None:
        raise UtsError("action.message: is required for an injection")
    action: dict[str, Any] = {"type": "inject", "message": message, "fromClient": False}
    if before:
        action["before"] = True
    return action


def _http_body(a: UtsAction) -> dict[str, Any]:
    headers = dict(a.headers or {})
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = JSON_TYPE
    out: dict[str, Any] = {"status": a.status if a.status > 0 else 200, "headers": headers}
    if a.body is not msgspec.UNSET and a.body is not None:
        out["json"] = a.body
    else:
        out["body"] = ""
    return out


def _actions(event: str, a: UtsAction) -> list[dict[str, Any]] | dict[str, Any]:
    kind = a.type
    passing: dict[str, Any] = {"type": "pass"}
    if event == "ws_connect":
        if kind == "refuse_connection":
            return {"type": "refuse", "status": REFUSED_STATUS, "body": REFUSED_BODY}
        if kind == "accept_and_close":
            return [passing, _close(a.closeCode)]  # on connect: accepted, closed, no upstream dialled
        return passing
    if event == "delay_after_ws_connect":
        if kind == "disconnect":
            return [passing, {"type": "close", "side": "both", "abrupt": True}]
        if kind == "close":
            return [passing, _close(a.closeCode)]
        if kind == "inject_to_client":
            return [passing, _inject(a.message, False)]
        if kind == "inject_to_client_and_close":
            return [passing, _inject(a.message, False), _close(a.closeCode)]
        if kind == "suppress_onwards":
            return [passing, {"type": "suppressOnwards", "fromClient": False}]
        return passing
    if event == "http_request":
        if kind == "http_respond":
            return {"type": "respond", **_http_body(a)}
        if kind == "http_delay":
            return {"type": "delay", "ms": max(a.delayMs, 0)}
        if kind == "http_drop":
            return {"type": "drop", "mode": "reset"}
        if kind == "http_replace_response":
            return {"type": "replaceResponse", **_http_body(a)}
        return passing
    # a frame, either way
    drop: dict[str, Any] = {"type": "drop"}
    if kind == "suppress":
        return drop
    if kind == "delay":
        return {"type": "delay", "ms": max(a.delayMs, 0)}
    if kind == "inject_to_client":
        return [passing, _inject(a.message, True)]
    if kind == "inject_to_client_and_close":
        return [drop, _inject(a.message, False), _close(a.closeCode)]
    if kind == "replace":
        if a.message is None:
            raise UtsError("action.message: is required for replace")
        return {"type": "replace", "message": a.message}
    if kind == "disconnect":
        return [drop, {"type": "close", "side": "both", "abrupt": True}]
    if kind == "close":
        return [drop, _close(a.closeCode)]
    if kind == "suppress_onwards":
        return [{"type": "suppressOnwards"}, drop]
    return passing
