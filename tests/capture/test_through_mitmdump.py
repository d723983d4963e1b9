"""The whole product: a suite calls startInterception, the app server launches a real
mitmdump with the redirector, and a WebSocket client goes through it (loopback only)."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import websockets
from aiohttp import WSMsgType, web

from appserver.app import AppServer
from tests.conftest import launching_config, make_config, running_app_server
from tests.mitm_helpers import client_ssl_context, listening_socket, pids_with_arg, run_app, ws_connect_via_proxy
from tests.peers import Suite, UpstreamServer, close_cleanly, connect_client, raw_handshake, receive, suite_connection


async def test_ws_through_mitmproxy_with_transform(
    stack: AppServer, intercepting_suite: Suite, upstream: UpstreamServer, confdir: Path
) -> None:
    """Through mitmdump: headers, path and query arrive; the suite's replace and drop apply both ways."""

    async def policy(params: dict[str, Any]) -> dict[str, Any]:
        if params["data"] == "drop me":
            return {"action": "drop"}
        return {"action": "replace", "type": "text", "data": params["data"].upper()}

    intercepting_suite.on_transform = policy
    async with ws_connect_via_proxy(
        f"ws://{upstream.host}/path?v=6&format=json", stack.config.mitmproxy_port
    ) as client:
        request, server = await upstream.next()
        assert request.raw_path == "/path?v=6&format=json"
        assert "Ably-Test-Host" not in request.headers
        opened = (await intercepting_suite.notifications.get())["params"]
        assert (opened["host"], opened["proto"], opened["query"]["v"]) == (upstream.host, "ws", "6")
        assert opened["headers"]["Host"] == upstream.host  # as the client sent it, not as mitmproxy rewrote it
        assert request.headers["Host"] == upstream.host
        await client.send("drop me")
        await client.send("hello")
        assert (await receive(server)).data == "HELLO"
        await server.send_str("from server")
        assert await asyncio.wait_for(client.recv(), 5) == "FROM SERVER"
        await server.send_frame(b"\x0f\xa0bye", WSMsgType.CLOSE)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(client.recv(), 5)
        assert client.close_code == 4000 and client.close_reason == "bye"


async def test_abrupt_upstream_drop_through_mitmproxy(
    stack: AppServer, intercepting_suite: Suite, upstream: UpstreamServer
) -> None:
    """Through mitmdump, an abrupt upstream drop reaches the client as an abrupt drop, not a clean close."""
    async with ws_connect_via_proxy(f"ws://{upstream.host}/", stack.config.mitmproxy_port) as client:
        _, server = await upstream.next()
        server._writer.transport.abort()
        with pytest.raises(websockets.ConnectionClosedError) as caught:
            await asyncio.wait_for(client.recv(), 5)
        assert caught.value.rcvd is None  # no close frame arrived


async def test_wss_upstream_through_mitmproxy(
    stack: AppServer, intercepting_suite: Suite, tls_upstream: UpstreamServer, confdir: Path
) -> None:
    """A wss:// upstream with a self-signed certificate (trusted via --upstream-ca) is reached over TLS,
    and the client, trusting mitmproxy's CA, sees the suite's transform."""
    async with ws_connect_via_proxy(
        f"wss://{tls_upstream.host}/secure?x=1", stack.config.mitmproxy_port, ssl=client_ssl_context(confdir)
    ) as client:
        request, server = await tls_upstream.next()
        assert request.secure and request.raw_path == "/secure?x=1"
        opened = (await intercepting_suite.notifications.get())["params"]
        assert opened["proto"] == "wss" and opened["url"].startswith("wss://")
        await client.send("over tls")
        assert (await receive(server)).data == "over tls"
        assert json.loads(json.dumps(intercepting_suite.transform_requests[0]))["data"] == "over tls"
        await server.send_frame(b"\x03\xe8", WSMsgType.CLOSE)
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(client.recv(), 5)


async def test_plain_http_through_mitmproxy_reaches_its_target(
    stack: AppServer, intercepting_suite: Suite, http: aiohttp.ClientSession
) -> None:
    """A plain HTTP request through mitmproxy reaches its real target by way of the app server, which strips
    the Ably-Test-* stamps."""
    seen: list[str] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Ably-Test-Host", "none"))
        return web.Response(text="real target")

    app = web.Application()
    app.router.add_get("/", hello)
    async with run_app(app) as port:
        async with http.get(f"http://127.0.0.1:{port}/", proxy=f"http://127.0.0.1:{stack.config.mitmproxy_port}") as r:
            assert await r.text() == "real target"
        assert seen == ["none"]


