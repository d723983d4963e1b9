"""SPEC Part 9, flags: ``patch`` sets and clears bits of an integer field by Ably flag name or value and keeps
the others (the seed's "set ATTACH_RESUME on the outgoing ATTACH"), in JSON and msgpack alike."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import msgpack
import pytest

from appserver.app import AppServer
from shared import rules
from shared.ably import Flag
from tests.peers import Suite, UpstreamServer, close_cleanly, connect_client, receive_data


async def add(suite: Suite, *given: dict[str, Any]) -> dict[str, Any]:
    return await suite.request("addRules", {"rules": list(given)})


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_patch_sets_and_clears_flags_keeping_the_others(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite, fmt: str,
) -> None:  # fmt: skip
    rule = rules.patch(flags={"set": ["ATTACH_RESUME", 1 << 1], "clear": ["subscribe"]}, from_client=True,
                       action="ATTACH")  # fmt: skip
    assert "result" in await add(suite, rule.to_json())
    client = await connect_client(http, app_server.proxy_port, upstream.host, f"/?format={fmt}")
    _, server = await upstream.next()
    attach = {"action": 10, "channel": "room", "flags": int(Flag.PRESENCE | Flag.SUBSCRIBE)}
    no_flags = {"action": 10, "channel": "other"}
    for message in (attach, no_flags):
        await (client.send_bytes(msgpack.packb(message)) if fmt == "msgpack" else client.send_str(json.dumps(message)))
    got = [msgpack.unpackb(d) if fmt == "msgpack" else json.loads(d) for d in await receive_data(server, 2)]
    assert got[0] == {**attach, "flags": int(Flag.PRESENCE | Flag.ATTACH_RESUME | Flag.HAS_BACKLOG)}
    assert got[1] == {**no_flags, "flags": int(Flag.ATTACH_RESUME | Flag.HAS_BACKLOG)}
    await close_cleanly(client, server)


@pytest.mark.parametrize(("flags", "path"), [
    ({"set": ["ATACH_RESUME"]}, "rules[0].action.flags.set[0]: unknown Ably flag 'ATACH_RESUME'"),
    ({"clear": ["PRESENCE", -1]}, "rules[0].action.flags.clear[1]: a flag value must be 0 or more"),
])  # fmt: skip
async def test_an_unknown_flag_is_named(suite: Suite, flags: dict[str, Any], path: str) -> None:
    response = await add(suite, {"match": {}, "action": {"type": "patch", "flags": flags}})
    assert response["error"]["code"] == -32602 and path in response["error"]["message"], response


async def test_a_flags_patch_with_an_unknown_member_is_refused(suite: Suite) -> None:
    response = await add(suite, {"match": {}, "action": {"type": "patch", "flags": {"add": ["RESUMED"]}}})
    assert response["error"]["code"] == -32602 and "add" in response["error"]["message"], response
