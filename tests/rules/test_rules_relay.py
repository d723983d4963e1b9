"""Rules end to end: a real app server, a real upstream, real clients on loopback, a suite over JSON-RPC."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import WSMsgType

from appserver.app import AppServer
from tests.peers import (Suite, UpstreamServer, close_cleanly, connect_client, receive, receive_data,
                         redirect_headers, suite_connection)


async def add(suite: Suite, *rules: dict[str, Any], position: str = "append") -> list[str]:
    response = await suite.request("addRules", {"rules": list(rules), "position": position})
    assert "result" in response, response
    return response["result"]["ids"]  # type: ignore[no-any-return]


async def note(suite: Suite, method: str, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            item = await suite.notifications.get()
            if item["method"] == method:
                return item["params"]  # type: ignore[no-any-return]


async def pair(http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer,
               path: str = "/?format=json") -> tuple[Any, Any]:  # fmt: skip
    client = await connect_client(http, app_server.proxy_port, upstream.host, path)
    _, server = await upstream.next()
    return client, server


async def test_only_the_active_suite_may_use_rules(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    """Rule methods on a control connection that is not the active suite are -32001."""
    async with suite_connection(http, app_server.control_port) as bystander:
        response = await bystander.request("addRules", {"rules": []})
        assert response["error"]["code"] == -32001 and "startInterception" in response["error"]["message"]


async def test_bad_rule_is_32602_with_the_path_and_nothing_is_kept(suite: Suite) -> None:
    response = await suite.request("addRules", {"rules": [
        {"match": {}, "action": {"type": "pass"}}, {"match": {"action": "ATACH"}, "action": {"type": "drop"}}]})
    assert response["error"]["code"] == -32602
    assert response["error"]["message"].startswith("Invalid params: rules[1].match.action: unknown Ably action 'ATACH'")
    assert (await suite.request("listRules", {}))["result"] == {"rules": []}


async def test_list_remove_clear(suite: Suite) -> None:
    """listRules shows each rule with matched and remaining; removeRules and clearRules say how many went."""
    ids = await add(suite, {"id": "a", "match": {}, "action": {"type": "pass"}, "times": 2},
                    {"match": {"event": "ping"}, "action": {"type": "drop"}})  # fmt: skip
    listed = (await suite.request("listRules", {}))["result"]["rules"]
    assert [(r["id"], r["matched"], r["remaining"]) for r in listed] == [("a", 0, 2), (ids[1], 0, None)]
    assert (await suite.request("removeRules", {"ids": ["a", "nope"]}))["result"] == {"removed": 1}
    assert (await suite.request("clearRules", {}))["result"] == {"removed": 1}
    response = await suite.request("waitForRule", {"id": "a"})
    assert response["error"]["code"] == -32602 and "'a'" in response["error"]["message"]


async def test_refused_connect_never_dials_upstream(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """A refuse rule fails the client's handshake with its status and body; the upstream never sees it."""
    await add(suite, {"id": "no", "match": {"event": "connect", "path": "/realtime*"},
                      "action": [{"type": "refuse", "status": 503, "body": "try later"}, {"type": "notify"}],
                      "times": 1})  # fmt: skip
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect_client(http, app_server.proxy_port, upstream.host, "/realtime?v=6")
    assert refused.value.status == 503
    matched = await note(suite, "ruleMatched")
    assert (matched["ruleId"], matched["event"], matched["path"], matched["query"]) == ("no", "connect", "/realtime",
                                                                                       {"v": "6"})  # fmt: skip
    assert upstream.accepted.empty()
    client, server = await pair(http, app_server, upstream, "/realtime?v=6")  # times: 1 — the next goes through
    await close_cleanly(client, server)


async def test_connect_answered_by_the_proxy_alone(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """[inject ERROR, close]: the client is accepted, gets the message and the close; no upstream is dialled."""
    await add(suite, {"match": {"event": "connect"}, "action": [
        {"type": "inject", "message": {"action": "ERROR", "error": {"code": 40142, "statusCode": 401}}},
        {"type": "close", "code": 4001, "reason": "token expired"}]})  # fmt: skip
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    opened = await note(suite, "interceptedConnectionOpened")
    assert json.loads((await receive(client)).data) == {"action": 9, "error": {"code": 40142, "statusCode": 401}}
    msg = await receive(client)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4001, "token expired")
    await client.send_frame(b"\x0f\xa1", WSMsgType.CLOSE)
    closed = await note(suite, "interceptedConnectionClosed")
    assert (closed["connectionID"], closed["closedBy"], closed["code"]) == (opened["connectionID"], "proxy", 4001)
    assert upstream.accepted.empty()