async def test_start_interception_port_taken(
    no_leaks: None, confdir: Path, http: aiohttp.ClientSession
) -> None:
    """startInterception fails with a JSON-RPC error saying the port is taken, and leaves nothing running."""
    with listening_socket() as port:
        server = AppServer(launching_config(confdir, mitmproxy_port=port))
        await server.start()
        try:
            async with suite_connection(http, server.control_port) as suite:
                response = await suite.request("startInterception", {"mode": "proxy"}, timeout=60)
                assert response["error"]["code"] == -32004
                assert "in use" in response["error"]["message"] and str(port) in response["error"]["message"]
                assert pids_with_arg(str(confdir)) == []
                # the failed call did not leave this connection as the active suite
                assert server.registry.suite.active is None
        finally:
            await server.stop()


async def test_start_interception_twice_starts_once(
    stack: AppServer, intercepting_suite: Suite, confdir: Path
) -> None:
    """A second startInterception in the same mode starts nothing new."""
    before = pids_with_arg(str(confdir))
    response = await intercepting_suite.request("startInterception", {"mode": "proxy"})
    assert response["result"] == {}
    assert pids_with_arg(str(confdir)) == before


@pytest.mark.parametrize("trust", ["ca", "insecure", "none"])
async def test_wss_upstream_trust_flags(
    no_leaks: None, http: aiohttp.ClientSession, tls_upstream: UpstreamServer, upstream_ca: tuple[Path, Path],
    trust: str,
) -> None:  # fmt: skip
    """A self-signed wss:// upstream is reached with --upstream-ca or --upstream-insecure, and without
    either the client's handshake fails with 502 (the certificate is not trusted)."""
    overrides = {"ca": {"upstream_ca": str(upstream_ca[0])}, "insecure": {"upstream_insecure": True}, "none": {}}
    async with running_app_server(make_config(**overrides[trust])) as server:
        if trust == "none":
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await connect_client(http, server.proxy_port, tls_upstream.host, headers={"Ably-Test-Proto": "wss"})
            assert caught.value.status == 502
            return
        client = await connect_client(http, server.proxy_port, tls_upstream.host, headers={"Ably-Test-Proto": "wss"})
        request, upstream_ws = await tls_upstream.next()
        assert request.secure
        await close_cleanly(client, upstream_ws)


@pytest.mark.parametrize("trust", ["ca", "insecure", "none"])
async def test_https_upstream_trust_flags(
    no_leaks: None, http: aiohttp.ClientSession, upstream_ca: tuple[Path, Path], trust: str
) -> None:  # fmt: skip
    """Plain HTTP to a self-signed https:// upstream is verified as wss:// is: reached with --upstream-ca or
    --upstream-insecure; without either the client gets 502 saying the certificate was not trusted."""
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"secure={request.secure}")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*upstream_ca)
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        host = f"127.0.0.1:{runner.addresses[0][1]}"
        overrides = {"ca": {"upstream_ca": str(upstream_ca[0])}, "insecure": {"upstream_insecure": True}, "none": {}}
        async with running_app_server(make_config(**overrides[trust])) as server, \
                http.get(f"http://127.0.0.1:{server.proxy_port}/",
                         headers={"Ably-Test-Host": host, "Ably-Test-Proto": "https"}) as response:  # fmt: skip
            if trust == "none":
                assert response.status == 502 and "CERTIFICATE_VERIFY_FAILED" in await response.text()
            else:
                assert (response.status, await response.text()) == (200, "secure=True")
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("offer", [["probe.v1"], ["probe.v0", "probe.v1"]], ids=["one line", "two lines"])
async def test_subprotocol_through_mitmproxy(
    stack: AppServer, intercepting_suite: Suite, upstream: UpstreamServer, offer: list[str]
) -> None:
    """Through mitmdump, the client's 101 carries exactly the subprotocol the upstream chose."""
    upstream.protocols = ("probe.v1",)
    lines = [("Sec-WebSocket-Protocol", value) for value in offer]
    status, headers = await raw_handshake(0, upstream.host, lines, via_proxy=stack.config.mitmproxy_port)
    request, _ = await upstream.next(timeout=10)
    assert "probe.v1" in request.headers["Sec-WebSocket-Protocol"]
    assert status == 101
    assert [v for k, v in headers if k.lower() == "sec-websocket-protocol"] == ["probe.v1"]


