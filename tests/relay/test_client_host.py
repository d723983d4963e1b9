"""SPEC Part 9, the host a client asked for: in direct mode and on a session's port, rules, events and the
trace see the client's Host and path (``localhost:PORT``), and the upstream beside it as ``upstream`` —
never the upstream in place of the client's host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from appserver.app import AppServer
from tests.conftest import make_config, running_app_server
from tests.peers import Suite, UpstreamServer, close_cleanly, suite_connection


@pytest.fixture
async def direct_to_upstream(no_leaks: None, upstream: UpstreamServer) -> AsyncIterator[AppServer]:
    async with running_app_server(make_config(default_upstream=URL(f"ws://{upstream.host}/"))) as server:
        yield server


async def note(suite: Suite, method: str, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            item = await suite.notifications.get()
            if item["method"] == method:
                return item["params"]  # type: ignore[no-any-return]


async def result(suite: Suite, method: str, params: dict[str, Any]) -> Any:
    response = await suite.request(method, params)
    assert "result" in response, response
    return response["result"]


RULES = [
    {"id": "meant", "match": {"event": "connect", "host": "localhost:*"}, "action": {"type": "notify"}},
    {"id": "upstream", "match": {"event": "connect", "host": "127.0.0.1:*"}, "action": {"type": "notify"}},
    {"id": "http", "match": {"event": "http", "host": "localhost:*"}, "action": {"type": "notify"}},
]


async def check_host_seen(http: aiohttp.ClientSession, suite: Suite, port: int, upstream: UpstreamServer) -> None:
    await result(suite, "addRules", {"rules": RULES})
    client = await http.ws_connect(f"ws://localhost:{port}/realtime?v=6", autoclose=False, autoping=False)
    _, server = await upstream.next()
    matched = await note(suite, "ruleMatched")  # the connect rule's, before the connection opened
    assert matched["ruleId"] == "meant"
    opened = await note(suite, "interceptedConnectionOpened")
    assert opened["url"] == f"ws://localhost:{port}/realtime?v=6"
    assert opened["host"] == f"localhost:{port}"
    assert opened["upstream"] == f"ws://{upstream.host}/realtime?v=6"
    assert opened["query"] == {"v": "6"}
    await close_cleanly(client, server)
    async with http.get(f"http://localhost:{port}/time") as response:
        await response.read()
    assert (await note(suite, "ruleMatched"))["ruleId"] == "http"
    rules = {rule["id"]: rule["matched"] for rule in (await result(suite, "listRules", {}))["rules"]}
    assert rules == {"meant": 1, "upstream": 0, "http": 1}
    events = (await result(suite, "getTrace", {}))["events"]
    [open_event] = [e for e in events if e["kind"] == "open"]
    assert open_event["url"] == f"ws://localhost:{port}/realtime?v=6"
    assert open_event["upstream"] == f"ws://{upstream.host}/realtime?v=6"
    [request] = [e for e in events if e["kind"] == "http_request"]
    assert request["url"] == f"http://localhost:{port}/time" and request["host"] == f"localhost:{port}"


async def test_direct_mode_reports_the_clients_host_and_the_upstream_beside_it(
    http: aiohttp.ClientSession, direct_to_upstream: AppServer, upstream: UpstreamServer,
) -> None:  # fmt: skip
    async with suite_connection(http, direct_to_upstream.control_port) as suite:
        assert "result" in await suite.request("startInterception", {"mode": "proxy"})
        await check_host_seen(http, suite, direct_to_upstream.proxy_port, upstream)


async def test_a_sessions_port_reports_the_clients_host_and_the_upstream_beside_it(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer,
) -> None:  # fmt: skip
    async with suite_connection(http, app_server.control_port) as suite:
        session = await result(suite, "openSession", {"mode": "direct", "upstream": f"ws://{upstream.host}/"})
        await check_host_seen(http, suite, session["proxyPort"], upstream)
