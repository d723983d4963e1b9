"""How many of the product's files one message walks through (issue 23): a real app server, a real upstream and
client on loopback, the walk recorded by tests/structure/rooms.py while one message goes from leg to leg."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

from appserver.app import AppServer
from tests.mitm_helpers import run_app
from tests.peers import Suite, UpstreamServer, connect_client, receive, redirect_headers
from tests.structure.rooms import Walk

MESSAGE = json.dumps({"action": 15, "channel": "a", "messages": [{"data": "x"}]})
#: The cork (relay/pump.py) takes a frame's bytes from aiohttp's writer and writes whatever the loop's turn wrote
#: in one send at its end: visits of their own, which the reader's delivery of a frame (Lane.offer) makes.
CORK = ("CorkedTransport.write", "CorkedTransport.flush")
#: The control connection's cork (shared/cork.py's TurnCork, which the Python client puts under its socket too): the
#: request to the suite leaves through it, and its turn's end looks for what followed it.
CONTROL_CORK = ("TurnCork.write", "TurnCork._turn_ended")


async def walk_one(http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer) -> Walk:
    client = await connect_client(http, app_server.proxy_port, upstream.host, "/?format=json")
    _, server = await upstream.next()
    try:
        for _ in range(3):  # warm: imports, first-use caches
            await client.send_str(MESSAGE)
            assert (await receive(server)).data == MESSAGE
        await asyncio.sleep(0.05)
        with Walk() as walk:
            await client.send_str(MESSAGE)
            arrived = await receive(server)
        assert arrived.data == MESSAGE
        return walk
    finally:
        await client.close()
        await server.close()


async def test_a_message_decided_by_a_rule_walks_through_at_most_seven_files_none_twice(
    suite: Suite, http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """The rule looks into the message (its Ably action), so the walk includes decoding it."""
    response = await suite.request("addRules", {"rules": [{"match": {"action": "MESSAGE"}, "action": {"type": "pass"}}]})
    assert "result" in response, response
    walk = await walk_one(http, app_server, upstream)
    assert "appserver/rules/engine.py" in walk.files, walk.visits  # the rule was evaluated
    assert len(walk.files) <= 7, walk.files
    assert all(count == 1 for count in walk.entered(besides=CORK).values()), walk.calls
    assert [function for f, function in walk.calls if f == "appserver/relay/pump.py"] == list(CORK), walk.calls


async def test_a_message_through_the_suite_walks_nine_files_each_once_each_way(
    suite: Suite, http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """Out to the suite and back: the frame's bytes read below aiohttp (relay/frames.py), the chain asked by its
    lane (relay/leg.py), the call handed to the pump; the answer comes in on the control socket's reader, resolves
    the call's future, and resumes the pump where it asked; no file is entered more than once out and once back
    (shared/cork.py, the request's write and its turn's end, aside)."""
    async def pass_it(params: dict[str, Any]) -> dict[str, Any]:
        return {"action": "replace", "type": params["type"], "data": params["data"]}

    suite.on_transform = pass_it
    walk = await walk_one(http, app_server, upstream)
    assert "appserver/control/suite.py" in walk.files, walk.visits
    assert "appserver/rules/verdicts.py" not in walk.files, walk.visits  # no rules: they are not asked
    assert walk.files[:2] == ["appserver/relay/frames.py", "appserver/relay/leg.py"], walk.files
    assert len(walk.files) <= 9 and "shared/cork.py" in walk.files, walk.files
    assert all(count <= 2 for count in walk.entered(besides=CONTROL_CORK).values()), walk.visits
    assert {function for _, function in walk.calls if function.startswith("TurnCork")} == set(CONTROL_CORK)


async def test_a_message_no_one_has_a_say_on_asks_no_decider(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """No suite and no rules: the chain is empty, and the frame goes on as the bytes it came in, below aiohttp (the
    pump waits with nothing to do: the leg's watch finds the frame, its lane forwards it), the trace told on the
    way, the bytes written through the cork."""
    walk = await walk_one(http, app_server, upstream)
    assert not any(f.startswith(("appserver/rules/", "appserver/control/")) for f in walk.files), walk.visits
    assert [function for _, function in walk.calls] == ["Watch.feed", "Lane.forward", "Tracer.frame", *CORK], \
        walk.calls


async def walk_a_get(http: aiohttp.ClientSession, app_server: AppServer) -> Walk:
    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", plain)
    async with run_app(app) as port:
        url = f"http://127.0.0.1:{app_server.proxy_port}/channels/a"
        stamps = redirect_headers(f"127.0.0.1:{port}", "http")
        for _ in range(3):  # warm
            async with http.get(url, headers=stamps) as response:
                assert await response.text() == "ok"
        with Walk() as walk:
            async with http.get(url, headers=stamps) as response:
                assert await response.text() == "ok"
    return walk


async def test_a_plain_http_request_a_rule_may_change_walks_through_one_forwarder(
    suite: Suite, http: aiohttp.ClientSession, app_server: AppServer, no_leaks: None
) -> None:
    """Before, forward, after in relay/http.py, entered once on the way out and once when the response comes
    back; the whole walk (endpoint, header rules, the rules' gate and its evaluation, the trace) in at most 9
    files, none entered more than once each way (the header rules once for the request, once for the
    response)."""
    response = await suite.request("addRules", {"rules": [
        {"match": {"event": "http", "path": "/elsewhere"}, "action": {"type": "respond", "status": 404}}]})
    assert "result" in response, response
    walk = await walk_a_get(http, app_server)
    assert "appserver/rules/hooks.py" in walk.files and "appserver/trace/record.py" in walk.files, walk.visits
    assert [f for f in walk.files if f.startswith("appserver/relay/http")] == ["appserver/relay/http.py"]
    assert "appserver/relay/pool.py" not in walk.files, walk.visits  # aiohttp's client, not the pool
    assert all(count <= 2 for count in walk.entered().values()), walk.visits
    assert len(walk.files) <= 9, walk.files  # 7, and the rule's evaluation (rules/verdicts.py, rules/engine.py)


async def test_a_plain_http_request_no_rule_may_change_is_relayed_below_aiohttp(
    suite: Suite, http: aiohttp.ClientSession, app_server: AppServer, no_leaks: None
) -> None:
    """No rules: relay/front.py reads the request off the socket and writes the response, its upstream
    connection (relay/pool.py) parses the answer; relay/http.py is not entered. Eight files: the front, the
    endpoint's plan, the session lookup, the rules' gate asked only whether it is quiet, the header rules once,
    the exchange's id, the trace (asked whether it records, then told of the request and the answer), the pool (the request sent, the answer read); the
    front is entered for the request and by the pool for the answer's head, body and end."""
    walk = await walk_a_get(http, app_server)
    assert walk.files[0] == "appserver/relay/front.py", walk.files
    assert "appserver/relay/http.py" not in walk.files and "appserver/relay/pool.py" in walk.files, walk.visits
    assert [function for f, function in walk.calls if f == "appserver/relay/front.py"] == [
        "Front.data_received", "Exchange.head", "Exchange.body", "Exchange.done"], walk.calls
    assert [function for f, function in walk.calls if f == "appserver/rules/hooks.py"] == ["RuleHooks.quiet"]
    assert [function for f, function in walk.calls if f == "appserver/trace/record.py"] == [
        "Tracer.records_http", "Tracer.seen", "Tracer.seen"], walk.calls
    assert all(count <= 2 for f, count in walk.entered().items()
               if f not in ("appserver/relay/front.py", "appserver/trace/record.py")), walk.calls
    assert len(walk.files) <= 8, walk.files