async def test_connect_delay_and_route(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite, no_leaks: None
) -> None:
    """A connect delay holds the handshake; route dials another upstream with the same path and query."""
    other = UpstreamServer()
    await other.start()
    try:
        await add(suite, {"match": {"event": "connect"}, "action": {"type": "delay", "ms": 300}, "times": 1},
                  {"match": {"event": "connect"}, "action": {"type": "route", "host": other.host, "proto": "ws"}})
        loop = asyncio.get_running_loop()
        started = loop.time()
        client, server = await pair(http, app_server, upstream)
        assert loop.time() - started >= 0.3
        await close_cleanly(client, server)
        client = await connect_client(http, app_server.proxy_port, upstream.host, "/elsewhere?x=1")
        request, server = await other.next()
        assert request.raw_path == "/elsewhere?x=1" and upstream.accepted.empty()
        await close_cleanly(client, server)
    finally:
        await other.stop()


async def test_drop_once_waited_for(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """A rule that drops the first ATTACHED: waitForRule returns once it matched; the second ATTACHED arrives."""
    [rule_id] = await add(suite, {"match": {"action": "ATTACHED", "fromClient": False}, "action": {"type": "drop"},
                                  "times": 1})  # fmt: skip
    client, server = await pair(http, app_server, upstream)
    waiting = asyncio.ensure_future(suite.request("waitForRule", {"id": rule_id, "count": 1, "timeoutMs": 5000}))
    await server.send_str('{"action":11,"channel":"a","n":1}')
    await server.send_str('{"action":11,"channel":"a","n":2}')
    assert json.loads((await receive(client)).data)["n"] == 2
    assert (await waiting)["result"]["matched"] >= 1  # both frames may have matched before the wait began
    timeout = await suite.request("waitForRule", {"id": rule_id, "count": 3, "timeoutMs": 100})
    assert timeout["error"] == {"code": -32005, "message": f"rule '{rule_id}' matched 2 of 3 in 100 ms"}
    # the first was the rule's to drop; the second, with the rule spent, went to the suite as usual
    assert [json.loads(r["data"])["n"] for r in suite.transform_requests] == [2]
    await close_cleanly(client, server)


async def test_what_no_rule_decides_goes_to_the_suite(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """Frames no rule decides are asked of the suite; a transform rule asks it with its ruleId; pass ends the dialogue."""
    await add(suite, {"id": "t", "match": {"action": "MESSAGE"}, "action": {"type": "transform"}},
              {"id": "obs", "match": {"action": "HEARTBEAT"}, "action": {"type": "observe"}})  # fmt: skip
    client, server = await pair(http, app_server, upstream)
    for data in ('{"action":15}', '{"action":0}', '{"action":1}'):
        await server.send_str(data)
    assert len(await receive_data(client, 3)) == 3
    assert [(r.get("ruleId"), json.loads(r["data"])["action"]) for r in suite.transform_requests] == [
        ("t", 15), (None, 0), (None, 1)]  # fmt: skip
    observed = await note(suite, "ruleMatched")
    assert (observed["ruleId"], observed["type"], observed["data"], observed["fromClient"]) == (
        "obs", "text", '{"action":0}', False)  # fmt: skip
    await add(suite, {"match": {}, "action": {"type": "pass"}})
    await server.send_str('{"action":1}')
    await receive_data(client, 1)
    assert len(suite.transform_requests) == 3  # the catch-all pass: not asked any more
    await close_cleanly(client, server)


async def test_replace_patch_and_inject_in_msgpack(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """On a msgpack connection, replace's message, patch's result and injections are msgpack binary frames."""
    await add(suite,
              {"match": {"action": "ACK"}, "action": [
                  {"type": "replace", "message": {"action": "NACK", "msgSerial": 0, "error": {"code": 50000}}},
                  {"type": "inject", "message": {"action": "HEARTBEAT"}}]},
              {"match": {"action": "CONNECTED"}, "action": {"type": "patch", "set": {"connectionKey": "patched"}}},
              {"match": {}, "action": {"type": "pass"}})  # fmt: skip
    client, server = await pair(http, app_server, upstream, "/?format=msgpack")
    await server.send_bytes(msgpack.packb({"action": 4, "connectionKey": "real"}))
    await server.send_bytes(msgpack.packb({"action": 1, "msgSerial": 0}))
    frames = [await receive(client) for _ in range(3)]
    assert all(f.type is WSMsgType.BINARY for f in frames)
    assert [msgpack.unpackb(f.data) for f in frames] == [
        {"action": 4, "connectionKey": "patched"}, {"action": 2, "msgSerial": 0, "error": {"code": 50000}},
        {"action": 0}]  # fmt: skip
    await close_cleanly(client, server)


async def test_delay_holds_the_direction_in_order(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """A delayed ACK arrives late, and the frames behind it wait behind it: order holds."""
    await add(suite, {"match": {"action": "ACK"}, "action": {"type": "delay", "ms": 300}},
              {"match": {}, "action": {"type": "pass"}})  # fmt: skip
    client, server = await pair(http, app_server, upstream)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.send_str('{"action":1}')
    await server.send_str('{"action":15}')
    assert [json.loads(d)["action"] for d in await receive_data(client, 2)] == [1, 15]
    assert loop.time() - started >= 0.3
    await close_cleanly(client, server)


async def test_close_after_the_frames_queued_for_that_leg(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """A close effect on the client leg goes out after the matched frame; the client's answer reaches the upstream."""
    await add(suite, {"match": {"action": "DISCONNECTED"}, "action": {"type": "close", "side": "client", "code": 4002}},
              {"match": {}, "action": {"type": "pass"}})  # fmt: skip
    client, server = await pair(http, app_server, upstream)
    await server.send_str('{"action":6}')
    assert json.loads((await receive(client)).data) == {"action": 6}
    msg = await receive(client)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, 4002)
    await client.send_frame(b"\x0f\xa2", WSMsgType.CLOSE)
    assert (await receive(server)).data == 4002
    await server.send_frame(b"\x0f\xa2", WSMsgType.CLOSE)
    closed = await note(suite, "interceptedConnectionClosed")
    assert (closed["closedBy"], closed["code"]) == ("proxy", 4002)


async def test_timer_drops_the_connection(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """A timer rule fires afterMs after the connection opened: an abrupt close reaches both peers as a drop."""
    await add(suite, {"match": {"event": "timer", "afterMs": 200}, "action": [{"type": "close", "abrupt": True},
                                                                              {"type": "notify"}]})  # fmt: skip
    client, server = await pair(http, app_server, upstream)
    assert (await receive(client, timeout=5)).type in (WSMsgType.CLOSED, WSMsgType.ERROR)
    assert (await receive(server, timeout=5)).type in (WSMsgType.CLOSED, WSMsgType.ERROR)
    assert (await note(suite, "ruleMatched"))["event"] == "timer"
    closed = await note(suite, "interceptedConnectionClosed")
    assert (closed["closedBy"], closed["clean"]) == ("proxy", False)


async def test_ping_rules_silence_and_send_ping(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """Server pings dropped by a rule never reach the client; sendPing's pong stops at the proxy; silence
    then drops every frame, ping and pong both ways, and closes nothing."""
    await add(suite, {"match": {"event": "ping", "fromClient": False}, "action": {"type": "drop"}},
              {"id": "pong", "match": {"event": "pong"}, "action": {"type": "observe"}},
              {"match": {"action": "DETACH"}, "action": [{"type": "pass"}, {"type": "silence"}]},
              {"match": {}, "action": {"type": "pass"}})  # fmt: skip
    client, server = await pair(http, app_server, upstream)
    opened = await note(suite, "interceptedConnectionOpened")
    await server.ping(b"alive?")
    with pytest.raises(TimeoutError):
        await receive(client, timeout=0.3)
    assert (await suite.request("sendPing", {"connectionID": opened["connectionID"], "side": "client",
                                             "data": "suite"}))["result"] == {}  # fmt: skip
    ping = await receive(client)
    assert (ping.type, ping.data) == (WSMsgType.PING, b"suite")
    await client.pong(b"suite")
    assert (await note(suite, "ruleMatched"))["ruleId"] == "pong"
    with pytest.raises(TimeoutError):
        await receive(server, timeout=0.3)  # the pong to the suite's own ping is not relayed
    await client.send_str('{"action":12}')  # DETACH: from here on, silence
    assert json.loads((await receive(server)).data) == {"action": 12}
    await client.send_str('{"action":15}')
    await server.send_str('{"action":15}')
    await client.ping(b"x")
    for peer in (client, server):
        with pytest.raises(TimeoutError):
            await receive(peer, timeout=0.3)
    await close_cleanly(client, server)


async def test_inject_before_a_close_is_passed_on(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """A close rule's inject reaches the other peer before the close does."""
    await add(suite, {"match": {"event": "close", "fromClient": False},
                      "action": {"type": "inject", "message": {"action": "DISCONNECTED"}, "fromClient": False}},
              {"match": {}, "action": {"type": "pass"}})  # fmt: skip
    client, server = await pair(http, app_server, upstream)
    await server.send_frame(b"\x03\xe8", WSMsgType.CLOSE)
    assert json.loads((await receive(client)).data) == {"action": 6}
    assert (await receive(client)).type is WSMsgType.CLOSE
    await client.send_frame(b"\x03\xe8", WSMsgType.CLOSE)


async def test_rules_vanish_with_their_suite(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """When the suite's control connection closes, its rules go: traffic passes unchanged; the next suite starts clean."""
    async with suite_connection(http, app_server.control_port) as first:
        await first.request("startInterception", {"mode": "proxy"})
        await add(first, {"match": {}, "action": {"type": "drop"}})
    client, server = await pair(http, app_server, upstream)
    await server.send_str("passes")
    assert await receive_data(client, 1) == ["passes"]
    async with suite_connection(http, app_server.control_port) as second:
        await second.request("startInterception", {"mode": "proxy"})
        assert (await second.request("listRules", {}))["result"] == {"rules": []}
    await close_cleanly(client, server)


async def test_decoded_dialogue(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """decoded: true puts the message in transforms and ruleMatched; a replace answer and injectMessage may
    give a message object, which the proxy encodes in the connection's format (msgpack here)."""
    async with suite_connection(http, app_server.control_port) as suite:
        assert (await suite.request("startInterception", {"mode": "proxy", "decoded": True}))["result"] == {}

        async def answer(params: dict[str, Any]) -> Any:
            return {"action": "replace", "message": {**params["message"], "channel": "renamed"}}

        suite.on_transform = answer
        await add(suite, {"match": {"action": "ATTACHED"}, "action": {"type": "observe"}})
        client, server = await pair(http, app_server, upstream, "/?format=msgpack")
        opened = await note(suite, "interceptedConnectionOpened")
        await server.send_bytes(msgpack.packb({"action": 11, "channel": "a", "data": b"\x00\x01"}))
        assert msgpack.unpackb((await receive(client)).data) == {"action": 11, "channel": "renamed",
                                                                  "data": "AAE="}  # fmt: skip
        assert suite.transform_requests[0]["message"] == {"action": 11, "channel": "a", "data": "AAE="}
        assert (await note(suite, "ruleMatched"))["message"]["channel"] == "a"
        response = await suite.request("injectMessage", {"connectionID": opened["connectionID"], "fromClient": False,
                                                         "message": {"action": "HEARTBEAT"}})  # fmt: skip
        assert "id" in response["result"]
        injected = await receive(client)
        assert injected.type is WSMsgType.BINARY and msgpack.unpackb(injected.data) == {"action": 0}
        await close_cleanly(client, server)


async def test_a_failing_rule_passes_the_frame_and_logs_it(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A rule action that fails on a frame (here: a number msgpack cannot hold) passes it unchanged, with an
    ERROR naming the rule; the connection goes on."""
    await add(suite, {"id": "huge", "match": {}, "action": {"type": "patch", "set": {"n": 2**70}}})
    client, server = await pair(http, app_server, upstream, "/?format=msgpack")
    original = msgpack.packb({"action": 15})
    await server.send_bytes(original)
    assert await receive_data(client, 1) == [original]
    assert any(r.levelno == logging.ERROR and "'huge'" in r.getMessage() for r in caplog.records)
    await close_cleanly(client, server)


async def test_raw_replace_is_sent_as_given(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    await add(suite, {"match": {"fromClient": True}, "action": {"type": "replace", "raw": {
        "type": "binary", "data": base64.b64encode(b"\x00raw").decode()}}})  # fmt: skip
    client, server = await pair(http, app_server, upstream)
    await client.send_str("anything")
    assert await receive_data(server, 1) == [b"\x00raw"]
    await close_cleanly(client, server)


async def test_redirected_headers_are_matched(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """host is the host the client meant (Ably-Test-Host); headers match case-insensitively."""
    await add(suite, {"match": {"event": "connect", "host": upstream.host, "headers": {"x-sdk": "ably-js"}},
                      "action": {"type": "refuse", "status": 429}})  # fmt: skip
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"http://127.0.0.1:{app_server.proxy_port}/",
                              headers={**redirect_headers(upstream.host), "X-SDK": "ably-js"})  # fmt: skip
    assert refused.value.status == 429


async def test_a_client_that_gives_up_during_a_connect_delay_is_never_dialled(
    app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """A handshake held by a connect delay, abandoned by its client: the upstream is never dialled."""
    await add(suite, {"match": {"event": "connect"}, "action": {"type": "delay", "ms": 600}})
    reader, writer = await asyncio.open_connection("127.0.0.1", app_server.proxy_port)
    request = [f"GET / HTTP/1.1", f"Host: {upstream.host}", "Upgrade: websocket", "Connection: Upgrade",
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
               *(f"{k}: {v}" for k, v in redirect_headers(upstream.host).items())]  # fmt: skip
    writer.write(("\r\n".join(request) + "\r\n\r\n").encode())
    await asyncio.sleep(0.1)
    writer.close()  # the client gives up
    await writer.wait_closed()
    await asyncio.sleep(0.9)
    assert upstream.accepted.empty()
