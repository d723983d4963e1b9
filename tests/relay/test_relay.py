"""The proxy endpoint end to end: real client, app server and upstream on loopback."""

from __future__ import annotations

import asyncio
import base64
import random
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from appserver.app import AppServer
from tests.peers import (NO_ANSWER, Suite, UpstreamServer, close_cleanly, connect_client, raw_handshake, receive,
                         receive_data, redirect_headers, suite_connection)

DIRECTIONS = ["client-to-server", "server-to-client"]


async def open_pair(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, path: str = "/"
) -> tuple[aiohttp.ClientWebSocketResponse, Any]:
    client = await connect_client(http, app_server.proxy_port, upstream.host, path)
    _, server_ws = await upstream.next()
    return client, server_ws


def ends(client: Any, server: Any, direction: str) -> tuple[Any, Any]:
    """(sender, receiver) for a direction."""
    return (client, server) if direction == "client-to-server" else (server, client)


async def test_passthrough_without_suite(http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer) -> None:
    """With no active test suite, messages pass through unchanged both ways."""
    client, server = await open_pair(http, app_server, upstream)
    await client.send_str("hello")
    await client.send_bytes(b"\x00\x01")
    assert await receive_data(server, 2) == ["hello", b"\x00\x01"]
    await server.send_str("world")
    assert await receive_data(client, 1) == ["world"]
    await close_cleanly(client, server)


async def test_ipv6_loopback_upstream(http: aiohttp.ClientSession, app_server: AppServer, no_leaks: None) -> None:
    """An Ably-Test-Host with an IPv6 literal ([::1]:port) reaches that upstream."""
    upstream = UpstreamServer()
    upstream.bind_host = "::1"
    await upstream.start()
    try:
        client = await connect_client(http, app_server.proxy_port, upstream.host, "/v6")
        request, server = await upstream.next()
        assert request.raw_path == "/v6" and request.headers["Host"] == upstream.host
        await client.send_str("over ipv6")
        assert await receive_data(server, 1) == ["over ipv6"]
        await close_cleanly(client, server)
    finally:
        await upstream.stop()


