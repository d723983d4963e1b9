"""Plain HTTP through the proxy endpoint: stamped requests, streaming, and the ways an exchange fails."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from yarl import URL

from appserver.app import AppServer
from appserver.config import from_args
from tests.conftest import make_config, running_app_server
from tests.mitm_helpers import free_port, run_app
from tests.peers import UpstreamServer, close_cleanly, connect_client, raw_handshake, redirect_headers


class HttpUpstream:
    """An HTTP server the tests script: a plain answer, a stream they pace, a reset mid-body."""

    def __init__(self) -> None:
        self.next_chunk = asyncio.Event()
        self.stream_ended = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.port = 0

    async def plain(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.raw_path, dict(request.headers), body))
        return web.Response(status=207, text="plain answer", headers={"X-Up": "1"})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        for _ in range(500):  # until told to go on, or until the proxy hangs up on us
            if self.next_chunk.is_set() or request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.01)
        if request.transport is None or request.transport.is_closing():
            self.cancelled.set()
            return response
        await response.write(b"data: last\n\n")
        await response.write_eof()
        self.stream_ended.set()
        return response

    async def reset(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"x" * 10)
        assert request.transport is not None
        request.transport.abort()
        return response

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def http_upstream(no_leaks: None) -> AsyncIterator[HttpUpstream]:
    upstream = HttpUpstream()
    app = web.Application()
    app.router.add_get("/stream", upstream.stream)
    app.router.add_get("/reset", upstream.reset)
    app.router.add_route("*", "/{tail:.*}", upstream.plain)
    async with run_app(app) as upstream.port:
        yield upstream


def stamped(host: str) -> dict[str, str]:
    return {**redirect_headers(host, "http")}


async def test_a_stamped_request_goes_where_the_client_meant(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream
) -> None:
    """Method, path, query, end-to-end headers and body reach the host of Ably-Test-Host; status, headers
    and body come back; no Ably-Test-* header reaches the upstream."""
    async with http.post(f"http://127.0.0.1:{app_server.proxy_port}/channels/a/messages?x=%20y", data=b"hello",
                         headers={**stamped(http_upstream.host), "X-Key": "k"}) as response:  # fmt: skip
        assert (response.status, await response.text(), response.headers["X-Up"]) == (207, "plain answer", "1")
        assert response.headers["Content-Length"] == str(len("plain answer"))
    [(method, path, headers, body)] = http_upstream.seen
    assert (method, path, body, headers["X-Key"]) == ("POST", "/channels/a/messages?x=%20y", b"hello", "k")
    assert not [name for name in headers if name.lower().startswith("ably-test-")]


async def test_a_streamed_response_arrives_chunk_by_chunk(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream
) -> None:
    """The first chunk of a streamed response reaches the client before the upstream has sent the last."""
    async with http.get(f"http://127.0.0.1:{app_server.proxy_port}/stream",
                        headers=stamped(http_upstream.host)) as response:  # fmt: skip
        first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
        assert first == b"data: first\n\n" and not http_upstream.stream_ended.is_set()
        http_upstream.next_chunk.set()
        assert await response.content.read() == b"data: last\n\n"


async def test_what_the_upstream_answers_passes_unchanged(http: aiohttp.ClientSession, app_server: AppServer,
                                                          no_leaks: None) -> None:  # fmt: skip
    """What an SDK could tell apart reaches it as the upstream sent it: a HEAD's Content-Length with no body,
    204 and 304, every Set-Cookie, a gzip body byte for byte with its Content-Encoding, a redirect not
    followed; and the upstream gets a request body framed as the client sent it (Content-Length, or chunked),
    with no Content-Type the client did not send."""
    compressed = gzip.compress(b'{"n":1}')

    async def answer(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind == "head":
            return web.Response(body=b"x" * 50)
        if kind == "cookies":
            response = web.Response(text="c")
            response.headers.add("Set-Cookie", "a=1")
            response.headers.add("Set-Cookie", "b=2")
            return response
        if kind == "gzip":
            return web.Response(body=compressed, headers={"Content-Encoding": "gzip"}, content_type="application/json")
        if kind == "redirect":
            return web.Response(status=302, headers={"Location": "/elsewhere"})
        if kind == "echo":
            framing = {"X-TE": request.headers.get("Transfer-Encoding", "-"),
                       "X-CL": request.headers.get("Content-Length", "-"),
                       "X-CT": request.headers.get("Content-Type", "-")}
            return web.Response(body=await request.read(), headers=framing)
        return web.Response(status=int(kind), headers={"ETag": '"e"'})

    app = web.Application()
    app.router.add_route("*", "/{kind}", answer)

    async def pieces() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    async with run_app(app) as port:
        async def exchange(method: str, path: str, headers: dict[str, str] | None = None,
                           **kw: Any) -> tuple[int, CIMultiDictProxy[str], bytes]:  # fmt: skip
            async with http.request(method, f"http://127.0.0.1:{app_server.proxy_port}{path}",
                                    headers={**stamped(f"127.0.0.1:{port}"), **(headers or {})},
                                    allow_redirects=False, auto_decompress=False, **kw) as response:  # fmt: skip
                return response.status, response.headers, await response.read()

        status, headers, body = await exchange("HEAD", "/head")
        assert (status, headers["Content-Length"], body) == (200, "50", b"")
        status, headers, body = await exchange("GET", "/204")
        assert (status, body) == (204, b"") and "Transfer-Encoding" not in headers
        status, headers, body = await exchange("GET", "/304")
        assert (status, headers["ETag"], body) == (304, '"e"', b"")
        _, headers, _ = await exchange("GET", "/cookies")
        assert headers.getall("Set-Cookie") == ["a=1", "b=2"]
        _, headers, body = await exchange("GET", "/gzip")
        assert (headers["Content-Encoding"], headers["Content-Length"], body) == ("gzip", str(len(compressed)),
                                                                                  compressed)  # fmt: skip
        status, headers, body = await exchange("GET", "/redirect")
        assert (status, headers["Location"]) == (302, "/elsewhere")
        _, headers, body = await exchange("POST", "/echo", data=pieces())
        assert (headers["X-TE"], headers["X-CL"], body) == ("chunked", "-", b"abcdef")
        _, headers, body = await exchange("POST", "/echo", data=b"abcdef")
        assert (headers["X-TE"], headers["X-CL"], body) == ("-", "6", b"abcdef")
        # no Content-Type added to a body sent without one, or to a POST with no body
        _, headers, _ = await exchange("POST", "/echo", data=b"abc", skip_auto_headers=("Content-Type",))
        assert headers["X-CT"] == "-"
        _, headers, _ = await exchange("POST", "/echo", skip_auto_headers=("Content-Type",))
        assert headers["X-CT"] == "-"
        _, headers, _ = await exchange("POST", "/echo", data=b"{}", headers={"Content-Type": "application/json"})
        assert headers["X-CT"] == "application/json"


async def test_a_response_gains_no_header_its_upstream_did_not_send(
    http: aiohttp.ClientSession, app_server: AppServer, no_leaks: None
) -> None:
    """An upstream that sends no Content-Type, Date or Server: the client's response has none either (aiohttp
    would add application/octet-stream, its clock and its name), with a length, chunked, or until close."""
    answers = {b"/length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
               b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
               b"/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhi"}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        path = (await reader.readline()).split()[1]
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(answers[path])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        for path in ("/length", "/chunked", "/close"):
            async with http.get(f"http://127.0.0.1:{app_server.proxy_port}{path}", headers=stamped(host)) as response:
                assert await response.read() == b"hi"
                assert not [name for name in ("Content-Type", "Date", "Server") if name in response.headers], path
    finally:
        server.close()
        await server.wait_closed()


async def test_a_websocket_handshake_gains_no_header_its_upstream_did_not_send(
    app_server: AppServer, no_leaks: None
) -> None:
    """An upstream whose 101 has no Date or Server: neither has the client's, and its own headers are there."""
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = b""
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        digest = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + digest + b"\r\nX-Up: 1\r\n\r\n")  # fmt: skip
        await reader.read()  # until the proxy hangs up
        writer.close()

    upstream = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        host = f"127.0.0.1:{upstream.sockets[0].getsockname()[1]}"
        status, lines = await raw_handshake(app_server.proxy_port, host, list(redirect_headers(host).items()))
        names = {name.lower(): value for name, value in lines}
        assert status == 101 and names.get("x-up") == "1"
        assert "date" not in names and "server" not in names
    finally:
        upstream.close()
        await upstream.wait_closed()


