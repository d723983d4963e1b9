"""The parameters each control method accepts (SPEC Part 9, strict parameters): any other is -32602
naming it (``openSession: unknown parameter 'decodd'``), as addRules does for a rule's fields. The
types are checked by each method (shared/wire.require, the rule schema)."""

from __future__ import annotations

from typing import Any, Final, Mapping

from shared import constants as c

PARAMS: Final[Mapping[str, frozenset[str]]] = {
    c.METHOD_START_INTERCEPTION: frozenset({"mode", "pid", "decoded", "window"}),
    c.METHOD_INJECT: frozenset({"connectionID", "fromClient", "type", "data", "message"}),
    c.METHOD_CLOSE_CONNECTION: frozenset({"connectionID", "side", "code", "reason", "abrupt"}),
    c.METHOD_MITMPROXY_READY: frozenset(),
    c.METHOD_ADD_RULES: frozenset({"rules", "position"}),
    c.METHOD_REMOVE_RULES: frozenset({"ids"}),
    c.METHOD_CLEAR_RULES: frozenset(),
    c.METHOD_LIST_RULES: frozenset(),
    c.METHOD_WAIT_FOR_RULE: frozenset({"id", "count", "timeoutMs"}),
    c.METHOD_SEND_PING: frozenset({"connectionID", "side", "data"}),
    c.METHOD_GET_TRACE: frozenset({"since", "connectionID", "limit"}),
    c.METHOD_CLEAR_TRACE: frozenset(),
    c.METHOD_EXPORT_TRACE: frozenset({"format", "connectionID"}),
    c.METHOD_OPEN_SESSION: frozenset({"mode", "pid", "pids", "upstream", "port", "decoded", "window"}),
    c.METHOD_CLOSE_SESSION: frozenset({"closeConnections"}),
    c.METHOD_ATTACH_SESSION: frozenset({"sessionID", "decoded", "window"}),
}


def unknown_parameter(method: str, params: Mapping[str, Any]) -> str | None:
    """The first parameter ``method`` does not take (sorted, so it is stable), or None."""
    accepted = PARAMS.get(method)
    if accepted is None:
        return None
    unknown = sorted(set(params) - accepted)
    return unknown[0] if unknown else None


def unknown_message(method: str, name: str) -> str:
    takes = ", ".join(f"'{n}'" for n in sorted(PARAMS[method])) or "no parameters"
    return f"{method}: unknown parameter '{name}' (it takes {takes})"
