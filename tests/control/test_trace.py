"""The trace (SPEC Part 5) end to end: a real app server, a real upstream, real clients, a suite over JSON-RPC."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import WSMsgType

from appserver.app import AppServer
from appserver.config import Config
from tests.conftest import make_config
from tests.peers import Suite, UpstreamServer, close_cleanly, receive, redirect_headers, suite_connection
from tests.rules.test_rules_relay import add, pair


async def trace(suite: Suite, **params: Any) -> dict[str, Any]:
    response = await suite.request("getTrace", params)
    assert "result" in response, response
    return response["result"]  # type: ignore[no-any-return]


async def until(suite: Suite, kind: str, count: int = 1, timeout: float = 5) -> list[dict[str, Any]]:
    """The trace's events once it holds ``count`` of this kind."""
    async with asyncio.timeout(timeout):
        while True:
            events = (await trace(suite))["events"]
            if sum(e["kind"] == kind for e in events) >= count:
                return events  # type: ignore[no-any-return]
            await asyncio.sleep(0.02)


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind]


async def test_a_connection_traced_from_open_to_close(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """Opened (url, query, headers, upstream), frames both ways with their Ably action and channel and who
    decided them, pings, closed (who, code, reason, clean): in order, seqs increasing, times monotonic."""
    suite.on_transform = None  # the suite is asked about every frame and echoes it back
    await add(suite, {"id": "d", "match": {"action": "DETACH"}, "action": {"type": "drop"}})
    client, server = await pair(http, app_server, upstream, "/?format=json&v=6")
    await client.send_str(json.dumps({"action": 10, "channel": "room"}))  # ATTACH: the suite is asked
    assert json.loads((await receive(server)).data)["channel"] == "room"
    await client.send_str(json.dumps({"action": 12, "channel": "room"}))  # DETACH: dropped by rule d
    await server.send_bytes(msgpack.packb({"action": 11, "channel": "room"}))  # ATTACHED, msgpack
    assert (await receive(client)).type is WSMsgType.BINARY
    await client.ping(b"hi")
    assert (await receive(server)).type is WSMsgType.PING
    await close_cleanly(client, server)
    events = await until(suite, "close")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "open" and kinds[-1] == "close"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events) and len({e["seq"] for e in events}) == len(events)
    assert all(a["t"] <= b["t"] for a, b in zip(events, events[1:]))
    [opened] = of(events, "open")
    assert opened["query"] == {"format": "json", "v": "6"} and opened["upstream"].startswith(f"ws://{upstream.host}/")
    frames = of(events, "frame")
    assert [(f["fromClient"], f["action"], f["channel"], f["decision"]) for f in frames] == [
        (True, "ATTACH", "room", "pass"), (True, "DETACH", "room", "drop"), (False, "ATTACHED", "room", "pass")]
    assert frames[0]["by"] == "suite" and frames[1]["ruleId"] == "d" and frames[2]["type"] == "binary"
    assert frames[0]["data"] == json.dumps({"action": 10, "channel": "room"}) and "dataBase64" in frames[2]
    [answer] = [e for e in of(events, "decision") if e.get("by") == "suite" and e.get("fromClient") is True]
    assert answer["answer"] == "pass" and answer["event"] == "message"
    assert [(p["fromClient"], p["fate"]) for p in of(events, "ping")] == [(True, "relayed")]
    [closed] = of(events, "close")
    assert (closed["closedBy"], closed["code"], closed["clean"]) == ("client", 1000, True)
    assert {e["connectionID"] for e in events if e["kind"] != "decision" or "connectionID" in e} == {opened["connectionID"]}


