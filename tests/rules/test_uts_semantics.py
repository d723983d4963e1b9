"""The two actions uts-proxy's semantics need (SPEC Part 8), in our own rule language: ``inject`` with
``before: true`` reaches the client ahead of the frame that triggered it, and ``suppressOnwards`` drops every
later frame and ping of one direction, on every connection of the suite open when it fires."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from appserver.app import AppServer
from shared import rules
from tests.peers import Suite, UpstreamServer, close_cleanly, connect_client, receive_data


async def test_an_inject_before_arrives_ahead_of_its_trigger_and_after_without_it(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
) -> None:  # fmt: skip
    before = rules.rule([{"type": "pass"}, rules.inject_action({"action": 9, "id": "ahead"}, before=True)],
                        action="CONNECTED", from_client=False)  # fmt: skip
    after = rules.rule([{"type": "pass"}, rules.inject_action({"action": 9, "id": "behind"})], action="ATTACHED",
                       from_client=False)  # fmt: skip
    assert "result" in await suite.request("addRules", {"rules": [before.to_json(), after.to_json()]})
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    await server.send_str(json.dumps({"action": 4, "id": "trigger"}))
    await server.send_str(json.dumps({"action": 11, "id": "trigger2"}))
    got = [json.loads(d)["id"] for d in await receive_data(client, 4)]
    assert got == ["ahead", "trigger", "trigger2", "behind"]
    await close_cleanly(client, server)


@pytest.mark.parametrize("from_client", [False, True])
async def test_suppress_onwards_quiets_one_direction_of_the_open_connections(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite, from_client: bool,
) -> None:  # fmt: skip
    rule = rules.suppress_onwards(action="DETACH" if from_client else "DETACHED", from_client=from_client, times=1)
    assert "result" in await suite.request("addRules", {"rules": [rule.to_json()]})
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    bystander = await connect_client(http, app_server.proxy_port, upstream.host)  # open when it fires: quieted
    _, bystander_server = await upstream.next()
    source, dest = (client, server) if from_client else (server, client)
    other_source, other_dest = (server, client) if from_client else (client, server)
    trigger = {"action": 12 if from_client else 13, "channel": "x"}
    for message in ({"action": 15, "id": "first"}, trigger, {"action": 15, "id": "later"}):
        await source.send_str(json.dumps(message))
    await other_source.send_str(json.dumps({"action": 0, "id": "other way"}))
    assert [json.loads(d)["id"] for d in await receive_data(other_dest, 1)] == ["other way"]  # untouched
    assert [json.loads(d)["id"] for d in await receive_data(dest, 1)] == ["first"]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(dest.receive(), 0.3)  # the trigger and what followed: dropped
    await source.ping(b"starved")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(dest.receive(), 0.3)  # pings too
    b_source, b_dest = (bystander, bystander_server) if from_client else (bystander_server, bystander)
    await b_source.send_str(json.dumps({"action": 15, "id": "bystander"}))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(b_dest.receive(), 0.3)
    # a connection opened afterwards starts clean
    client2 = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server2 = await upstream.next()
    source2, dest2 = (client2, server2) if from_client else (server2, client2)
    await source2.send_str(json.dumps({"action": 15, "id": "new connection"}))
    assert [json.loads(d)["id"] for d in await receive_data(dest2, 1)] == ["new connection"]
    trace = (await suite.request("getTrace", {}))["result"]["events"]
    dropped = [e for e in trace if e["kind"] == "frame" and e.get("by") == "suppressed"]
    assert len(dropped) == 2, dropped  # "later" and "bystander"; the trigger was the rule's
    for pair in ((client, server), (bystander, bystander_server), (client2, server2)):
        await close_cleanly(*pair)


async def test_suppression_ends_with_the_suite(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
) -> None:  # fmt: skip
    rule = rules.suppress_onwards(action="MESSAGE", from_client=False)
    added = await suite.request("addRules", {"rules": [rule.to_json()]})
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    await server.send_str(json.dumps({"action": 15, "id": "dropped"}))
    await suite.request("waitForRule", {"id": added["result"]["ids"][0], "count": 1})
    await suite.close()
    await asyncio.sleep(0.1)
    await server.send_str(json.dumps({"action": 15, "id": "through"}))
    assert [json.loads(d)["id"] for d in await receive_data(client, 1)] == ["through"]
    await close_cleanly(client, server)
