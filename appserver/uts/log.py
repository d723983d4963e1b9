"""uts-proxy's event log (its docs/API.md, "Event Log Format"), read off a session's trace (SPEC Part 5).

The trace records what the proxy saw and did; this turns its events, oldest first, into uts-proxy's:
``ws_connect`` for every connection attempt (refused ones too), ``ws_frame`` with the message decoded
(msgpack too), ``ws_disconnect`` with who closed and the code, ``http_request``/``http_response``, and
``action`` for imperative actions. Timestamps are wall-clock UTC, RFC 3339 with exactly six fractional
digits, so they compare as strings. A frame a rule kept from the server is logged with the direction
``client_to_proxy`` (ably-js's RTL4f counts the ATTACHes that reached the server as ``client_to_server``); one
kept from the client stays ``server_to_client``, with its ``ruleMatched`` (RTN19a finds the suppressed ACK so).
Frames dropped because their direction is suppressed are not logged
(uts-proxy does not log them either); a frame too long for the trace's data limit is logged by its action
and channel, marked ``_truncated``.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Any

from yarl import URL

from shared import ably
from shared.wire import jsonable

#: The request headers uts-proxy logs on ``http_request`` (as it spells them).
LOGGED_HEADERS = ("Authorization", "Content-Type", "Accept", "X-Ably-Version", "X-Ably-Lib")
#: Rules' effects that mean the proxy itself ended the connection (a refusal, a served connect).
_ENDS = {"refuse", "close"}


def timestamp(epoch_s: float, t_us: int) -> str:
    """``2026-01-15T10:00:00.123456Z``."""
    moment = datetime.datetime.fromtimestamp(epoch_s + t_us / 1e6, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decoded(event: Mapping[str, Any]) -> Any:
    """A trace frame's Ably message as JSON, or its action and channel when the trace kept only part of it."""
    if not event.get("truncated"):
        try:
            if "dataBase64" in event:
                return jsonable(ably.decode(base64.b64decode(event["dataBase64"]), ably.Format.MSGPACK))
            return json.loads(event.get("data", ""))
        except (ably.DecodeError, ValueError):
            pass
    summary: dict[str, Any] = {"_truncated": True} if event.get("truncated") else {"_undecodable": True}
    if "action" in event:
        summary["action"] = int(ably.Action[event["action"]]) if event["action"] in ably.Action.__members__ \
            else event["action"]
    if "channel" in event:
        summary["channel"] = event["channel"]
    return summary


class LogReader:
    """Reads a session's trace as uts-proxy's log; ``labels``: our rule id → what ``ruleMatched`` says."""

    def __init__(self, epoch_s: float, labels: Mapping[str, str]) -> None:
        self._epoch = epoch_s
        self._labels = labels

    def _label(self, rule_id: str | None) -> str | None:
        return None if rule_id is None else self._labels.get(rule_id, rule_id)

    def events(self, trace_events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        connect_rule: dict[str, str] = {}  # connection id → the rule that refused or served its handshake
        http_rule: dict[str, str] = {}  # exchange id → the rule that decided it
        for e in trace_events:
            kind, when = e["kind"], timestamp(self._epoch, e["t"])
            cid = e.get("connectionID")
            if kind == "decision":
                rule_id = e.get("ruleId")
                if e.get("event") == "connect" and cid is not None:
                    ends = e.get("action") in _ENDS or any(x["action"] in _ENDS for x in e.get("effects", ()))
                    if rule_id is not None and ends:
                        connect_rule[cid] = rule_id
                    elif ends:
                        connect_rule[cid] = next(x["ruleId"] for x in e["effects"] if x["action"] in _ENDS)
                elif e.get("event") == "http" and cid is not None and rule_id is not None:
                    http_rule[cid] = rule_id
                elif e.get("event") == "timer":
                    for effect in e.get("effects", ()):
                        if effect["action"] == "suppressOnwards":
                            out.append({"timestamp": when, "type": "action", "initiator": "proxy",
                                        "message": {"type": "suppress_onwards", "direction": "server_to_client"},
                                        "ruleMatched": self._label(effect["ruleId"])})  # fmt: skip
            elif kind == "open":
                out.append({"timestamp": when, "type": "ws_connect", "url": e["url"],
                            "queryParams": dict(e.get("query") or {}), "ruleMatched": None})  # fmt: skip
                if e.get("outcome") == "refused":
                    out.append({"timestamp": when, "type": "ws_disconnect", "initiator": "proxy",
                                "ruleMatched": self._label(connect_rule.get(cid or ""))})  # fmt: skip
            elif kind == "frame":
                if e.get("by") == "suppressed":
                    continue
                direction = "client_to_server" if e["fromClient"] else "server_to_client"
                if e["fromClient"] and e.get("decision") == "drop" and e.get("ruleId"):
                    direction = "client_to_proxy"  # a rule kept it from the server: it got no further than us
                out.append({"timestamp": when, "type": "ws_frame", "direction": direction, "message": decoded(e),
                            "ruleMatched": self._label(e.get("ruleId"))})  # fmt: skip
            elif kind == "inject":
                out.append({"timestamp": when, "type": "ws_frame",
                            "direction": "client_to_server" if e["fromClient"] else "server_to_client",
                            "message": decoded(e), "initiator": "proxy", "ruleMatched": None})  # fmt: skip
            elif kind == "close":
                event: dict[str, Any] = {"timestamp": when, "type": "ws_disconnect", "initiator": e["closedBy"]}
                if e.get("code"):
                    event["closeCode"] = e["code"]
                event["ruleMatched"] = self._label(connect_rule.get(cid or ""))
                out.append(event)
            elif kind == "http_request":
                headers = {name: v for name in LOGGED_HEADERS
                           if (v := _header(e.get("headers") or {}, name)) is not None}  # fmt: skip
                event = {"timestamp": when, "type": "http_request", "direction": "client_to_server",
                         "method": e["method"], "path": URL(e["url"]).path, "ruleMatched": None}  # fmt: skip
                if headers:
                    event["headers"] = headers
                out.append(event)
            elif kind == "http_response":
                event = {"timestamp": when, "type": "http_response", "direction": "server_to_client"}
                if e.get("status"):
                    event["status"] = e["status"]
                event["ruleMatched"] = self._label(http_rule.get(cid or ""))
                out.append(event)
            elif kind == "uts_action":
                out.append({"timestamp": when, "type": "action", "initiator": "proxy", "message": e["message"],
                            "ruleMatched": None})  # fmt: skip
        return out


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value if isinstance(value, str) else ", ".join(value)
    return None
