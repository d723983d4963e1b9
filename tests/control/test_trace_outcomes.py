"""SPEC Part 9, the trace tells what happened: dates (epochUs), every handshake attempt as an open event with
its outcome (refused by a rule or the upstream, unreachable), the HAR showing what was delivered (a patched
frame's new data, a dropped frame not delivered, an injected frame as the proxy's), and the timeline showing
what a patch changed and which host a refusal was for."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import pytest

from appserver.app import AppServer
from appserver.trace.view import lines
from tests.mitm_helpers import free_port
from tests.peers import Suite, UpstreamServer, close_cleanly, connect_client, receive_data


async def result(suite: Suite, method: str, params: dict[str, Any]) -> Any:
    response = await suite.request(method, params)
    assert "result" in response, response
    return response["result"]


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind]


async def test_get_trace_gives_the_wall_clock_of_t_zero(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
) -> None:  # fmt: skip
    before = time.time() * 1e6
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    after = time.time() * 1e6
    got = await result(suite, "getTrace", {})
    [opened] = of(got["events"], "open")
    assert before - 50_000 <= got["epochUs"] + opened["t"] <= after + 50_000
    await close_cleanly(client, server)


async def test_every_handshake_attempt_is_an_open_event_with_its_outcome(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
) -> None:  # fmt: skip
    await result(suite, "addRules", {"rules": [
        {"id": "no", "match": {"event": "connect", "path": "/by-rule"}, "action": {"type": "refuse", "status": 503}}]})
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await connect_client(http, app_server.proxy_port, upstream.host, "/by-rule")
    upstream.refuse_with = 401
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await connect_client(http, app_server.proxy_port, upstream.host, "/by-upstream")
    upstream.refuse_with = None
    nowhere = f"127.0.0.1:{free_port()}"
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await connect_client(http, app_server.proxy_port, nowhere, "/nowhere")
    events = (await result(suite, "getTrace", {}))["events"]
    outcomes = [(e["path"], e["outcome"], e["status"], e["host"]) for e in of(events, "open")]
    assert outcomes == [("/by-rule", "refused", 503, upstream.host),
                        ("/by-upstream", "upstream-refused", 401, upstream.host),
                        ("/nowhere", "unreachable", 502, nowhere)]  # fmt: skip
    timeline = list(lines(events))
    assert any(f"open refused 503 for {upstream.host}" in line for line in timeline), timeline
    assert any(f"open unreachable 502 for {nowhere}" in line for line in timeline), timeline
    har = json.loads((await result(suite, "exportTrace", {"format": "har"}))["data"])
    statuses = [(e["request"]["url"].rsplit("/", 1)[1], e["response"]["status"], e["_outcome"])
                for e in har["log"]["entries"]]  # fmt: skip
    assert statuses == [("by-rule", 503, "refused"), ("by-upstream", 401, "upstream-refused"),
                        ("nowhere", 502, "unreachable")]  # fmt: skip


async def test_the_har_shows_what_was_delivered_and_the_timeline_what_a_patch_changed(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
) -> None:  # fmt: skip
    await result(suite, "addRules", {"rules": [
        {"match": {"action": "CONNECTED"}, "action": {"type": "patch", "set": {"connectionDetails.maxIdleInterval": 5}}},
        {"match": {"action": "ACK"}, "action": {"type": "drop"}},
        {"match": {}, "action": {"type": "pass"}}]})  # fmt: skip
    client = await connect_client(http, app_server.proxy_port, upstream.host, "/?format=json")
    _, server = await upstream.next()
    connected = {"action": 4, "connectionId": "c1", "connectionDetails": {"maxIdleInterval": 15000}}
    await server.send_str(json.dumps(connected))
    [patched] = await receive_data(client, 1)
    assert json.loads(patched)["connectionDetails"]["maxIdleInterval"] == 5
    await server.send_str(json.dumps({"action": 1, "msgSerial": 0, "count": 1}))  # ACK: dropped
    connection_id = of((await result(suite, "getTrace", {}))["events"], "open")[0]["connectionID"]
    await result(suite, "injectMessage", {"connectionID": connection_id, "fromClient": False,
                                          "message": {"action": "HEARTBEAT"}})  # fmt: skip
    assert json.loads((await receive_data(client, 1))[0])["action"] == 0  # the injection; the ACK never came
    events = (await result(suite, "getTrace", {}))["events"]
    har = json.loads((await result(suite, "exportTrace", {"format": "har"}))["data"])
    [entry] = har["log"]["entries"]
    first, dropped, injected = entry["_webSocketMessages"]
    assert json.loads(first["data"])["connectionDetails"]["maxIdleInterval"] == 5  # what the client got
    assert json.loads(first["_original"]) == connected and first["_delivered"] is True
    assert first["_changed"] == {"connectionDetails.maxIdleInterval": [15000, 5]}
    assert dropped["_delivered"] is False and dropped["_decision"] == "drop"
    assert injected["_injected"] is True and injected["_sender"] == "proxy" and json.loads(injected["data"]) == {
        "action": 0}
    timeline = list(lines(events))
    assert any("CONNECTED" in line and "changed connectionDetails.maxIdleInterval: 15000 → 5" in line
               for line in timeline), timeline  # fmt: skip
    await close_cleanly(client, server)