async def test_cursor_connection_filter_and_clear(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """since/next page through the trace; connectionID keeps one connection's events; clearTrace empties it,
    and the seqs go on from where they were."""
    await add(suite, {"match": {}, "action": {"type": "pass"}})
    first, first_server = await pair(http, app_server, upstream)
    second, second_server = await pair(http, app_server, upstream)
    for n in range(3):
        await first.send_str(f"a{n}")
        await second.send_str(f"b{n}")
    for ws in (first_server, second_server):
        for _ in range(3):
            await receive(ws)
    events = await until(suite, "frame", 6)
    page = await trace(suite, since=0, limit=2)
    assert len(page["events"]) == 2 and page["next"] == page["events"][-1]["seq"] + 1
    rest = await trace(suite, since=page["next"])
    assert [e["seq"] for e in page["events"] + rest["events"]] == [e["seq"] for e in events]
    a_id = of(events, "open")[0]["connectionID"]
    only_a = (await trace(suite, connectionID=a_id))["events"]
    assert [e.get("data") for e in of(only_a, "frame")] == ["a0", "a1", "a2"]
    assert (await suite.request("clearTrace", {}))["result"]["cleared"] == len(rest["events"]) + 2
    after = await trace(suite)
    assert after["events"] == [] and after["next"] == rest["next"]
    await first.send_str("after")
    await receive(first_server)
    [frame] = of(await until(suite, "frame"), "frame")
    assert frame["data"] == "after" and frame["seq"] >= rest["next"]
    await close_cleanly(first, first_server)
    await close_cleanly(second, second_server)


@pytest.mark.parametrize("config", [make_config(trace_limit=5, trace_data_limit=4)])
async def test_the_limit_drops_the_oldest_and_says_how_many(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite, config: Config
) -> None:
    """--trace-limit 5: only the last five events stay, a `dropped` event counts the rest; --trace-data-limit 4
    cuts each frame's data to 4 bytes (``truncated``), its Ably action still read from the whole frame."""
    await add(suite, {"match": {}, "action": {"type": "pass"}})
    client, server = await pair(http, app_server, upstream)
    for n in range(10):
        await client.send_str(json.dumps({"action": 15, "channel": f"c{n}"}))
    for _ in range(10):
        await receive(server)
    events = await until(suite, "frame", 5)
    dropped, *kept = events
    assert dropped["kind"] == "dropped" and len(kept) == 5
    assert dropped["count"] == kept[0]["seq"] - 1 and dropped["count"] >= 6
    assert all(e["kind"] == "frame" and e["truncated"] and len(e["data"]) == 4 for e in kept)
    assert [e["channel"] for e in kept] == [f"c{n}" for n in range(5, 10)] and kept[0]["action"] == "MESSAGE"
    page = await trace(suite, since=kept[2]["seq"])
    assert [e["seq"] for e in page["events"]] == [e["seq"] for e in kept[2:]]  # nothing dropped from there on
    await close_cleanly(client, server)


async def test_http_exchanges_are_traced(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """A relayed request and one a rule answers: http_request (method, url, headers, a body a rule read) and
    http_response (status, headers, size, the first bytes, where it came from), with the rule's decision."""
    await add(suite, {"id": "t", "match": {"event": "http", "path": "/time"},
                      "action": {"type": "respond", "status": 200, "json": [42]}},
              {"match": {"event": "http", "fields": {"name": "x"}}, "action": {"type": "pass"}})  # fmt: skip
    base = f"http://127.0.0.1:{app_server.proxy_port}"
    async with http.get(f"{base}/time?x=1", headers=redirect_headers(upstream.host, "http")) as response:
        assert await response.json() == [42]
    async with http.post(f"{base}/messages", json={"name": "x"}, headers=redirect_headers(upstream.host, "http")) as r:
        assert r.status == 201
    events = await until(suite, "http_response", 2)
    requests, responses = of(events, "http_request"), of(events, "http_response")
    assert [(r["method"], r["url"]) for r in requests] == [("GET", f"http://{upstream.host}/time?x=1"),
                                                           ("POST", f"http://{upstream.host}/messages")]
    assert json.loads(requests[1]["data"]) == {"name": "x"} and requests[1]["size"] == len(requests[1]["data"])
    answered, relayed = responses
    assert (answered["status"], answered["upstream"], answered["data"]) == (200, None, "[42]")
    assert answered["connectionID"] == requests[0]["connectionID"]
    assert relayed["status"] == 201 and relayed["upstream"] == f"http://{upstream.host}/messages"
    assert relayed["headers"]["X-Upstream"] == "yes" and relayed["size"] > 0 and relayed["outcome"] == "complete"
    [decision] = [e for e in of(events, "decision") if e.get("ruleId") == "t"]
    assert (decision["event"], decision["action"]) == ("http", "respond")


async def test_a_refused_connect_and_a_suite_timeout_are_decisions(
    http: aiohttp.ClientSession, upstream: UpstreamServer, no_leaks: None
) -> None:
    """A connect refused by a rule and a transform the suite never answers (its timeout) are both in the trace
    as decisions; the refused attempt is an open event with its outcome (SPEC Part 9)."""
    from tests.conftest import running_app_server
    from tests.peers import NO_ANSWER, connect_client

    async with running_app_server(make_config(transform_timeout=0.2)) as server:
        async with suite_connection(http, server.control_port) as suite:
            await suite.request("startInterception", {"mode": "proxy"})
            await add(suite, {"id": "no", "match": {"event": "connect", "path": "/refused"},
                              "action": {"type": "refuse", "status": 503}})  # fmt: skip
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await connect_client(http, server.proxy_port, upstream.host, "/refused")

            async def silent(params: dict[str, Any]) -> Any:
                return NO_ANSWER

            suite.on_transform = silent
            client, server_ws = await pair(http, server, upstream)
            await client.send_str("unanswered")
            assert (await receive(server_ws)).data == "unanswered"  # passed on after the timeout
            events = await until(suite, "frame")
            [refused] = [e for e in of(events, "decision") if e.get("ruleId") == "no"]
            assert (refused["event"], refused["action"]) == ("connect", "refuse")
            assert refused["url"].endswith("/refused")
            attempt, accepted = of(events, "open")
            assert (attempt["outcome"], attempt["status"], attempt["path"]) == ("refused", 503, "/refused")
            assert accepted["outcome"] == "accepted" and accepted["upstream"]
            [timeout] = [e for e in of(events, "decision") if e.get("by") == "suite"]
            assert timeout["answer"] == "timeout"
            await close_cleanly(client, server_ws)


async def test_bad_trace_params(http: aiohttp.ClientSession, app_server: AppServer, suite: Suite) -> None:
    """A bad cursor or format is -32602 saying what was wrong; an unknown connection -32002; a control
    connection that is not the active suite -32001."""
    for params, code, words in [({"since": -1}, -32602, "since"), ({"since": 10**6}, -32602, "since"),
                                ({"since": "x"}, -32602, "since"), ({"limit": 0}, -32602, "limit"),
                                ({"connectionID": "nope"}, -32002, "nope")]:  # fmt: skip
        response = await suite.request("getTrace", params)
        assert response["error"]["code"] == code and words in response["error"]["message"], (params, response)
    response = await suite.request("exportTrace", {"format": "pcap"})
    assert response["error"]["code"] == -32602 and "jsonl, har" in response["error"]["message"]
    async with suite_connection(http, app_server.control_port) as bystander:
        response = await bystander.request("getTrace", {})
        assert response["error"]["code"] == -32001


async def test_a_new_suite_starts_a_new_trace(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """The trace belongs to the active suite: the next one starts empty."""
    from tests.conftest import intercepting_suite_connection

    async with intercepting_suite_connection(http, app_server.control_port) as first:
        await add(first, {"match": {}, "action": {"type": "pass"}})
        client, server = await pair(http, app_server, upstream)
        await client.send_str("seen by the first")
        await receive(server)
        assert of(await until(first, "frame"), "frame")[0]["data"] == "seen by the first"
        await close_cleanly(client, server)
    async with intercepting_suite_connection(http, app_server.control_port) as second:
        assert (await trace(second))["events"] == []


@pytest.mark.parametrize("config", [make_config(trace=False)])
async def test_no_trace(http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer,
                        suite: Suite, config: Config) -> None:  # fmt: skip
    """--no-trace: nothing is recorded."""
    client, server = await pair(http, app_server, upstream)
    await client.send_str("x")
    await receive(server)
    await close_cleanly(client, server)
    assert (await trace(suite))["events"] == []


async def test_injections_pings_and_pongs(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """An injection, a server ping dropped by a rule, the pong to the suite's own ping (answered here) and a
    ping silenced: each is in the trace with its fate, and the rule's ping decision too."""
    await add(suite, {"id": "p", "match": {"event": "ping", "fromClient": False}, "action": {"type": "drop"}},
              {"match": {"action": "DETACH"}, "action": [{"type": "pass"}, {"type": "silence"}]},
              {"match": {}, "action": {"type": "pass"}})  # fmt: skip
    client, server = await pair(http, app_server, upstream)
    cid = of(await until(suite, "open"), "open")[0]["connectionID"]
    response = await suite.request("injectMessage", {"connectionID": cid, "fromClient": False, "type": "text",
                                                     "data": '{"action":4,"connectionId":"x"}'})  # fmt: skip
    assert "result" in response, response
    assert json.loads((await receive(client)).data)["action"] == 4
    await server.ping(b"dropped")
    assert (await suite.request("sendPing", {"connectionID": cid, "side": "client", "data": "mine"}))["result"] == {}
    assert (await receive(client)).data == b"mine"
    await client.pong(b"mine")
    await client.send_str('{"action":12}')  # DETACH: silence from here on
    await receive(server)
    await client.ping(b"silenced")
    events = await until(suite, "ping", 2)
    [injected] = of(events, "inject")
    assert (injected["fromClient"], injected["action"], injected["type"]) == (False, "CONNECTED", "text")
    assert [(p["fromClient"], p["fate"]) for p in of(events, "ping")] == [(False, "dropped"), (True, "silenced")]
    assert [(p["fromClient"], p["fate"]) for p in of(events, "pong")] == [(True, "answered")]
    assert [(d["event"], d["action"]) for d in of(events, "decision") if d.get("ruleId") == "p"] == [("ping", "drop")]
    [detach] = [f for f in of(events, "frame") if f["action"] == "DETACH"]
    assert detach["effects"] == ["silence"]
    await close_cleanly(client, server)
