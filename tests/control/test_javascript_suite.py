"""docs/api.md's JavaScript test suite (tests/js/api_example.mjs, word for word) run for real in Node,
with the `ws` and `@msgpack/msgpack` packages, against an app server in direct mode."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import msgpack
import pytest
from aiohttp import WSMsgType

from appserver.app import AppServer
from tests.ably_driver import CommandError
from tests.peers import UpstreamServer, close_cleanly, connect_client, receive
from tests.sdk_fixtures import binary, direct, fake, sdk_via_proxy  # noqa: F401 - fixtures are found by name

EXAMPLE = Path(__file__).parents[1] / "js" / "api_example.mjs"


@pytest.fixture
async def js_suite(app_server: AppServer) -> AsyncIterator[asyncio.subprocess.Process]:
    """The example, connected and the active suite."""
    node = shutil.which("node")
    assert node is not None, "Node.js is needed for this test"
    proc = await asyncio.create_subprocess_exec(
        node, str(EXAMPLE), cwd=EXAMPLE.parent, stdout=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "CONTROL_URL": f"ws://127.0.0.1:{app_server.control_port}/"},
    )  # fmt: skip
    try:
        assert await next_line(proc) == {"ready": True}
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def next_line(proc: asyncio.subprocess.Process, timeout: float = 15) -> Any:
    assert proc.stdout is not None
    return json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout))


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_javascript_example_drops_acks_and_injects_in_the_connections_format(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer,
    js_suite: asyncio.subprocess.Process, fmt: str,
) -> None:  # fmt: skip
    """The docs' JavaScript suite injects its greeting in the connection's format and drops the server's ACKs."""
    binary = fmt == "msgpack"
    encode = msgpack.packb if binary else json.dumps
    decode = msgpack.unpackb if binary else json.loads
    client = await connect_client(http, app_server.proxy_port, upstream.host, f"/?v=6&format={fmt}")
    _, server = await upstream.next()
    assert await next_line(js_suite) == {"opened": f"ws://{upstream.host}/?v=6&format={fmt}"}
    greeting = await receive(client)
    assert greeting.type is (WSMsgType.BINARY if binary else WSMsgType.TEXT)
    assert decode(greeting.data) == {"action": 0, "channel": "from-the-suite"}
    for message in ({"action": 1, "msgSerial": 0}, {"action": 15, "channel": "room"}):
        frame = encode(message)
        await (server.send_bytes(frame) if binary else server.send_str(frame))
    assert decode((await receive(client)).data) == {"action": 15, "channel": "room"}  # the ACK was dropped
    await close_cleanly(client, server)


def test_api_md_shows_the_example() -> None:
    """docs/api.md's JavaScript client is tests/js/api_example.mjs, word for word."""
    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    assert EXAMPLE.read_text() in docs, "docs/api.md's JavaScript example differs from tests/js/api_example.mjs"


RULES_EXAMPLE = Path(__file__).parents[1] / "js" / "rules_example.mjs"


async def test_javascript_rules_example_drives_ably_js(direct: AppServer, binary: bool) -> None:  # noqa: F811
    """docs/api.md's rules example, run in Node against real ably-js: its first connect is refused (the SDK
    retries), its first ATTACHED dropped (it re-attaches), its publish NACKed; the suite sees each rule match."""
    node = shutil.which("node")
    assert node is not None, "Node.js is needed for this test"
    proc = await asyncio.create_subprocess_exec(
        node, str(RULES_EXAMPLE), cwd=RULES_EXAMPLE.parent, stdout=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "CONTROL_URL": f"ws://127.0.0.1:{direct.control_port}/"},
    )  # fmt: skip
    try:
        assert await next_line(proc) == {"ready": ["refuse", "no-attached", "nack", "r1"]}
        async with sdk_via_proxy(direct, binary) as sdk:
            await sdk.wait_for_state("disconnected")  # the refused connect
            await sdk.wait_for_state("connected")
            assert await next_line(proc) == {"matched": "refuse", "event": "connect"}
            with contextlib.suppress(CommandError):
                await sdk.command("attach", channel="room", timeout=20)  # may time out before the retry
            await sdk.next_event("channelState", lambda e: e["current"] == "attached", timeout=15)
            assert (await next_line(proc, 25))["attachedDropped"] >= 1
            listed = dict((rule_id, (matched, remaining)) for rule_id, matched, remaining in
                          (await next_line(proc))["listed"])  # fmt: skip
            assert listed["refuse"][1] == 0 and listed["no-attached"][1] == 0
            with pytest.raises(CommandError) as nacked:
                await sdk.command("publish", channel="room", name="n", data="d")
            assert nacked.value.error["code"] == 50001
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


def test_api_md_shows_the_rules_example() -> None:
    """docs/api.md's JavaScript rules example is tests/js/rules_example.mjs, word for word."""
    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    assert RULES_EXAMPLE.read_text() in docs, "docs/api.md's rules example differs from tests/js/rules_example.mjs"


SESSIONS_EXAMPLE = Path(__file__).parents[1] / "js" / "sessions_example.mjs"


async def test_javascript_sessions_example(http: aiohttp.ClientSession, app_server: AppServer,
                                           upstream: UpstreamServer) -> None:  # fmt: skip
    """docs/api.md's sessions example, run in Node: it opens a direct-mode session, sees only the connection
    made to its port, and closes the session, after which the port refuses connections."""
    node = shutil.which("node")
    assert node is not None, "Node.js is needed for this test"
    proc = await asyncio.create_subprocess_exec(
        node, str(SESSIONS_EXAMPLE), cwd=SESSIONS_EXAMPLE.parent, stdout=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "CONTROL_URL": f"ws://127.0.0.1:{app_server.control_port}/",
             "UPSTREAM": f"ws://{upstream.host}/"},
    )  # fmt: skip
    try:
        opened = await next_line(proc)
        bystander = await connect_client(http, app_server.proxy_port, upstream.host, "/not-the-session")
        _, bystander_server = await upstream.next()
        client = await http.ws_connect(f"http://127.0.0.1:{opened['proxyPort']}/test-1", autoclose=False)
        _, server = await upstream.next()
        await close_cleanly(client, server)
        assert await next_line(proc) == {"events": [["interceptedConnectionOpened", "/test-1"],
                                                    ["interceptedConnectionClosed", "client"]]}  # fmt: skip
        assert await next_line(proc) == {"closed": opened["sessionID"]}
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.ws_connect(f"http://127.0.0.1:{opened['proxyPort']}/test-2")
        await close_cleanly(bystander, bystander_server)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


def test_api_md_shows_the_sessions_example() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    assert SESSIONS_EXAMPLE.read_text() in docs, "docs/api.md's sessions example differs from tests/js/sessions_example.mjs"
