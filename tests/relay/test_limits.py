"""Safe defaults and limits: origins, loopback binds, queue and frame bounds."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from appserver.app import AppServer, ipv6_loopback_available
from appserver.config import Config, from_args
from tests.conftest import make_config, running_app_server
from tests.peers import (Suite, UpstreamServer, close_cleanly, connect_client, receive_data, redirect_headers,
                         suite_connection)


@pytest.mark.parametrize(
    "origin, allowed",
    [
        (None, True),
        ("http://localhost", True),
        ("http://localhost:3000", True),
        ("https://127.0.0.1:8443", True),
        ("http://[::1]:8080", True),
        ("http://evil.example", False),
        ("http://localhost.evil.example", False),
        ("null", False),
    ],
)
async def test_control_api_origin_check(
    http: aiohttp.ClientSession, app_server: AppServer, origin: str | None, allowed: bool
) -> None:
    """Browser pages from other origins are refused with 403 (cross-site WebSocket hijacking);
    no Origin and local origins are accepted."""
    headers = {"Origin": origin} if origin else {}
    url = f"ws://127.0.0.1:{app_server.control_port}/"
    if allowed:
        async with http.ws_connect(url, headers=headers) as ws:
            await ws.send_str('{"jsonrpc": "2.0", "method": "nope", "id": 1}')
            assert (await ws.receive()).type is WSMsgType.TEXT
    else:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await http.ws_connect(url, headers=headers)
        assert caught.value.status == 403


def test_allow_origin_flag() -> None:
    """--allow-origin adds a pattern to the local defaults."""
    config = from_args(["--allow-origin", "http://suite.test:*"])
    assert config.origin_allowed("http://suite.test:9000")
    assert config.origin_allowed("http://localhost:1")
    assert not config.origin_allowed("http://other.test:9000")


def test_non_loopback_binds_are_named() -> None:
    """Binding anything to a non-loopback address is noticed (the app server logs a WARNING for each)."""
    assert Config().non_loopback_binds() == []
    assert Config(control_host="::1", proxy_host="localhost").non_loopback_binds() == []
    assert Config(control_host="0.0.0.0").non_loopback_binds() == ["control API 0.0.0.0"]


@pytest.fixture
def config() -> Config:
    return make_config(max_queued_messages=5, max_control_message_size=1000)


async def test_queue_limit_pauses_reading_without_losing_anything(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Past --max-queued-messages the proxy stops reading (logged); once the suite answers, all arrive in order."""
    release = asyncio.Event()

    async def held(params: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"action": "replace", "type": params["type"], "data": params["data"]}

    suite.on_transform = held
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    for i in range(50):
        await client.send_str(f"m{i}")
    async with asyncio.timeout(5):
        while not any("reading paused" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING):
            await asyncio.sleep(0.02)
    release.set()
    assert await receive_data(server, 50) == [f"m{i}" for i in range(50)]
    await close_cleanly(client, server)


async def test_oversized_control_frame_closes_with_1009(
    http: aiohttp.ClientSession, app_server: AppServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A control frame over --max-control-message-size closes that connection with 1009 (logged);
    others keep working."""
    async with http.ws_connect(f"ws://127.0.0.1:{app_server.control_port}/") as ws:
        await ws.send_str('{"jsonrpc": "2.0", "method": "x", "params": {"pad": "' + "x" * 2000 + '"}, "id": 1}')
        msg = await ws.receive()
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert ws.close_code == 1009
    async with asyncio.timeout(5):
        while not any("protocol error" in r.getMessage() and "1000" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.02)
    async with suite_connection(http, app_server.control_port) as suite:
        assert (await suite.request("startInterception", {"mode": "proxy"}))["result"] == {}


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_available(), reason="this host has no IPv6 loopback")


@needs_ipv6
async def test_control_api_and_proxy_endpoint_answer_on_ipv6_loopback_too(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """By default a client forced onto ::1 (as Node 18 is when localhost resolves to ::1 first) reaches both."""
    assert app_server.config.control_host == "127.0.0.1"
    async with http.ws_connect(f"ws://[::1]:{app_server.control_port}/") as control:
        await control.send_json({"jsonrpc": "2.0", "id": 1, "method": "startInterception", "params": {}})
        assert (await control.receive_json(timeout=5)) == {"jsonrpc": "2.0", "result": {}, "id": 1}
    client = await http.ws_connect(f"http://[::1]:{app_server.proxy_port}/v6", headers=redirect_headers(upstream.host),
                                   autoclose=False, autoping=False)  # fmt: skip
    request, server = await upstream.next()
    assert request.raw_path == "/v6"
    await client.send_str("over ::1")
    assert await receive_data(server, 1) == ["over ::1"]
    await close_cleanly(client, server)


@needs_ipv6
async def test_no_ipv6_loopback_flag(http: aiohttp.ClientSession, no_leaks: None) -> None:
    """--no-ipv6-loopback: 127.0.0.1 only; [::1] refuses."""
    assert from_args(["--no-ipv6-loopback"]).ipv6_loopback is False
    async with running_app_server(make_config(ipv6_loopback=False)) as server:
        with pytest.raises(aiohttp.ClientConnectorError):
            await http.ws_connect(f"ws://[::1]:{server.control_port}/")
        async with http.ws_connect(f"ws://127.0.0.1:{server.control_port}/"):
            pass


@needs_ipv6
async def test_another_host_binds_only_there(http: aiohttp.ClientSession, no_leaks: None) -> None:
    """A --control-host other than 127.0.0.1 is the only address listened on: [::1] is added to 127.0.0.1 alone."""
    async with running_app_server(make_config(control_host="127.0.0.2")) as server:
        with pytest.raises(aiohttp.ClientConnectorError):
            await http.ws_connect(f"ws://[::1]:{server.control_port}/")
        async with http.ws_connect(f"ws://127.0.0.2:{server.control_port}/"):
            pass
