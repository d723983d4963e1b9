"""Part 2 in the app server: connection events, closeConnection, direct mode."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType
from yarl import URL

from appserver.app import AppServer
from tests.conftest import make_config
from tests.peers import Suite, UpstreamServer, close_cleanly, connect_client, receive, receive_data


async def next_event(suite: Suite, method: str, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            note = await suite.notifications.get()
            if note["method"] == method:
                return note["params"]  # type: ignore[no-any-return]


async def test_opened_event_before_first_transform(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """interceptedConnectionOpened carries url, host, proto, path, query and headers (as the client sent them),
    before any transform."""
    client = await connect_client(
        http, app_server.proxy_port, upstream.host, "/?v=6&format=msgpack&heartbeats=false",
        headers={"X-Sdk": "ably-js"},
    )  # fmt: skip
    _, server = await upstream.next()
    await client.send_str("first")
    await receive_data(server, 1)
    opened = await next_event(suite, "interceptedConnectionOpened")
    assert opened["url"] == f"ws://{upstream.host}/?v=6&format=msgpack&heartbeats=false"
    assert opened["host"] == upstream.host and opened["proto"] == "ws" and opened["path"] == "/"
    assert opened["query"] == {"v": "6", "format": "msgpack", "heartbeats": "false"}
    assert opened["headers"]["X-Sdk"] == "ably-js"
    assert "Ably-Test-Host" not in opened["headers"]
    # the Host the client sent, which mitmproxy rewrites to the proxy endpoint when it redirects
    assert opened["headers"]["Host"] == upstream.host
    assert suite.transform_requests[0]["connectionID"] == opened["connectionID"]
    await close_cleanly(client, server)


@pytest.mark.parametrize("closer", ["client", "server"])
async def test_closed_event_clean(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite, closer: str
) -> None:
    """interceptedConnectionClosed says who closed first, with their code and reason."""
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    first, second = (client, server) if closer == "client" else (server, client)
    await first.send_frame(b"\x0f\xa0bye", WSMsgType.CLOSE)
    assert (await receive(second)).data == 4000
    await second.send_frame(b"\x0f\xa0bye", WSMsgType.CLOSE)
    closed = await next_event(suite, "interceptedConnectionClosed")
    assert closed == {"connectionID": closed["connectionID"], "closedBy": closer, "code": 4000, "reason": "bye",
                      "clean": True}  # fmt: skip


async def test_closed_event_abrupt(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """An abrupt drop is reported as clean: false, code null."""
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    server._writer.transport.abort()
    closed = await next_event(suite, "interceptedConnectionClosed")
    assert (closed["closedBy"], closed["code"], closed["clean"]) == ("server", None, False)
    await client.close()


@pytest.mark.parametrize("side", ["client", "server"])
async def test_close_connection_one_side_with_code(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite, side: str
) -> None:
    """closeConnection sends the chosen code and reason to the side named."""
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    connection_id = (await next_event(suite, "interceptedConnectionOpened"))["connectionID"]
    response = await suite.request(
        "closeConnection", {"connectionID": connection_id, "side": side, "code": 4321, "reason": "test says so"}
    )
    assert response["result"] == {}
    target = client if side == "client" else server
    msg = await receive(target)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4321, "test says so")
    closed = await next_event(suite, "interceptedConnectionClosed")
    assert closed["closedBy"] == "proxy"


async def test_close_connection_client_side_passes_the_clients_answer_upstream(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """side client: the upstream gets nothing until the client answers; then the client's answer reaches it."""
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    connection_id = (await next_event(suite, "interceptedConnectionOpened"))["connectionID"]
    await suite.request("closeConnection", {"connectionID": connection_id, "side": "client", "code": 4321})
    assert (await receive(client)).data == 4321
    with pytest.raises(TimeoutError):
        await receive(server, timeout=0.3)  # nothing yet: the proxy waits for the client's answer
    await client.send_frame(b"\x0f\xa0answered", WSMsgType.CLOSE)  # the client answers 4000 'answered'
    msg = await receive(server)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4000, "answered")
    await server.send_frame(b"\x0f\xa0", WSMsgType.CLOSE)