async def test_path_query_and_headers_travel_upstream(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """Path and query arrive verbatim, end-to-end headers unchanged, Ably-Test-* and hop-by-hop ones not."""
    client = await connect_client(
        http, app_server.proxy_port, upstream.host, "/a%2Fb/c?v=6&format=msgpack&x=%20y",
        headers={"X-Custom": "kept", "Authorization": "Bearer t", "Keep-Alive": "timeout=5"},
    )  # fmt: skip
    request, server = await upstream.next()
    assert request.raw_path == "/a%2Fb/c?v=6&format=msgpack&x=%20y"
    assert request.headers["X-Custom"] == "kept"
    assert request.headers["Authorization"] == "Bearer t"
    assert request.headers["Host"] == upstream.host
    assert "Ably-Test-Host" not in request.headers and "Ably-Test-Proto" not in request.headers
    assert "Keep-Alive" not in request.headers
    await close_cleanly(client, server)


async def test_upstream_handshake_headers_reach_client(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """The upstream's end-to-end handshake response headers reach the client."""
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    assert client._response.headers["X-Upstream-Handshake"] == "yes"
    await close_cleanly(client, server)


async def test_subprotocol_negotiated_end_to_end(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """The client's subprotocols reach the upstream and the upstream's choice reaches the client."""
    upstream.protocols = ("chat.v2",)
    client = await connect_client(http, app_server.proxy_port, upstream.host, protocols=("chat.v1", "chat.v2"))
    request, server = await upstream.next()
    assert request.headers["Sec-WebSocket-Protocol"] == "chat.v1,chat.v2"
    assert client.protocol == "chat.v2"
    await close_cleanly(client, server)


SUBPROTOCOL_OFFERS = {"one line": ["probe.v1"], "two lines": ["probe.v0", "probe.v1"], "one list": ["probe.v0, probe.v1"]}


@pytest.mark.parametrize("offer", SUBPROTOCOL_OFFERS.values(), ids=SUBPROTOCOL_OFFERS.keys())
async def test_subprotocol_the_upstream_chose_reaches_the_client(
    app_server: AppServer, upstream: UpstreamServer, offer: list[str]
) -> None:
    """The 101 carries exactly the subprotocol the upstream chose, however the client spread its offer over lines."""
    upstream.protocols = ("probe.v1",)
    lines = [*redirect_headers(upstream.host).items(), *(("Sec-WebSocket-Protocol", value) for value in offer)]
    status, headers = await raw_handshake(app_server.proxy_port, upstream.host, lines)
    request, _ = await upstream.next()
    assert "probe.v1" in request.headers["Sec-WebSocket-Protocol"]
    assert status == 101
    assert [v for k, v in headers if k.lower() == "sec-websocket-protocol"] == ["probe.v1"]


async def test_no_subprotocol_when_the_upstream_chose_none(app_server: AppServer, upstream: UpstreamServer) -> None:
    """An upstream that picks none of the offered subprotocols: the client's 101 names none either."""
    lines = [*redirect_headers(upstream.host).items(), ("Sec-WebSocket-Protocol", "probe.v1")]
    status, headers = await raw_handshake(app_server.proxy_port, upstream.host, lines)
    await upstream.next()
    assert status == 101
    assert not [v for k, v in headers if k.lower() == "sec-websocket-protocol"]


@pytest.mark.parametrize("upstream_deflate", [True, False])
async def test_deflate_only_as_upstream_negotiated(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, upstream_deflate: bool
) -> None:
    """permessage-deflate is agreed with the client only when the upstream agreed to it."""
    upstream.compress = upstream_deflate
    client = await connect_client(http, app_server.proxy_port, upstream.host, compress=15)
    _, server = await upstream.next()
    assert bool(client.compress) is upstream_deflate
    await close_cleanly(client, server)


async def test_order_through_slow_suite(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """1,000 pipelined messages each way, answered after random delays, arrive complete and in order;
    a message is not put to the suite before the one ahead of it is answered."""
    rng = random.Random(1234)
    outstanding = {True: 0, False: 0}

    async def slow(params: dict[str, Any]) -> dict[str, Any]:
        direction = params["fromClient"]
        outstanding[direction] += 1
        assert outstanding[direction] == 1, "a second message was asked about before the first was answered"
        if rng.random() < 0.1:
            await asyncio.sleep(rng.random() * 0.005)
        outstanding[direction] -= 1
        return {"action": "replace", "type": params["type"], "data": params["data"] + "!"}

    suite.on_transform = slow
    client, server = await open_pair(http, app_server, upstream)
    count = 1000
    expected = [f"m{i}" for i in range(count)]
    for text in expected:
        await client.send_str(text)
        await server.send_str(text)
    got_server, got_client = await asyncio.gather(receive_data(server, count, 60), receive_data(client, count, 60))
    assert got_server == [t + "!" for t in expected]
    assert got_client == [t + "!" for t in expected]
    assert len(suite.transform_requests) == 2 * count
    await close_cleanly(client, server)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(
    "sent, replacement, delivered",
    [
        ("text", {"type": "binary", "data": base64.b64encode(b"\xffbin").decode()}, b"\xffbin"),
        (b"\x01bin", {"type": "text", "data": "now text"}, "now text"),
        ("text", {"type": "text", "data": "édité"}, "édité"),
    ],
)
async def test_replace(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
    direction: str, sent: str | bytes, replacement: dict[str, str], delivered: str | bytes,
) -> None:  # fmt: skip
    """A replace result delivers the suite's message, text↔binary both ways."""

    async def replace(params: dict[str, Any]) -> dict[str, Any]:
        return {"action": "replace", **replacement}

    suite.on_transform = replace
    client, server = await open_pair(http, app_server, upstream)
    sender, receiver = ends(client, server, direction)
    await (sender.send_str(sent) if isinstance(sent, str) else sender.send_bytes(sent))
    assert await receive_data(receiver, 1) == [delivered]
    params = suite.transform_requests[0]
    assert params["fromClient"] is (direction == "client-to-server")
    assert params["type"] == ("text" if isinstance(sent, str) else "binary")
    assert params["data"] == (sent if isinstance(sent, str) else base64.b64encode(sent).decode())
    await close_cleanly(client, server)


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_drop(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite, direction: str
) -> None:
    """A drop result delivers nothing; the next message still arrives."""

    async def drop_first(params: dict[str, Any]) -> dict[str, Any]:
        if params["data"] == "first":
            return {"action": "drop"}
        return {"action": "replace", "type": "text", "data": params["data"]}

    suite.on_transform = drop_first
    client, server = await open_pair(http, app_server, upstream)
    sender, receiver = ends(client, server, direction)
    await sender.send_str("first")
    await sender.send_str("second")
    assert await receive_data(receiver, 1) == ["second"]
    await close_cleanly(client, server)


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_inject(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite, direction: str
) -> None:
    """injectMessage sends at once on the named leg, not through the transform queue."""
    client, server = await open_pair(http, app_server, upstream)
    note = await suite.notifications.get()
    assert note["method"] == "interceptedConnectionOpened"
    connection_id = note["params"]["connectionID"]
    receiver = server if direction == "client-to-server" else client
    response = await suite.request(
        "injectMessage",
        {"connectionID": connection_id, "fromClient": direction == "client-to-server", "type": "binary",
         "data": base64.b64encode(b"injected").decode()},
    )  # fmt: skip
    assert "id" in response["result"]
    assert await receive_data(receiver, 1) == [b"injected"]
    assert suite.transform_requests == []
    await close_cleanly(client, server)


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_close_code_and_reason_passed_on(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, direction: str
) -> None:
    """A close 4000 'bye' reaches the other peer as 4000 'bye', and its answer comes back."""
    client, server = await open_pair(http, app_server, upstream)
    closer, other = ends(client, server, direction)
    await closer.send_frame(b"\x0f\xa0bye", WSMsgType.CLOSE)
    msg = await receive(other)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4000, "bye")
    await other.send_frame(b"\x0f\xa1ack", WSMsgType.CLOSE)
    answer = await receive(closer)
    assert (answer.type, answer.data, answer.extra) == (WSMsgType.CLOSE, 4001, "ack")


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_close_without_code_passed_on_without_code(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, direction: str
) -> None:
    """A close frame without a code is passed on as a close frame without a code."""
    client, server = await open_pair(http, app_server, upstream)
    closer, other = ends(client, server, direction)
    await closer.send_frame(b"", WSMsgType.CLOSE)
    msg = await receive(other)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, 0)  # aiohttp's 0: the frame had no code
    await other.send_frame(b"", WSMsgType.CLOSE)
    assert (await receive(closer)).type is WSMsgType.CLOSE


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_abrupt_drop_passed_on_as_drop(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, direction: str
) -> None:
    """An abrupt drop (no close frame) reaches the other peer as an abrupt drop, not a close frame."""
    client, server = await open_pair(http, app_server, upstream)
    dropper, other = ends(client, server, direction)
    dropper._writer.transport.abort()
    msg = await receive(other)
    assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR), f"expected an abrupt drop, got {msg}"


async def test_server_message_queued_behind_slow_suite_arrives_before_close(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """A DISCONNECTED-style message waiting on the suite is delivered before the server's close."""

    async def slow(params: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.3)
        return {"action": "replace", "type": "text", "data": params["data"]}

    suite.on_transform = slow
    client, server = await open_pair(http, app_server, upstream)
    await server.send_str('{"action":6}')
    await server.send_frame(b"\x0f\xa0bye", WSMsgType.CLOSE)
    first = await receive(client)
    assert (first.type, first.data) == (WSMsgType.TEXT, '{"action":6}')
    second = await receive(client)
    assert (second.type, second.data, second.extra) == (WSMsgType.CLOSE, 4000, "bye")
    await client.send_frame(b"\x0f\xa0bye", WSMsgType.CLOSE)


async def test_upstream_not_listening_is_502(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    """An upstream that cannot be reached fails the client's handshake with 502."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await connect_client(http, app_server.proxy_port, "127.0.0.1:1")
    assert caught.value.status == 502


@pytest.mark.parametrize("status", [401, 403, 404, 503])
async def test_upstream_refusal_status_passed_back(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, status: int
) -> None:
    """An upstream that refuses the handshake with a status makes the client's handshake fail with it."""
    upstream.refuse_with = status
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await connect_client(http, app_server.proxy_port, upstream.host)
    assert caught.value.status == status


@pytest.mark.parametrize(
    "headers, complaint",
    [
        ({"Ably-Test-Host": None, "Ably-Test-Proto": None}, "missing Ably-Test-Host and Ably-Test-Proto"),
        ({"Ably-Test-Host": ""}, "Ably-Test-Host"),
        ({"Ably-Test-Proto": "http"}, "Ably-Test-Proto header must be 'ws' or 'wss'"),
        ({"Ably-Test-Host": "bad host:x"}, "Ably-Test-Host"),
    ],
)
async def test_bad_test_headers_are_400(
    http: aiohttp.ClientSession, app_server: AppServer, headers: dict[str, str | None], complaint: str
) -> None:
    """A missing or bad Ably-Test-* header gets 400 with a body that says which."""
    sent = {"Ably-Test-Host": "127.0.0.1:1", "Ably-Test-Proto": "ws", **headers}
    sent = {k: v for k, v in sent.items() if v is not None}
    async with http.get(
        f"http://127.0.0.1:{app_server.proxy_port}/",
        headers={**sent, "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
    ) as response:  # fmt: skip
        assert response.status == 400
        assert complaint in await response.text()


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_pings_relayed_not_answered(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, direction: str
) -> None:
    """A ping reaches the other peer and its pong comes back; the proxy answers none itself."""
    client, server = await open_pair(http, app_server, upstream)
    pinger, other = ends(client, server, direction)
    await pinger.ping(b"are you there")
    ping = await receive(other)
    assert (ping.type, ping.data) == (WSMsgType.PING, b"are you there")
    with pytest.raises(TimeoutError):
        await receive(pinger, timeout=0.2)  # no pong from the proxy itself
    await other.pong(ping.data)
    pong = await receive(pinger)
    assert (pong.type, pong.data) == (WSMsgType.PONG, b"are you there")
    await close_cleanly(client, server)


async def test_suite_disconnect_releases_in_order(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """When the suite goes away mid-transform, that message and those behind it go on unchanged, in order,
    and a new suite can start interception."""
    asked = asyncio.Event()

    async def never(params: dict[str, Any]) -> Any:
        asked.set()
        return NO_ANSWER

    suite.on_transform = never
    client, server = await open_pair(http, app_server, upstream)
    for i in range(5):
        await client.send_str(f"m{i}")
    await asyncio.wait_for(asked.wait(), 5)
    assert len(suite.transform_requests) == 1
    await suite.close()
    assert await receive_data(server, 5) == [f"m{i}" for i in range(5)]
    async with suite_connection(http, app_server.control_port) as new_suite:
        response = await new_suite.request("startInterception", {"mode": "proxy"})
        assert response["result"] == {}
        await client.send_str("after")
        assert await receive_data(server, 1) == ["after"]
        assert new_suite.transform_requests[0]["data"] == "after"
    await close_cleanly(client, server)


@pytest.mark.parametrize(
    "answer",
    [{"action": "explode"}, {"action": "replace", "type": "binary", "data": "not base64!"}, "just a string",
     {"action": "replace", "type": "text"}],
)  # fmt: skip
async def test_invalid_transform_result_passes_message_unchanged(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
    answer: Any, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """An invalid result passes the message on unchanged, with an ERROR naming the message id."""

    async def bad(params: dict[str, Any]) -> Any:
        return answer

    suite.on_transform = bad
    client, server = await open_pair(http, app_server, upstream)
    await client.send_str("keep me")
    assert await receive_data(server, 1) == ["keep me"]
    message_id = suite.transform_requests[0]["id"]
    assert any(r.levelname == "ERROR" and f"message {message_id} " in r.getMessage() for r in caplog.records)
    await close_cleanly(client, server)


async def test_transform_error_response_passes_message_unchanged(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A JSON-RPC error from the suite passes the message on unchanged, logged at ERROR with its id."""
    import json

    async def error(params: dict[str, Any]) -> Any:
        await suite.ws.send_str(json.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "boom"}}))
        return NO_ANSWER

    suite.on_transform = error
    client, server = await open_pair(http, app_server, upstream)
    await client.send_str("keep me")
    assert await receive_data(server, 1) == ["keep me"]
    assert any(r.levelname == "ERROR" and "boom" in r.getMessage() for r in caplog.records)
    await close_cleanly(client, server)
