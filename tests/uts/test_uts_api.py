"""uts-proxy's REST API (SPEC Part 8), driven with real HTTP and WebSocket clients and a real upstream on
loopback: its endpoints and status codes, every match type, action and imperative action, the log's fields,
the inactivity timeout, DELETE, and a uts session as a Part 6 session (trace, attachSession)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import WSMsgType

from appserver.app import AppServer
from tests.peers import UpstreamServer, close_cleanly, receive_data, suite_connection
from tests.uts.conftest import UtsClient

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def dial(http: aiohttp.ClientSession, created: dict[str, Any], query: str = "?key=a.b&format=json",
               ) -> aiohttp.ClientWebSocketResponse:  # fmt: skip
    """An SDK's WebSocket to the session's port, as ably-js opens it (endpoint localhost, the port)."""
    return await http.ws_connect(f"http://localhost:{created['proxy']['port']}/{query}", autoclose=False,
                                 autoping=False)  # fmt: skip


def rule(match: dict[str, Any], action: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"match": match, "action": action, **extra}


async def texts(ws: Any, count: int) -> list[Any]:
    return [json.loads(d) for d in await receive_data(ws, count)]


async def no_data(ws: Any, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        msg = await asyncio.wait_for(ws.receive(), seconds)
        raise AssertionError(f"expected nothing, got {msg}")


# -- the endpoints -------------------------------------------------------------------------------


async def test_health_create_get_and_delete(uts: UtsClient, upstream: UpstreamServer, uts_server: AppServer) -> None:
    assert await uts.call("GET", "/health") == (200, {"ok": True})
    created = await uts.create(upstream.host, rules=[rule({"type": "ws_connect"}, {"type": "passthrough"})])
    session_id, port = created["sessionId"], created["proxy"]["port"]
    assert created["proxy"] == {"host": f"localhost:{port}", "port": port}
    status, got = await uts.call("GET", f"/sessions/{session_id}")
    assert status == 200 and got == {"sessionId": session_id, "port": port, "ruleCount": 1,
                                     "target": {"realtimeHost": upstream.host, "restHost": upstream.host,
                                                "insecure": True}}  # fmt: skip
    assert session_id in uts_server.registry.sessions  # a Part 6 session underneath
    assert await uts.delete(session_id) == []
    assert (await uts.call("GET", f"/sessions/{session_id}"))[0] == 404
    with pytest.raises(OSError):  # its port is free: nothing listens there
        await asyncio.open_connection("127.0.0.1", port)
    assert not uts_server.registry.sessions


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/sessions/nope"), ("GET", "/sessions/nope/log"), ("DELETE", "/sessions/nope"),
    ("POST", "/sessions/nope/rules"), ("POST", "/sessions/nope/actions"),
])  # fmt: skip
async def test_an_unknown_session_is_404(uts: UtsClient, method: str, path: str) -> None:
    status, body = await uts.call(method, path, {"rules": [], "type": "close"})
    assert status == 404 and body == {"error": "session not found"}


@pytest.mark.parametrize(("body", "says"), [
    ("{not json", "invalid JSON"),
    ('{"target": {"realtimeHost": "x"}, "port": "1"}', "port"),
    ('{"target": {}}', "at least one of realtimeHost or restHost"),
    ('{"target": {"realtimeHost": "x"}, "port": -1}', "port must be non-negative"),
    ('{"target": {"realtimeHost": "x"}, "prot": 1}', "prot"),
    ('{"target": {"realtimeHost": "x", "insecure": "yes"}}', "target.insecure"),
    ('{"target": {"realtimeHost": "x"}, "rules": [{"action": {"type": "suppress"}}]}', "match"),
    ('{"target": {"realtimeHost": "x"}, "rules": [{"match": {"type": "ws_connect"}, "action": {}, "times": 1}]}',
     "rules[0].action"),
    ('{"target": {"realtimeHost": "x"}, "rules": [{"match": {"type": "ws_frame_to_client"}, '
     '"action": {"type": "inject_to_client"}}]}', "message: is required"),
    ('{"target": {"realtimeHost": "a b"}}', "target.realtimeHost"),
    ("[1, 2]", "object"),
])  # fmt: skip
async def test_a_bad_create_is_400_and_leaves_nothing(uts: UtsClient, uts_server: AppServer, body: str,
                                                      says: str) -> None:  # fmt: skip
    status, answer = await uts.call("POST", "/sessions", raw=body)
    assert status == 400 and says in answer["error"], answer
    assert not uts_server.registry.sessions


async def test_a_port_in_use_is_409(uts: UtsClient, upstream: UpstreamServer) -> None:
    created = await uts.create(upstream.host)
    status, answer = await uts.call("POST", "/sessions", {"target": {"realtimeHost": upstream.host},
                                                          "port": created["proxy"]["port"]})  # fmt: skip
    assert status == 409 and "in use" in answer["error"].lower() or "address" in answer["error"].lower(), answer
    await uts.delete(created["sessionId"])


async def test_rules_append_prepend_and_spent_rules_go(http: aiohttp.ClientSession, uts: UtsClient,
                                                       upstream: UpstreamServer) -> None:  # fmt: skip
    created = await uts.create(upstream.host)
    sid = created["sessionId"]
    once = rule({"type": "ws_frame_to_client", "action": "MESSAGE"}, {"type": "suppress"}, times=1,
                comment="first message dropped")  # fmt: skip
    assert await uts.rules(sid, [once]) == 1
    assert await uts.rules(sid, [rule({"type": "no_such_type"}, {"type": "suppress"})], "prepend") == 2
    status, answer = await uts.call("POST", f"/sessions/{sid}/rules", {"rules": [], "position": "middle"})
    assert status == 400 and "position" in answer["error"]
    client = await dial(http, created)
    _, server = await upstream.next()
    await server.send_str(json.dumps({"action": 15, "id": "one"}))
    await server.send_str(json.dumps({"action": 15, "id": "two"}))
    assert [m["id"] for m in await texts(client, 1)] == ["two"]
    assert (await uts.call("GET", f"/sessions/{sid}"))[1]["ruleCount"] == 1  # the spent one went
    log = await uts.log(sid)
    frames = [e for e in log if e["type"] == "ws_frame"]
    assert [(f["message"]["id"], f["ruleMatched"]) for f in frames] == [("one", "first message dropped"),
                                                                        ("two", None)]  # fmt: skip
    await close_cleanly(client, server)
    await uts.delete(sid)


# -- match types and their fields --------------------------------------------------------------


async def test_ws_connect_count_and_query_contains(http: aiohttp.ClientSession, uts: UtsClient,
                                                   upstream: UpstreamServer) -> None:  # fmt: skip
    created = await uts.create(upstream.host, rules=[
        rule({"type": "ws_connect", "count": 2}, {"type": "refuse_connection"}, comment="second refused"),
        rule({"type": "ws_connect", "queryContains": {"resume": "*"}}, {"type": "refuse_connection"}, times=1),
        rule({"type": "ws_connect", "queryContains": {"format": "msgpack"}}, {"type": "refuse_connection"}),
    ])  # fmt: skip
    sid = created["sessionId"]
    first = await dial(http, created)  # count 1: through
    _, server = await upstream.next()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await dial(http, created)  # count 2: refused, 502
    assert refused.value.status == 502
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await dial(http, created, "?key=a.b&resume=k1")  # any value of resume
    third = await dial(http, created, "?key=a.b&resume=k2")  # that rule was spent (times 1)
    _, server3 = await upstream.next()
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await dial(http, created, "?format=msgpack")  # that exact value
    log = await uts.log(sid)
    connects = [e for e in log if e["type"] == "ws_connect"]
    assert len(connects) == 5  # every attempt, refused ones too
    assert connects[2]["queryParams"] == {"key": "a.b", "resume": "k1"}
    assert connects[2]["url"] == f"ws://localhost:{created['proxy']['port']}/?key=a.b&resume=k1"
    refusals = [e for e in log if e["type"] == "ws_disconnect" and e["initiator"] == "proxy"]
    assert [e["ruleMatched"] for e in refusals] == ["second refused", "rule-1", "rule-2"]
    await close_cleanly(first, server)
    await close_cleanly(third, server3)
    await uts.delete(sid)


@pytest.mark.parametrize("action", ["ATTACH", "attach", "10", 10])
async def test_ws_frame_to_server_by_action_name_or_number_and_channel(
    http: aiohttp.ClientSession, uts: UtsClient, upstream: UpstreamServer, action: Any,
) -> None:  # fmt: skip
    created = await uts.create(upstream.host, rules=[
        rule({"type": "ws_frame_to_server", "action": action, "channel": "one"}, {"type": "suppress"})])
    client = await dial(http, created)
    _, server = await upstream.next()
    for message in ({"action": 10, "channel": "one"}, {"action": 10, "channel": "two"},
                    {"action": 12, "channel": "one"}):  # fmt: skip
        await client.send_str(json.dumps(message))
    assert await texts(server, 2) == [{"action": 10, "channel": "two"}, {"action": 12, "channel": "one"}]
    log = [e for e in await uts.log(created["sessionId"]) if e["type"] == "ws_frame"]
    # the suppressed ATTACH got no further than the proxy (ably-js's RTL4f counts those that reached the server)
    assert [e["direction"] for e in log] == ["client_to_proxy", "client_to_server", "client_to_server"]
    assert log[0]["ruleMatched"] == "rule-0" and log[1]["ruleMatched"] is None
    await close_cleanly(client, server)
    await uts.delete(created["sessionId"])


async def test_an_unknown_ably_action_name_never_matches(http: aiohttp.ClientSession, uts: UtsClient,
                                                         upstream: UpstreamServer) -> None:  # fmt: skip
    created = await uts.create(upstream.host, rules=[
        rule({"type": "ws_frame_to_client", "action": "CONECTED"}, {"type": "suppress"})])
    assert (await uts.call("GET", f"/sessions/{created['sessionId']}"))[1]["ruleCount"] == 1
    client = await dial(http, created)
    _, server = await upstream.next()
    await server.send_str(json.dumps({"action": 4}))
    assert await texts(client, 1) == [{"action": 4}]
    await close_cleanly(client, server)
    await uts.delete(created["sessionId"])


async def test_delay_after_ws_connect_fires_on_each_connection_until_spent(
    http: aiohttp.ClientSession, uts: UtsClient, upstream: UpstreamServer,
) -> None:  # fmt: skip
    created = await uts.create(upstream.host, rules=[
        rule({"type": "delay_after_ws_connect", "delayMs": 100},
             {"type": "inject_to_client", "message": {"action": 6, "error": {"code": 80003}}}, times=1)])
    client = await dial(http, created)
    _, server = await upstream.next()
    assert await texts(client, 1) == [{"action": 6, "error": {"code": 80003}}]
    second = await dial(http, created)
    _, server2 = await upstream.next()
    await no_data(second, 0.4)  # spent: the second connection gets no timer
    log = await uts.log(created["sessionId"])
    injected = [e for e in log if e["type"] == "ws_frame" and e.get("initiator") == "proxy"]
    assert injected == [{"timestamp": injected[0]["timestamp"], "type": "ws_frame", "direction": "server_to_client",
                         "message": {"action": 6, "error": {"code": 80003}}, "initiator": "proxy",
                         "ruleMatched": None}]  # fmt: skip
    await close_cleanly(client, server)
    await close_cleanly(second, server2)
    await uts.delete(created["sessionId"])


async def test_http_request_method_and_path_contains(http: aiohttp.ClientSession, uts: UtsClient,
                                                     upstream: UpstreamServer) -> None:  # fmt: skip
    created = await uts.create(upstream.host, rules=[
        rule({"type": "http_request", "method": "post", "pathContains": "/channels/"},
             {"type": "http_respond", "status": 401, "body": {"error": {"code": 40142}}}, times=1,
             comment="token expired once")])  # fmt: skip
    base = f"http://localhost:{created['proxy']['port']}"
    async with http.get(f"{base}/channels/a/messages") as got:  # GET: not matched
        assert got.status == 200 and got.headers["X-Upstream"] == "yes"
    async with http.post(f"{base}/channels/a/messages", json={"name": "x"},
                         headers={"Authorization": "Bearer t", "X-Ably-Version": "5"}) as posted:  # fmt: skip
        assert posted.status == 401 and posted.headers["Content-Type"].startswith("application/json")
        assert await posted.json() == {"error": {"code": 40142}}
    async with http.post(f"{base}/channels/a/messages?x=1", json={"name": "x"}) as again:  # spent
        assert again.status == 201
    log = [e for e in await uts.log(created["sessionId"]) if e["type"].startswith("http")]
    assert [(e["type"], e.get("method"), e.get("path"), e.get("status"), e["ruleMatched"]) for e in log] == [
        ("http_request", "GET", "/channels/a/messages", None, None),
        ("http_response", None, None, 200, None),
        ("http_request", "POST", "/channels/a/messages", None, None),
        ("http_response", None, None, 401, "token expired once"),
        ("http_request", "POST", "/channels/a/messages", None, None),
        ("http_response", None, None, 201, None),
    ]
    assert log[2]["headers"] == {"Authorization": "Bearer t", "Content-Type": "application/json",
                                 "Accept": "*/*", "X-Ably-Version": "5"}  # fmt: skip
    assert {e["direction"] for e in log} == {"client_to_server", "server_to_client"}
    await uts.delete(created["sessionId"])


# -- actions ---------------------------------------------------------------------------------------


async def test_frame_actions(http: aiohttp.ClientSession, uts: UtsClient, upstream: UpstreamServer) -> None:
    """passthrough, suppress, delay, replace, inject_to_client (ahead of its trigger), each on its action."""
    created = await uts.create(upstream.host, rules=[
        rule({"type": "ws_frame_to_client", "action": "HEARTBEAT"}, {"type": "passthrough"}),
        rule({"type": "ws_frame_to_client", "action": "ACK"}, {"type": "suppress"}),
        rule({"type": "ws_frame_to_client", "action": "NACK"}, {"type": "delay", "delayMs": 300}),
        rule({"type": "ws_frame_to_client", "action": "ATTACHED"}, {"type": "replace", "message": {"action": 13}}),
        rule({"type": "ws_frame_to_client", "action": "CONNECTED"},
             {"type": "inject_to_client", "message": {"action": 9, "id": "ahead"}}),
        rule({"type": "ws_frame_to_client", "action": "MESSAGE"}, {"type": "no_such_action"}),
    ])  # fmt: skip
    client = await dial(http, created)
    _, server = await upstream.next()
    for action in (0, 1, 4, 11, 15):
        await server.send_str(json.dumps({"action": action}))
    got = [m["action"] for m in await texts(client, 5)]
    assert got == [0, 9, 4, 13, 15]  # the ACK suppressed, the injection ahead of CONNECTED, ATTACHED replaced
    loop = asyncio.get_running_loop()
    start = loop.time()
    await server.send_str(json.dumps({"action": 2}))
    assert [m["action"] for m in await texts(client, 1)] == [2] and loop.time() - start >= 0.28
    await close_cleanly(client, server)
    await uts.delete(created["sessionId"])


async def test_replace_and_log_in_msgpack(http: aiohttp.ClientSession, uts: UtsClient,
                                          upstream: UpstreamServer) -> None:  # fmt: skip
    created = await uts.create(upstream.host, rules=[
        rule({"type": "ws_frame_to_client", "action": "CONNECTED"},
             {"type": "replace", "message": {"action": 4, "connectionId": "replaced"}})])  # fmt: skip
    client = await dial(http, created, "?format=msgpack")
    _, server = await upstream.next()
    await server.send_bytes(msgpack.packb({"action": 4, "connectionId": "real", "data": b"\x00\x01"}))
    msg = await client.receive()
    assert msg.type is WSMsgType.BINARY and msgpack.unpackb(msg.data) == {"action": 4, "connectionId": "replaced"}
    frame = next(e for e in await uts.log(created["sessionId"]) if e["type"] == "ws_frame")
    assert frame["message"]["connectionId"] == "real" and frame["ruleMatched"] == "rule-0"
    await close_cleanly(client, server)
    await uts.delete(created["sessionId"])


@pytest.mark.parametrize(("action", "code"), [
    ({"type": "close", "closeCode": 4001}, 4001), ({"type": "close"}, 1000),
    ({"type": "disconnect"}, None),
    ({"type": "inject_to_client_and_close", "message": {"action": 6}, "closeCode": 4002}, 4002),
])  # fmt: skip
async def test_closing_actions_on_a_frame(http: aiohttp.ClientSession, uts: UtsClient, upstream: UpstreamServer,
                                          action: dict[str, Any], code: int | None) -> None:  # fmt: skip
    created = await uts.create(upstream.host, rules=[rule({"type": "ws_frame_to_server", "action": "CLOSE"}, action)])
    client = await dial(http, created)
    _, server = await upstream.next()
    await client.send_str(json.dumps({"action": 7}))
    if action["type"] == "inject_to_client_and_close":
        assert await texts(client, 1) == [{"action": 6}]
    msg = await client.receive(timeout=5)
    if code is None:
        assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR), msg  # no close frame
    else:
        assert msg.type is WSMsgType.CLOSE and msg.data == code, msg
    await client.close()
    await server.close()
    await asyncio.sleep(0.1)
    log = await uts.log(created["sessionId"])
    ends = [e for e in log if e["type"] == "ws_disconnect"]
    assert ends and ends[0]["initiator"] == "proxy" and ends[0].get("closeCode") == code, ends
    await uts.delete(created["sessionId"])


async def test_accept_and_close_never_dials_the_upstream(http: aiohttp.ClientSession, uts: UtsClient,
                                                         upstream: UpstreamServer) -> None:  # fmt: skip
    created = await uts.create(upstream.host, rules=[
        rule({"type": "ws_connect"}, {"type": "accept_and_close", "closeCode": 4008}, times=1, comment="bye")])
    client = await dial(http, created)
    msg = await client.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4008
    await client.close()
    assert upstream.accepted.empty()
    await asyncio.sleep(0.1)
    log = await uts.log(created["sessionId"])
    assert [(e["type"], e.get("closeCode"), e["ruleMatched"]) for e in log] == [
        ("ws_connect", None, None), ("ws_disconnect", 4008, "bye")]
    await uts.delete(created["sessionId"])


async def test_suppress_onwards_on_a_frame_and_on_a_timer(http: aiohttp.ClientSession, uts: UtsClient,
                                                          upstream: UpstreamServer) -> None:  # fmt: skip
    created = await uts.create(upstream.host, rules=[
        rule({"type": "ws_frame_to_server", "action": "DETACH"}, {"type": "suppress_onwards"}, times=1),
        rule({"type": "delay_after_ws_connect", "delayMs": 200}, {"type": "suppress_onwards"}, times=1,
             comment="starve"),
    ])  # fmt: skip
    client = await dial(http, created)
    _, server = await upstream.next()
    await client.send_str(json.dumps({"action": 12}))
    await client.send_str(json.dumps({"action": 15}))
    await server.send_str(json.dumps({"action": 0}))
    assert await texts(client, 1) == [{"action": 0}]
    await no_data(server)  # client → server suppressed, the DETACH too
    await asyncio.sleep(0.2)
    await server.send_str(json.dumps({"action": 0}))
    await server.ping(b"p")
    await no_data(client)  # the timer suppressed server → client, pings too
    log = await uts.log(created["sessionId"])
    action = next(e for e in log if e["type"] == "action")
    assert action["message"] == {"type": "suppress_onwards", "direction": "server_to_client"}
    assert action["ruleMatched"] == "starve" and action["initiator"] == "proxy"
    await client.close()
    await server.close()
    await uts.delete(created["sessionId"])


async def test_http_actions(http: aiohttp.ClientSession, uts: UtsClient, upstream: UpstreamServer) -> None:
    created = await uts.create(upstream.host, rules=[
        rule({"type": "http_request", "pathContains": "/respond"},
             {"type": "http_respond", "status": 503, "body": {"error": {"code": 50300}},
              "headers": {"Content-Type": "application/problem+json", "X-Fault": "1"}}),
        rule({"type": "http_request", "pathContains": "/delay"}, {"type": "http_delay", "delayMs": 300}),
        rule({"type": "http_request", "pathContains": "/drop"}, {"type": "http_drop"}),
        rule({"type": "http_request", "pathContains": "/replace"},
             {"type": "http_replace_response", "status": 200, "body": [1, 2]}),
        rule({"type": "http_request", "pathContains": "/pass"}, {"type": "passthrough"}, comment="through"),
    ])  # fmt: skip
    base = f"http://localhost:{created['proxy']['port']}"
    async with http.get(f"{base}/respond") as r:
        assert (r.status, r.headers["Content-Type"], r.headers["X-Fault"]) == (503, "application/problem+json", "1")
        assert await r.json(content_type=None) == {"error": {"code": 50300}}
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with http.get(f"{base}/delay") as r:
        assert r.status == 200 and loop.time() - start >= 0.28
    with pytest.raises(aiohttp.ClientError):  # a POST: aiohttp retries an idempotent request that was reset
        async with http.post(f"{base}/drop", data=b"x") as r:
            await r.read()
    async with http.post(f"{base}/replace", data=b"x") as r:
        assert r.status == 200 and await r.json() == [1, 2]  # the upstream's answer was discarded
    async with http.get(f"{base}/pass") as r:
        assert r.status == 200 and r.headers["X-Upstream"] == "yes"
    responses = [e for e in await uts.log(created["sessionId"]) if e["type"] == "http_response"]
    assert [(e.get("status"), e["ruleMatched"]) for e in responses] == [
        (503, "rule-0"), (200, "rule-1"), (None, "rule-2"), (200, "rule-3"), (200, "through")]
    await uts.delete(created["sessionId"])


# -- imperative actions ------------------------------------------------------------------------


async def test_imperative_actions(http: aiohttp.ClientSession, uts: UtsClient, upstream: UpstreamServer) -> None:
    created = await uts.create(upstream.host)
    sid = created["sessionId"]
    assert await uts.action(sid, type="close") == (409, {"error": "no active WebSocket connection"})
    status, body = await uts.action(sid, type="explode")
    assert status == 400 and "unknown action type: explode" in body["error"]
    client = await dial(http, created)
    _, server = await upstream.next()
    status, body = await uts.action(sid, type="inject_to_client")
    assert status == 400 and "message" in body["error"]
    assert await uts.action(sid, type="inject_to_client", message={"action": 13, "channel": "c"}) == (200, {"ok": True})
    assert await texts(client, 1) == [{"action": 13, "channel": "c"}]  # written before the answer
    assert await uts.action(sid, type="close", closeCode=4321) == (200, {"ok": True})
    msg = await client.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4321
    await client.close()
    await server.close()
    second = await dial(http, created)
    _, server2 = await upstream.next()
    assert (await uts.action(sid, type="disconnect"))[0] == 200
    assert (await second.receive(timeout=5)).type in (WSMsgType.CLOSED, WSMsgType.ERROR)
    third = await dial(http, created, "?format=msgpack")
    _, server3 = await upstream.next()
    assert (await uts.action(sid, type="inject_to_client_and_close", message={"action": 6}))[0] == 200
    msg = await third.receive(timeout=5)
    assert msg.type is WSMsgType.BINARY and msgpack.unpackb(msg.data) == {"action": 6}  # the connection's format
    assert (await third.receive(timeout=5)).type is WSMsgType.CLOSE
    await third.close()
    for ws in (server2, server3):
        await ws.close()
    await asyncio.sleep(0.1)
    log = await uts.log(sid)
    actions = [e["message"]["type"] for e in log if e["type"] == "action"]
    assert actions == ["close", "explode", "inject_to_client", "inject_to_client", "close", "disconnect",
                       "inject_to_client_and_close"]  # fmt: skip
    closes = [(e["initiator"], e.get("closeCode")) for e in log if e["type"] == "ws_disconnect"]
    assert closes == [("proxy", 4321), ("proxy", None), ("proxy", 1000)]
    await second.close()
    await uts.delete(sid)


# -- the log ---------------------------------------------------------------------------------------


async def test_log_timestamps_and_shapes(http: aiohttp.ClientSession, uts: UtsClient,
                                         upstream: UpstreamServer) -> None:  # fmt: skip
    created = await uts.create(upstream.host)
    client = await dial(http, created)
    _, server = await upstream.next()
    await client.send_str(json.dumps({"action": 10, "channel": "x"}))
    await server.send_str(json.dumps({"action": 11, "channel": "x"}))
    await texts(client, 1)
    await client.send_str("not json at all")
    await receive_data(server, 2)
    await server.close(code=4500)
    await client.receive(timeout=5)
    await client.close()
    await asyncio.sleep(0.1)
    events = await uts.delete(created["sessionId"])
    stamps = [e["timestamp"] for e in events]
    assert all(STAMP.match(s) for s in stamps) and stamps == sorted(stamps), stamps
    assert [e["type"] for e in events] == ["ws_connect", "ws_frame", "ws_frame", "ws_frame", "ws_disconnect"]
    assert events[1] == {"timestamp": stamps[1], "type": "ws_frame", "direction": "client_to_server",
                         "message": {"action": 10, "channel": "x"}, "ruleMatched": None}  # fmt: skip
    assert events[3]["message"] == {"_undecodable": True}  # and the log goes on after it
    assert events[4] == {"timestamp": stamps[4], "type": "ws_disconnect", "initiator": "server", "closeCode": 4500,
                         "ruleMatched": None}  # fmt: skip


# -- lifetime ------------------------------------------------------------------------------------


async def test_delete_closes_connections_with_1001_before_it_answers(http: aiohttp.ClientSession, uts: UtsClient,
                                                                     upstream: UpstreamServer) -> None:  # fmt: skip
    created = await uts.create(upstream.host)
    client = await dial(http, created)
    _, server = await upstream.next()
    answer = asyncio.ensure_future(uts.delete(created["sessionId"]))
    msg = await client.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1001
    await client.close()
    assert (await server.receive(timeout=5)).data == 1001
    await server.close()
    events = await answer
    assert events[-1]["type"] == "ws_disconnect" and events[-1]["closeCode"] == 1001
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", created["proxy"]["port"])


async def test_timeout_counts_from_the_last_call_or_traffic(http: aiohttp.ClientSession, uts: UtsClient,
                                                            upstream: UpstreamServer) -> None:  # fmt: skip
    created = await uts.create(upstream.host, timeoutMs=600)
    sid = created["sessionId"]
    client = await dial(http, created)
    _, server = await upstream.next()
    for _ in range(6):  # 1.2 s of traffic every 0.2 s keeps it
        await asyncio.sleep(0.2)
        await server.send_str(json.dumps({"action": 0}))
        await texts(client, 1)
    assert (await uts.call("GET", f"/sessions/{sid}"))[0] == 200  # and that call counts too
    await asyncio.sleep(1.2)
    assert (await uts.call("GET", f"/sessions/{sid}"))[0] == 404
    msg = await client.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1001
    await client.close()
    await server.close()


# -- a Part 6 session underneath ---------------------------------------------------------------


async def test_attach_session_gives_the_dialogue_wait_for_rule_and_the_trace(
    http: aiohttp.ClientSession, uts: UtsClient, uts_server: AppServer, upstream: UpstreamServer,
) -> None:  # fmt: skip
    created = await uts.create(upstream.host, rules=[
        rule({"type": "ws_frame_to_client", "action": "ACK"}, {"type": "suppress"}, comment="no acks")])
    sid = created["sessionId"]
    async with suite_connection(http, uts_server.control_port) as suite:
        response = await suite.request("attachSession", {"sessionID": sid})
        assert response["result"]["sessionID"] == sid and response["result"]["proxyPort"] == created["proxy"]["port"]
        listed = (await suite.request("listRules"))["result"]["rules"]
        assert len(listed) == 1 and listed[0]["match"] == {"fromClient": False, "action": 1}

        async def drop_messages(params: dict[str, Any]) -> dict[str, Any]:
            return {"action": "drop"} if json.loads(params["data"])["action"] == 15 else {
                "action": "replace", "type": params["type"], "data": params["data"]}

        suite.on_transform = drop_messages
        client = await dial(http, created)
        _, server = await upstream.next()
        for action in (1, 15, 0):
            await server.send_str(json.dumps({"action": action}))
        assert await texts(client, 1) == [{"action": 0}]  # the rule dropped the ACK, the suite the MESSAGE
        waited = await suite.request("waitForRule", {"id": listed[0]["id"], "count": 1})
        assert waited["result"]["matched"] == 1
        trace = (await suite.request("getTrace"))["result"]["events"]
        assert [e["kind"] for e in trace][:1] == ["open"] and sum(e["kind"] == "frame" for e in trace) == 3
        second = await suite.request("attachSession", {"sessionID": sid})
        assert second["error"]["code"] == -32006
    # detached: the session goes on, unmatched frames pass without asking anyone
    await asyncio.sleep(0.1)
    await server.send_str(json.dumps({"action": 15}))
    assert await texts(client, 1) == [{"action": 15}]
    assert (await uts.call("GET", f"/sessions/{sid}"))[0] == 200
    await close_cleanly(client, server)
    await uts.delete(sid)


async def test_attach_session_refuses_what_it_cannot_attach(http: aiohttp.ClientSession,
                                                            uts_server: AppServer) -> None:  # fmt: skip
    async with suite_connection(http, uts_server.control_port) as holder, \
            suite_connection(http, uts_server.control_port) as other:  # fmt: skip
        opened = await holder.request("openSession", {"mode": "direct", "upstream": "ws://127.0.0.1:9"})
        sid = opened["result"]["sessionID"]
        assert (await other.request("attachSession", {"sessionID": sid}))["error"]["code"] == -32006
        unknown = await other.request("attachSession", {"sessionID": "nope"})
        assert unknown["error"]["code"] == -32602 and "nope" in unknown["error"]["message"]
        typo = await other.request("attachSession", {"sesionID": sid})
        assert typo["error"]["code"] == -32602 and "sesionID" in typo["error"]["message"]


async def test_route_sends_a_sandbox_target_to_a_local_server(http: aiohttp.ClientSession,
                                                              upstream: UpstreamServer, no_leaks: None) -> None:
    from tests.conftest import make_config, running_app_server
    from yarl import URL

    config = make_config(uts_port=0, routes=(("*.ably-nonprod.net", URL(f"ws://{upstream.host}")),))
    async with running_app_server(config) as server:
        uts = UtsClient(http, server.uts_port)
        created = await uts.create("", target={"realtimeHost": "sandbox.realtime.ably-nonprod.net",
                                               "restHost": "sandbox.realtime.ably-nonprod.net"})  # fmt: skip
        client = await dial(http, created)
        request, ws = await upstream.next()
        assert request.path == "/" and request.query["key"] == "a.b"
        async with http.get(f"http://localhost:{created['proxy']['port']}/time") as r:
            assert r.status == 200 and r.headers["X-Upstream"] == "yes"
        await close_cleanly(client, ws)
        await uts.delete(created["sessionId"])
