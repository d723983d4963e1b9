"""A trace's events as JSON Lines, or as a HAR 1.2 log (SPEC Part 5) that DevTools-style tools open.

In the HAR, every WebSocket connection is an entry (its handshake as the
request, 101 as the response) whose frames are in ``_webSocketMessages``
(the form Chrome DevTools writes and reads: ``type`` send/receive, ``time`` in
seconds since the epoch, ``opcode`` 1 text / 2 binary, ``data``); every plain
HTTP exchange is an entry with its request, its response and the time between.
What the proxy did (a rule's decision, a drop) is kept in ``_``-prefixed
fields, which HAR leaves to extensions.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterable
from typing import Any

from importlib import metadata

import orjson


def _version() -> str:
    try:
        return metadata.version("ably-interception-proxy")
    except metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "0"


CREATOR = {"name": "ably-interception-proxy", "version": _version()}


def jsonl(events: Iterable[dict[str, Any]]) -> str:
    # OPT_NON_STR_KEYS: header names from aiohttp are a str subclass
    return "".join(orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS).decode() + "\n" for event in events)


def har(events: list[dict[str, Any]], epoch: float) -> dict[str, Any]:
    """The HAR log of these events; ``epoch`` is the wall-clock time at t = 0 (Trace.epoch)."""
    entries: dict[str, dict[str, Any]] = {}  # by connection id, in order of appearance
    started: dict[str, int] = {}
    for event in events:
        kind, cid = event["kind"], event.get("connectionID")
        if cid is None:
            continue
        if kind == "open":
            entries[cid] = _websocket_entry(event, epoch)
            started[cid] = event["t"]
        elif kind == "http_request":
            entries[cid] = _http_entry(event, epoch)
            started[cid] = event["t"]
        elif cid not in entries:
            continue
        elif kind in ("frame", "inject"):
            entries[cid].setdefault("_webSocketMessages", []).append(_message(event, epoch))
        elif kind == "close":
            entries[cid]["time"] = entries[cid]["timings"]["receive"] = (event["t"] - started[cid]) / 1000
            entries[cid]["_closed"] = {k: event.get(k) for k in ("closedBy", "code", "reason", "clean")}
        elif kind == "http_response":
            _answer(entries[cid], event, (event["t"] - started[cid]) / 1000)
        elif kind == "decision":
            entries[cid].setdefault("_decisions", []).append(
                {k: v for k, v in event.items() if k not in ("seq", "t", "kind", "connectionID")})
    return {"log": {"version": "1.2", "creator": CREATOR, "entries": list(entries.values())}}


def _date(epoch: float, t_us: int) -> str:
    moment = datetime.datetime.fromtimestamp(epoch + t_us / 1e6, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pairs(mapping: dict[str, Any] | None) -> list[dict[str, str]]:
    return [{"name": str(k), "value": str(v)} for k, v in (mapping or {}).items()]


def _request(method: str, url: str, headers: dict[str, Any], query: dict[str, Any]) -> dict[str, Any]:
    return {"method": method, "url": url, "httpVersion": "HTTP/1.1", "cookies": [], "headers": _pairs(headers),
            "queryString": _pairs(query), "headersSize": -1, "bodySize": 0}  # fmt: skip


def _response(status: int, text: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"status": status, "statusText": text, "httpVersion": "HTTP/1.1", "cookies": [],
            "headers": _pairs(headers), "content": {"size": 0, "mimeType": "x-unknown"}, "redirectURL": "",
            "headersSize": -1, "bodySize": -1}  # fmt: skip


def _websocket_entry(event: dict[str, Any], epoch: float) -> dict[str, Any]:
    outcome = event.get("outcome", "accepted")
    opened = outcome in ("accepted", "served")
    entry = {
        "startedDateTime": _date(epoch, event["t"]), "time": 0,
        "request": _request("GET", event["url"], event.get("headers") or {}, event.get("query") or {}),
        "response": _response(101, "Switching Protocols") if opened else
        _response(event.get("status") or 0, event.get("reason") or outcome),
        "cache": {}, "timings": {"send": 0, "wait": 0, "receive": 0},
        "_resourceType": "websocket", "_connectionID": event["connectionID"], "_upstream": event.get("upstream"),
        "_outcome": outcome, "_webSocketMessages": [],
    }  # fmt: skip
    return entry


def _http_entry(event: dict[str, Any], epoch: float) -> dict[str, Any]:
    query = dict(pair.split("=", 1) if "=" in pair else (pair, "")
                 for pair in event["url"].partition("?")[2].split("&") if pair)  # fmt: skip
    request = _request(event["method"], event["url"], event.get("headers") or {}, query)
    if "size" in event:
        request["bodySize"] = event["size"]
        mime = next((v for k, v in (event.get("headers") or {}).items() if k.lower() == "content-type"), "")
        request["postData"] = {"mimeType": mime, "text": _text(event)}
    return {
        "startedDateTime": _date(epoch, event["t"]), "time": 0, "request": request,
        "response": _response(0, "no response"), "cache": {}, "timings": {"send": 0, "wait": 0, "receive": 0},
        "_resourceType": "fetch", "_connectionID": event["connectionID"],
    }  # fmt: skip


def _answer(entry: dict[str, Any], event: dict[str, Any], ms: float) -> None:
    headers = event.get("headers") or {}
    mime = next((v for k, v in headers.items() if k.lower() == "content-type"), "x-unknown")
    response = _response(event.get("status") or 0, event.get("outcome", ""), headers)
    response["bodySize"] = event.get("size", -1)
    response["content"] = {"size": event.get("size", 0), "mimeType": mime}
    if "data" in event:
        response["content"]["text"] = event["data"]
    elif "dataBase64" in event:
        response["content"].update(text=event["dataBase64"], encoding="base64")
    entry["response"] = response
    entry["time"] = entry["timings"]["wait"] = ms
    entry["_upstream"] = event.get("upstream")


def _text(event: dict[str, Any]) -> str:
    if "data" in event:
        return str(event["data"])
    if "dataBase64" in event:
        return base64.b64decode(event["dataBase64"]).decode("utf-8", "replace")
    return ""


def _message(event: dict[str, Any], epoch: float) -> dict[str, Any]:
    """One frame as it was delivered: a replaced frame's new data (the original beside it), a dropped one
    marked as not delivered, an injected one as sent by the proxy."""
    shown = event.get("replacedBy") or event
    message: dict[str, Any] = {"type": "send" if event.get("fromClient") else "receive",
                               "time": epoch + event["t"] / 1e6, "opcode": 1 if shown.get("type") == "text" else 2,
                               "data": shown.get("data", shown.get("dataBase64", ""))}  # fmt: skip
    decision = event.get("decision", "pass")
    if event["kind"] == "inject":
        message.update(_injected=True, _sender="proxy")
    elif decision != "pass":
        message["_decision"] = decision
    if event["kind"] == "frame":
        message["_delivered"] = decision != "drop" and not decision.startswith("silence")
    if "replacedBy" in event:
        message["_original"] = event.get("data", event.get("dataBase64", ""))
    if "changed" in event:
        message["_changed"] = event["changed"]
    for key in ("ruleId", "action", "channel"):
        if key in event:
            message["_" + key] = event[key]
    return message