async def test_server_sent_events_stream_through_mitmproxy(
    stack: AppServer, intercepting_suite: Suite, http: aiohttp.ClientSession
) -> None:
    """Through mitmdump and the app server, a Server-Sent Events response streams: its first event reaches the
    client before the upstream has sent the second (mitmproxy would otherwise hold the whole body)."""
    go_on = asyncio.Event()
    ended = asyncio.Event()

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await asyncio.wait_for(go_on.wait(), 10)
        await response.write(b"data: second\n\n")
        await response.write_eof()
        ended.set()
        return response

    app = web.Application()
    app.router.add_get("/events", events)
    async with run_app(app) as port:
        async with http.get(f"http://127.0.0.1:{port}/events",
                            proxy=f"http://127.0.0.1:{stack.config.mitmproxy_port}") as response:  # fmt: skip
            assert await asyncio.wait_for(response.content.readuntil(b"\n\n"), 10) == b"data: first\n\n"
            assert not ended.is_set()
            go_on.set()
            assert await response.content.read() == b"data: second\n\n"


async def test_http_framing_and_encoding_pass_unchanged_through_mitmproxy(
    stack: AppServer, intercepting_suite: Suite
) -> None:
    """Through mitmdump and the app server: a request body keeps its framing (Content-Length, or chunked); a
    gzip response arrives byte for byte with its Content-Encoding, every Set-Cookie, a HEAD's Content-Length
    and a 304's ETag; headers of 20 KB go both ways."""
    compressed = gzip.compress(b'{"n":1}')

    async def answer(request: web.Request) -> web.Response:
        if request.method == "POST":
            framing = {"X-TE": request.headers.get("Transfer-Encoding", "-"),
                       "X-CL": request.headers.get("Content-Length", "-")}
            return web.Response(body=await request.read(), headers=framing)
        if request.path == "/304":
            return web.Response(status=304, headers={"ETag": '"e"'})
        if request.path == "/long":  # a header longer than aiohttp's default limit, each way
            return web.Response(headers={"X-Seen": str(len(request.headers["X-Token"])), "X-Long": "l" * 20_000})
        response = web.Response(body=compressed, headers={"Content-Encoding": "gzip"}, content_type="application/json")
        response.headers.add("Set-Cookie", "a=1")
        response.headers.add("Set-Cookie", "b=2")
        return response

    async def pieces() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    wide = {"max_line_size": 100_000, "max_field_size": 100_000}  # the peers take long headers
    app = web.Application(handler_args=wide)
    app.router.add_route("*", "/{tail:.*}", answer)
    proxy = f"http://127.0.0.1:{stack.config.mitmproxy_port}"
    async with run_app(app) as port, aiohttp.ClientSession(**wide) as http:
        async def exchange(method: str, path: str, **kw: Any) -> tuple[int, Any, bytes]:
            async with http.request(method, f"http://127.0.0.1:{port}{path}", proxy=proxy, auto_decompress=False,
                                    **kw) as response:  # fmt: skip
                return response.status, response.headers, await response.read()

        _, headers, body = await exchange("POST", "/", data=b"abcdef")
        assert (headers["X-TE"], headers["X-CL"], body) == ("-", "6", b"abcdef")
        _, headers, body = await exchange("POST", "/", data=pieces())
        assert (headers["X-TE"], headers["X-CL"], body) == ("chunked", "-", b"abcdef")
        _, headers, body = await exchange("GET", "/gzip")
        assert (headers["Content-Encoding"], body) == ("gzip", compressed)
        assert headers.getall("Set-Cookie") == ["a=1", "b=2"]
        status, headers, body = await exchange("HEAD", "/gzip")
        assert (status, headers["Content-Length"], body) == (200, str(len(compressed)), b"")
        status, headers, _ = await exchange("GET", "/304")
        assert (status, headers["ETag"]) == (304, '"e"')
        status, headers, _ = await exchange("GET", "/long", headers={"X-Token": "t" * 20_000})
        assert (status, headers["X-Seen"], len(headers["X-Long"])) == (200, "20000", 20_000)
