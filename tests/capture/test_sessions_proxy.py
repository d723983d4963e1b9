"""Sessions (SPEC Part 6) in proxy mode: each session gets a mitmproxy listener of its own, added to the one
running mitmdump (no restart), and the redirector stamps what comes in on it with the session's id."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import websockets

from appserver.app import AppServer
from tests.conftest import launching_config, running_app_server
from tests.control.test_trace import of
from tests.mitm_helpers import pids_with_arg
from tests.peers import Suite, UpstreamServer, receive, suite_connection
from tests.rules.test_rules_relay import add, note


@pytest.fixture
async def stack(no_leaks: None, tmp_path: Path) -> AsyncIterator[AppServer]:
    async with running_app_server(launching_config(tmp_path / "mitmproxy-conf")) as server:
        yield server


@contextlib.asynccontextmanager
async def proxy_session(http: aiohttp.ClientSession, server: AppServer) -> AsyncIterator[tuple[Suite, dict[str, Any]]]:
    async with suite_connection(http, server.control_port) as suite:
        response = await suite.request("openSession", {"mode": "proxy"}, timeout=60)
        assert "result" in response, response
        yield suite, response["result"]


def accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_two_proxy_sessions_in_one_mitmdump(
    http: aiohttp.ClientSession, stack: AppServer, upstream: UpstreamServer
) -> None:
    """Two proxy-mode sessions at once: one mitmdump, a listener each; an SDK using one session's listener
    as its proxy is that session's (events, rules, trace), never the other's; closing a session stops its
    listener at once while the other's goes on, and its open connection passes through, released."""
    async with proxy_session(http, stack) as (a, opened_a), proxy_session(http, stack) as (b, opened_b):
        assert stack.config.mitmproxy_confdir is not None
        [mitmdump] = pids_with_arg(stack.config.mitmproxy_confdir)  # one mitmdump for both
        assert opened_a["mitmproxyPort"] != opened_b["mitmproxyPort"]
        await add(b, {"match": {"fromClient": True}, "action": {"type": "drop"}})
        url = f"ws://{upstream.host}/realtime?format=json"
        async with websockets.connect(url, proxy=f"http://127.0.0.1:{opened_a['mitmproxyPort']}") as sdk_a, \
                websockets.connect(url, proxy=f"http://127.0.0.1:{opened_b['mitmproxyPort']}") as sdk_b:  # fmt: skip
            request_a, server_a = await upstream.next()
            request_b, server_b = await upstream.next()
            assert "Ably-Test-Session" not in request_a.headers and "Ably-Test-Session" not in request_b.headers
            seen_a = await note(a, "interceptedConnectionOpened")
            seen_b = await note(b, "interceptedConnectionOpened")
            assert seen_a["connectionID"] != seen_b["connectionID"]
            await sdk_a.send("from a")  # a has no rule: its suite is asked, and echoes it
            await sdk_b.send("from b")  # dropped by b's rule
            assert (await receive(server_a)).data == "from a"
            with pytest.raises(TimeoutError):
                await receive(server_b, timeout=0.3)
            assert [t["data"] for t in a.transform_requests] == ["from a"] and b.transform_requests == []
            frames_b = of((await b.request("getTrace", {}))["result"]["events"], "frame")
            assert [(f["data"], f["decision"]) for f in frames_b] == [("from b", "drop")]
            assert (await b.request("closeSession", {}, timeout=30))["result"] == {}
            assert not accepts(opened_b["mitmproxyPort"]) and accepts(opened_a["mitmproxyPort"])
            await sdk_b.send("released")
            assert (await receive(server_b)).data == "released"  # b's connection goes on, nobody's
            await server_a.send_str("to a")
            assert await asyncio.wait_for(sdk_a.recv(), 5) == "to a"
        assert pids_with_arg(stack.config.mitmproxy_confdir) == [mitmdump]  # the same process: never restarted


async def test_a_proxy_session_without_mitmproxy_is_32004(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    async with suite_connection(http, app_server.control_port) as suite:
        response = await suite.request("openSession", {"mode": "proxy"})
        assert response["error"]["code"] == -32004 and "--no-mitmproxy" in response["error"]["message"]


async def test_a_proxy_session_on_a_port_in_use_is_32004(http: aiohttp.ClientSession, stack: AppServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with suite_connection(http, stack.control_port) as suite:
            response = await suite.request("openSession", {"mode": "proxy", "port": port}, timeout=60)
            assert response["error"]["code"] == -32004 and str(port) in response["error"]["message"]
    assert stack.registry.sessions == {}


async def test_the_classic_suite_cannot_restart_mitmdump_under_proxy_sessions(
    http: aiohttp.ClientSession, stack: AppServer
) -> None:
    """A proxy session is using mitmdump: startInterception in another mode (which would restart it and cut the
    session's connections) is -32004 saying so; in proxy mode it shares the running mitmdump."""
    async with proxy_session(http, stack) as (_, opened):
        async with suite_connection(http, stack.control_port) as classic:
            refused = await classic.request("startInterception", {"mode": "local", "pid": 1}, timeout=60)
            assert refused["error"]["code"] == -32004 and "proxy or local sessions" in refused["error"]["message"]
            assert "result" in await classic.request("startInterception", {"mode": "proxy"}, timeout=60)
        assert accepts(opened["mitmproxyPort"])