async def test_an_unreachable_upstream_is_502_saying_why(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    host = f"127.0.0.1:{free_port()}"
    async with http.get(f"http://127.0.0.1:{app_server.proxy_port}/time", headers=stamped(host)) as response:
        assert response.status == 502
        assert f"upstream http://{host}/time could not be reached" in await response.text()


async def test_an_upstream_reset_mid_body_drops_the_client(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream
) -> None:
    """An upstream that drops its connection mid-body: the client's response ends the same way, unfinished."""
    async with http.get(f"http://127.0.0.1:{app_server.proxy_port}/reset",
                        headers=stamped(http_upstream.host)) as response:  # fmt: skip
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_a_client_that_goes_away_cancels_the_upstream_request(
    http: aiohttp.ClientSession, app_server: AppServer, http_upstream: HttpUpstream
) -> None:
    """A client gone mid-stream: the upstream's response is abandoned too (nothing left open: no_leaks)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", app_server.proxy_port)
    head = [f"GET /stream HTTP/1.1", f"Host: {http_upstream.host}",
            *(f"{k}: {v}" for k, v in stamped(http_upstream.host).items())]  # fmt: skip
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    assert b"data: first" in await asyncio.wait_for(reader.readuntil(b"data: first\n\n"), 5)
    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(http_upstream.cancelled.wait(), 5)  # the proxy closed its upstream connection


@pytest.mark.parametrize("headers, problem", [
    ({"Ably-Test-Host": "x:1", "Ably-Test-Proto": "gopher"}, "must be 'http' or 'https'"),
    ({"Ably-Test-Host": "", "Ably-Test-Proto": "http"}, "bad Ably-Test-Host header"),
])  # fmt: skip
async def test_bad_stamps_are_400(
    http: aiohttp.ClientSession, app_server: AppServer, headers: dict[str, str], problem: str
) -> None:
    async with http.get(f"http://127.0.0.1:{app_server.proxy_port}/", headers=headers) as response:
        assert response.status == 400 and problem in await response.text()


async def test_route_flag_sends_matching_hosts_elsewhere(
    http: aiohttp.ClientSession, http_upstream: HttpUpstream, upstream: UpstreamServer, no_leaks: None
) -> None:
    """--route '*.ably.test=…': HTTP and WebSocket requests for any matching host reach the local server
    (http/ws by the request's kind), path and query intact; other hosts are left alone."""
    config = make_config(routes=(("*.ably.test", URL(f"http://{http_upstream.host}")),
                                 ("realtime.example", URL(f"http://{upstream.host}"))))  # fmt: skip
    async with running_app_server(config) as server:
        async with http.get(f"http://127.0.0.1:{server.proxy_port}/time?x=1",
                            headers=redirect_headers("main.a.fallback.ably.test", "https")) as response:  # fmt: skip
            assert response.status == 207
        assert http_upstream.seen[-1][1] == "/time?x=1"
        client = await connect_client(http, server.proxy_port, "realtime.example:443", "/?v=6")
        request, ws = await upstream.next()
        assert request.raw_path == "/?v=6"
        await close_cleanly(client, ws)


def test_route_flag_parsing() -> None:
    assert from_args(["--route", "*.ABLY.net=http://127.0.0.1:9000", "--route", "x=wss://h:1"]).routes == (
        ("*.ably.net", URL("http://127.0.0.1:9000")), ("x", URL("wss://h:1")))  # fmt: skip
    for bad in ("no-equals", "=http://h:1", "a=ftp://h"):
        with pytest.raises(SystemExit):
            from_args(["--route", bad])
