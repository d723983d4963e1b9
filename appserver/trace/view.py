"""The timeline of ``python -m appserver.trace``: one line per trace event, for people."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson


def read_events(text: str) -> list[dict[str, Any]]:
    """Events from JSON Lines, or from a getTrace result (``{"events": [...]}``); ValueError says why not."""
    stripped = text.strip()
    if not stripped:
        return []
    try:
        document = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        document = None  # JSON Lines (more than one document)
    if isinstance(document, dict) and isinstance(document.get("events"), list):
        return [e for e in document["events"] if isinstance(e, dict)]
    events = []
    for number, line in enumerate(stripped.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"line {number} is not JSON ({exc})") from None
        if not isinstance(event, dict) or "kind" not in event or "t" not in event:
            raise ValueError(f"line {number} is not a trace event (no 'kind' and 't')")
        events.append(event)
    return events


def lines(events: list[dict[str, Any]], connection: str | None = None) -> Iterator[str]:
    names: dict[str, str] = {}
    start = events[0]["t"] if events else 0
    for event in events:
        cid = event.get("connectionID")
        if cid is not None and cid not in names:
            names[cid] = f"{'h' if event['kind'] == 'http_request' else 'c'}{len(names) + 1}"
        if connection is not None and cid != connection:
            continue
        who = names.get(cid, "--") if cid is not None else "--"
        yield f"{(event['t'] - start) / 1000:+10.3f} ms  {who:<4} {_what(event)}"


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _what(event: dict[str, Any]) -> str:
    kind = event["kind"]
    arrow = "→ server" if event.get("fromClient") else "← server"
    if kind in ("frame", "inject"):
        text = f"{arrow}  {event.get('action', event.get('type', '?'))}"
        if "channel" in event:
            text += f" ch={event['channel']}"
        text += f"  ({event.get('size', 0)} B)"
        if kind == "inject":
            return text + "  [injected]"
        fate = event.get("decision", "pass")
        if "ruleId" in event:
            text += f"  [rule {event['ruleId']}: {fate}]"
        elif event.get("by") == "suite" or fate != "pass":
            text += f"  [suite: {fate}]"
        if event.get("changed"):
            text += "  changed " + ", ".join(f"{path}: {_short(old)} → {_short(new)}"
                                             for path, (old, new) in event["changed"].items())  # fmt: skip
        return text
    if kind in ("ping", "pong"):
        return f"{arrow}  {kind.upper()}  [{event.get('fate', '')}]"
    if kind == "open":
        outcome = event.get("outcome", "accepted")
        if outcome not in ("accepted", "served"):
            why = f": {event['reason']}" if event.get("reason") else ""
            return f"open {outcome} {event.get('status')} for {event.get('host')} ({event.get('url')}){why}"
        text = f"open {event.get('url')}" + (f" → {event['upstream']}" if event.get("upstream") else "")
        return text + ("  [served by the proxy]" if outcome == "served" else "")
    if kind == "close":
        how = "clean" if event.get("clean") else "abrupt"
        return f"closed by {event.get('closedBy')}: {event.get('code')} {event.get('reason') or ''} ({how})".rstrip()
    if kind == "decision":
        parts = [f"{k}={event[k]}" for k in ("event", "ruleId", "action", "by", "answer", "id") if k in event]
        return "decision " + " ".join(parts)
    if kind == "http_request":
        return f"{event.get('method')} {event.get('url')}"
    if kind == "http_response":
        return f"  → {event.get('status')} ({event.get('size', 0)} B, {event.get('outcome', '')})"
    if kind == "dropped":
        return f"[{event.get('count')} earlier events dropped: --trace-limit]"
    return str(kind)
