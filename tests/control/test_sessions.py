"""Sessions (SPEC Part 6) in direct mode: a real app server, real upstreams and clients, suites over JSON-RPC."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType

from appserver.app import AppServer
from tests.control.test_trace import of
from tests.peers import Suite, UpstreamServer, close_cleanly, receive, redirect_headers, suite_connection
from tests.rules.test_rules_relay import add, note


@contextlib.asynccontextmanager
async def session(http: aiohttp.ClientSession, app_server: AppServer, **params: Any) -> AsyncIterator[tuple[Suite, dict[str, Any]]]:
    """A control connection that opened a session: the suite, and openSession's result."""
    async with suite_connection(http, app_server.control_port) as suite:
        response = await suite.request("openSession", params)
        assert "result" in response, response
        yield suite, response["result"]


async def direct_client(http: aiohttp.ClientSession, port: int, path: str = "/?format=json") -> aiohttp.ClientWebSocketResponse:
    """An SDK pointed at a session's port (direct mode: no stamps)."""
    return await http.ws_connect(f"http://127.0.0.1:{port}{path}", autoclose=False, autoping=False)


def refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def test_two_sessions_each_see_only_their_own(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """Two sessions at once, each with its own port, suite, rules, events and trace: neither sees the
    other's connection, and another session's connection id is -32002."""
    upstream_url = f"ws://{upstream.host}/"
    async with session(http, app_server, mode="direct", upstream=upstream_url) as (a, opened_a), \
            session(http, app_server, mode="direct", upstream=upstream_url) as (b, opened_b):  # fmt: skip
        assert opened_a["sessionID"] != opened_b["sessionID"] and opened_a["proxyPort"] != opened_b["proxyPort"]
        await add(a, {"match": {"fromClient": True}, "action": {"type": "drop"}})  # a's rule, not b's
        await add(b, {"match": {}, "action": {"type": "pass"}})
        client_a = await direct_client(http, opened_a["proxyPort"], "/a?format=json")
        _, server_a = await upstream.next()
        client_b = await direct_client(http, opened_b["proxyPort"], "/b?format=json")
        _, server_b = await upstream.next()
        seen_a, seen_b = await note(a, "interceptedConnectionOpened"), await note(b, "interceptedConnectionOpened")
        assert (seen_a["path"], seen_b["path"]) == ("/a", "/b")
        await client_a.send_str("from a")
        await client_b.send_str("from b")
        assert (await receive(server_b)).data == "from b"
        with pytest.raises(TimeoutError):
            await receive(server_a, timeout=0.3)  # dropped by a's rule
        for suite, other in ((a, seen_b), (b, seen_a)):
            response = await suite.request("injectMessage", {"connectionID": other["connectionID"], "fromClient": True,
                                                             "type": "text", "data": "x"})  # fmt: skip
            assert response["error"]["code"] == -32002
        trace_a = (await a.request("getTrace", {}))["result"]["events"]
        assert {e.get("connectionID") for e in of(trace_a, "open")} == {seen_a["connectionID"]}
        assert [f["data"] for f in of(trace_a, "frame")] == ["from a"]
        await close_cleanly(client_a, server_a)
        await close_cleanly(client_b, server_b)
        closed_a, closed_b = await note(a, "interceptedConnectionClosed"), await note(b, "interceptedConnectionClosed")
        assert (closed_a["connectionID"], closed_b["connectionID"]) == (seen_a["connectionID"], seen_b["connectionID"])
        for suite, other in ((a, seen_b), (b, seen_a)):
            while not suite.notifications.empty():
                assert suite.notifications.get_nowait()["params"].get("connectionID") != other["connectionID"]


async def test_closing_a_session_stops_its_port_and_releases_its_connections(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """closeSession: the port refuses connections once it has answered; a connection it had goes on,
    unchanged, with no dialogue, rules or events for anybody (not even the classic suite)."""
    async with session(http, app_server, mode="direct", upstream=f"ws://{upstream.host}/") as (owner, opened):
        await add(owner, {"match": {}, "action": {"type": "drop"}})
        client = await direct_client(http, opened["proxyPort"])
        _, server = await upstream.next()
        await note(owner, "interceptedConnectionOpened")
        assert (await owner.request("closeSession", {}))["result"] == {}
        assert refuses(opened["proxyPort"])
        await client.send_str("after the session")
        assert (await receive(server)).data == "after the session"  # passed through: no rule, no suite
        await server.send_str("back")
        assert (await receive(client)).data == "back"
        await close_cleanly(client, server)
        await asyncio.sleep(0.1)
        assert owner.notifications.empty() and suite.notifications.empty() and suite.transform_requests == []
        assert (await owner.request("closeSession", {}))["error"]["code"] == -32006  # none left


async def test_close_connections_ends_them_with_1001(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    async with session(http, app_server, mode="direct", upstream=f"ws://{upstream.host}/") as (owner, opened):
        client = await direct_client(http, opened["proxyPort"])
        _, server = await upstream.next()
        assert (await owner.request("closeSession", {"closeConnections": True}))["result"] == {}
        for peer in (client, server):
            message = await receive(peer)
            assert (message.type, message.data) == (WSMsgType.CLOSE, 1001)
            await peer.close()


async def test_the_control_connection_closing_ends_its_session(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    async with session(http, app_server, mode="direct", upstream=f"ws://{upstream.host}/") as (_, opened):
        pass
    async with asyncio.timeout(5):
        while not refuses(opened["proxyPort"]) or app_server.registry.sessions:
            await asyncio.sleep(0.02)


async def test_a_stamped_request_belongs_to_its_session(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """On the shared proxy endpoint (where mitmproxy sends everything), Ably-Test-Session says whose a request
    is; the stamp never reaches the upstream; a stamp of a session that has ended is nobody's."""
    async with session(http, app_server, mode="direct", upstream=f"ws://{upstream.host}/") as (owner, opened):
        stamped = {**redirect_headers(upstream.host), "Ably-Test-Session": opened["sessionID"]}
        client = await http.ws_connect(f"http://127.0.0.1:{app_server.proxy_port}/s", headers=stamped, autoclose=False)
        request, server = await upstream.next()
        assert "Ably-Test-Session" not in request.headers
        assert (await note(owner, "interceptedConnectionOpened"))["path"] == "/s"
        await close_cleanly(client, server)
    gone = {**redirect_headers(upstream.host), "Ably-Test-Session": opened["sessionID"]}
    client = await http.ws_connect(f"http://127.0.0.1:{app_server.proxy_port}/gone", headers=gone, autoclose=False)
    _, server = await upstream.next()
    await client.send_str("nobody's")
    assert (await receive(server)).data == "nobody's"
    await close_cleanly(client, server)
    assert suite.transform_requests == [] and suite.notifications.empty()  # not even the classic suite's


@pytest.mark.parametrize(("params", "code", "words"), [
    ({}, -32602, "'mode' is required"),
    ({"mode": "tunnel"}, -32602, "direct, proxy, local"),
    ({"mode": "direct"}, -32602, "needs an upstream"),
    ({"mode": "direct", "upstream": "ftp://x"}, -32602, "upstream"),
    ({"mode": "direct", "upstream": "ws://127.0.0.1:1/", "pid": 1}, -32602, "only local mode"),
    ({"mode": "local"}, -32602, "needs the pid"),
    ({"mode": "direct", "upstream": "ws://127.0.0.1:1/", "port": 70000}, -32602, "port"),
])  # fmt: skip
async def test_bad_open_session(http: aiohttp.ClientSession, app_server: AppServer, params: dict[str, Any],
                                code: int, words: str) -> None:  # fmt: skip
    async with suite_connection(http, app_server.control_port) as suite:
        response = await suite.request("openSession", params)
        assert response["error"]["code"] == code and words in response["error"]["message"], response
    assert app_server.registry.sessions == {}


async def test_a_port_that_cannot_be_opened_is_32004_and_nothing_is_left(
    http: aiohttp.ClientSession, app_server: AppServer
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with suite_connection(http, app_server.control_port) as suite:
            response = await suite.request("openSession", {"mode": "direct", "upstream": "ws://127.0.0.1:1/",
                                                           "port": port})  # fmt: skip
            assert response["error"]["code"] == -32004 and str(port) in response["error"]["message"]
            assert "result" in await suite.request("openSession", {"mode": "direct", "upstream": "ws://127.0.0.1:1/"})
    assert app_server.registry.sessions == {}


async def test_one_session_or_the_classic_suite_per_control_connection(
    http: aiohttp.ClientSession, app_server: AppServer
) -> None:
    """A second openSession, startInterception on a session's connection, openSession on the classic suite's
    connection, closeSession where there is none: -32006 saying which."""
    params = {"mode": "direct", "upstream": "ws://127.0.0.1:1/"}
    async with session(http, app_server, **params) as (owner, opened):
        again = await owner.request("openSession", params)
        assert again["error"]["code"] == -32006 and opened["sessionID"] in again["error"]["message"]
        classic = await owner.request("startInterception", {"mode": "none"})
        assert classic["error"]["code"] == -32006 and "startInterception" in classic["error"]["message"]
    async with suite_connection(http, app_server.control_port) as suite:
        assert (await suite.request("closeSession", {}))["error"]["code"] == -32006
        assert "result" in await suite.request("startInterception", {"mode": "none"})
        response = await suite.request("openSession", params)
        assert response["error"]["code"] == -32006 and "classic suite" in response["error"]["message"]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_thousand_sessions_leave_nothing_behind(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    """1,000 sessions opened and closed (one connection each way through some): file descriptors, tasks,
    ports and the registry back to where they were."""
    async with suite_connection(http, app_server.control_port) as suite:
        params = {"mode": "direct", "upstream": "ws://127.0.0.1:1/"}
        first = (await suite.request("openSession", params))["result"]
        await suite.request("closeSession", {})
        await asyncio.sleep(0.1)
        gc.collect()
        tasks_before, fds_before = len(asyncio.all_tasks()), open_fds()
        ports = set()
        for _ in range(1000):
            opened = (await suite.request("openSession", params))["result"]
            ports.add(opened["proxyPort"])
            assert (await suite.request("closeSession", {}))["result"] == {}
        await asyncio.sleep(0.1)
        gc.collect()
        assert app_server.registry.sessions == {} and app_server.registry.session_of == {}
        assert len(asyncio.all_tasks()) <= tasks_before
        assert open_fds() <= fds_before + 2, f"{open_fds() - fds_before} file descriptors more than before"
        assert all(refuses(port) for port in list(ports)[:50] + [first["proxyPort"]])


async def test_two_open_sessions_at_once_on_one_connection(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    """Two openSession calls in flight on one control connection: one session, the other call -32006."""
    params = {"mode": "direct", "upstream": "ws://127.0.0.1:1/"}
    async with suite_connection(http, app_server.control_port) as suite:
        answers = await asyncio.gather(suite.request("openSession", params), suite.request("openSession", params))
        assert sorted("result" in a for a in answers) == [False, True]
        assert [a["error"]["code"] for a in answers if "error" in a] == [-32006]
        assert len(app_server.registry.sessions) == 1
    async with asyncio.timeout(5):
        while app_server.registry.sessions:
            await asyncio.sleep(0.02)


async def test_a_keep_alive_connection_stays_with_its_session(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """HTTP on a session's port over one keep-alive connection: the first request is the session's (in its
    trace); after closeSession the next one on the same connection passes through, nobody's, and is not
    refused."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as one_connection:
        async with session(http, app_server, mode="direct", upstream=f"ws://{upstream.host}/") as (owner, opened):
            url = f"http://127.0.0.1:{opened['proxyPort']}/time"
            async with one_connection.get(url) as response:
                assert response.status == 200
            events = (await owner.request("getTrace", {}))["result"]["events"]
            assert [e["url"] for e in of(events, "http_request")] == [f"http://127.0.0.1:{opened['proxyPort']}/time"]
            assert (await owner.request("closeSession", {}))["result"] == {}
            async with one_connection.get(url + "?again") as response:
                assert response.status == 200 and (await response.json())["path"] == "/time?again"