async def test_close_connection_after_it_closed_is_unknown(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """A connection that has closed is forgotten: closeConnection and injectMessage on it are -32002."""
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    connection_id = (await next_event(suite, "interceptedConnectionOpened"))["connectionID"]
    await close_cleanly(client, server)
    await next_event(suite, "interceptedConnectionClosed")
    for method, params in (("closeConnection", {}), ("injectMessage", {"fromClient": True, "type": "text", "data": "x"})):
        error = (await suite.request(method, {"connectionID": connection_id, **params}))["error"]
        assert error["code"] == -32002 and "no open connection" in error["message"], error


async def test_close_connection_abrupt_both(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """closeConnection with abrupt drops both peers without a close frame."""
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    connection_id = (await next_event(suite, "interceptedConnectionOpened"))["connectionID"]
    response = await suite.request("closeConnection", {"connectionID": connection_id, "abrupt": True})
    assert response["result"] == {}
    for peer in (client, server):
        assert (await receive(peer)).type in (WSMsgType.CLOSED, WSMsgType.ERROR)
    await client.close()


@pytest.mark.parametrize(
    "params, field",
    [({"side": "middle"}, "side"), ({"code": 1006}, "code"), ({"code": "x"}, "code"), ({"reason": "r"}, "reason"),
     ({"abrupt": "yes"}, "abrupt")],
)  # fmt: skip
async def test_close_connection_invalid_params(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
    params: dict[str, Any], field: str,
) -> None:  # fmt: skip
    """closeConnection with a bad side, an unsendable code, or a reason without code is -32602 naming it."""
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    connection_id = (await next_event(suite, "interceptedConnectionOpened"))["connectionID"]
    response = await suite.request("closeConnection", {"connectionID": connection_id, **params})
    assert response["error"]["code"] == -32602, response
    assert f"'{field}'" in response["error"]["message"]
    await close_cleanly(client, server)


@pytest.fixture
async def direct_server(no_leaks: None, upstream: UpstreamServer) -> AsyncIterator[AppServer]:
    server = AppServer(make_config(default_upstream=URL(f"ws://{upstream.host}/")))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_direct_mode_upgrade_goes_to_default_upstream(
    http: aiohttp.ClientSession, direct_server: AppServer, upstream: UpstreamServer
) -> None:
    """In direct mode an upgrade without Ably-Test-* headers is relayed to --default-upstream, path and query intact."""
    client = await http.ws_connect(f"http://127.0.0.1:{direct_server.proxy_port}/?v=6&format=json")
    request, server = await upstream.next()
    assert request.raw_path == "/?v=6&format=json"
    await client.send_str("direct")
    assert await receive_data(server, 1) == ["direct"]
    await close_cleanly(client, server)


async def test_direct_mode_relays_plain_http(
    http: aiohttp.ClientSession, direct_server: AppServer, upstream: UpstreamServer
) -> None:
    """In direct mode plain HTTP (REST, token requests) is relayed unchanged, status and headers included."""
    async with http.post(
        f"http://127.0.0.1:{direct_server.proxy_port}/keys/abc/requestToken?x=1",
        data="payload", headers={"Authorization": "Basic eA=="},
    ) as response:  # fmt: skip
        assert response.status == 201
        assert response.headers["X-Upstream"] == "yes"
        seen = await response.json()
    assert seen["method"] == "POST" and seen["path"] == "/keys/abc/requestToken?x=1" and seen["body"] == "payload"
    assert seen["headers"]["Authorization"] == "Basic eA=="


async def test_plain_http_without_direct_mode_is_400(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    """Without --default-upstream, plain HTTP to the proxy endpoint gets 400 saying why."""
    async with http.get(f"http://127.0.0.1:{app_server.proxy_port}/time") as response:
        assert response.status == 400
        assert "--default-upstream" in await response.text()
