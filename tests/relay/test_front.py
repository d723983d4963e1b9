"""Plain HTTP relayed below aiohttp (relay/front.py, relay/pool.py): which requests it takes, the bytes each
side gets, kept-alive and pipelined connections, and the hand-over to aiohttp of every other request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from appserver.app import AppServer
from appserver.relay.front import parse_head, request_bytes
from multidict import CIMultiDict
from tests.mitm_helpers import run_app
from tests.peers import Suite, UpstreamServer, close_cleanly, connect_client, suite_connection
from tests.structure.rooms import Walk
from tests.rules.test_rules_relay import add


# -- which heads it takes -------------------------------------------------------------------------------------


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_plain_methods_are_taken(method: str) -> None:
    parsed = parse_head(head(f"{method} /a?b=c HTTP/1.1", "Host: h", "Content-Length: 3", "X-A: 1"))
    assert parsed is not None
    assert (parsed.method, parsed.raw_path, parsed.host, parsed.length) == (method, "/a?b=c", "h", 3)
    assert parsed.headers.getall("x-a") == ["1"] and parsed.keep_alive


@pytest.mark.parametrize("data", [
    head("HEAD / HTTP/1.1", "Host: h"),
    head("CONNECT h:443 HTTP/1.1", "Host: h:443"),
    head("GET / HTTP/1.0", "Host: h"),
    head("GET http://h/ HTTP/1.1", "Host: h"),
    head("GET / HTTP/1.1"),
    head("GET / HTTP/1.1", "Host: h", "Upgrade: websocket", "Connection: Upgrade"),
    head("POST / HTTP/1.1", "Host: h", "Transfer-Encoding: chunked"),
    head("POST / HTTP/1.1", "Host: h", "Content-Length: 3", "Expect: 100-continue"),
    head("POST / HTTP/1.1", "Host: h", "Content-Length: 3", "Content-Length: 3"),
    head("POST / HTTP/1.1", "Host: h", "Content-Length: +3"),
    head("GET / HTTP/1.1", "Host: h", "Bad Header: x"),
    b"NOT HTTP\r\n\r\n",
    head("GET / HTTP/1.1", "Host : h"),
    head("GET / HTTP/1.1", "Host: h", "X-A: 1", " folded"),
    head("GET / HTTP/1.1", "Host: h", "X-A: a\x01b"),
    head("GET / HTTP/1.1", "Host: h\nX-A: 1"),
    head("GET /a#frag HTTP/1.1", "Host: h"),
    head("GET /a b HTTP/1.1", "Host: h"),
    head("GET / HTTP/1.1", "Host: h", "Host: i"),
    head("POST / HTTP/1.1", "Host: h", "Content-Length: 0", "Content-Length: 0"),
], ids=["HEAD", "CONNECT", "HTTP/1.0", "absolute-form", "no Host", "upgrade", "chunked body", "Expect",
        "two lengths", "signed length", "bad header", "not HTTP", "space before colon", "obs-fold",
        "control character", "bare LF", "fragment", "space in target", "two Hosts", "two zero lengths"])  # fmt: skip
def test_other_heads_are_aiohttps(data: bytes) -> None:
    assert parse_head(data) is None


def test_header_values_lose_their_surrounding_whitespace_and_keep_obs_text() -> None:
    parsed = parse_head(b"GET / HTTP/1.1\r\nHost:h\r\nX-A: \t caf\xc3\xa9 \xff \t\r\nX-B:\r\n\r\n")
    assert parsed is not None and parsed.host == "h"
    assert parsed.headers["X-A"].encode("utf-8", "surrogateescape") == b"caf\xc3\xa9 \xff"
    assert parsed.headers["X-B"] == ""


def test_connection_close_is_not_kept_alive() -> None:
    parsed = parse_head(head("GET / HTTP/1.1", "Host: h", "Connection: close"))
    assert parsed is not None and not parsed.keep_alive


def test_the_upstream_request_is_framed_as_aiohttps_client_frames_it() -> None:
    headers = CIMultiDict([("X-A", "1"), ("x-a", "2")])
    assert request_bytes("GET", URL("http://h:80/p?q=1"), headers, 0, False) == (
        b"GET /p?q=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n")  # fmt: skip
    assert request_bytes("POST", URL("https://h:8443/"), CIMultiDict(), 0, False) == (
        b"POST / HTTP/1.1\r\nHost: h:8443\r\nContent-Length: 0\r\n\r\n")  # fmt: skip
    assert request_bytes("PUT", URL("http://[::1]:9/"), CIMultiDict(), 5, True).endswith(
        b"Host: [::1]:9\r\nContent-Length: 5\r\n\r\n")  # fmt: skip


# -- a raw upstream: the bytes the proxy sends, the bytes it is answered with --------------------------------


class RawUpstream:
    """Reads each request (head, and a Content-Length body) and answers it with ``answer(request)``'s bytes;
    a None answer closes the connection without one."""

    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.close_after = False  # each answer, then the connection closes

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        try:
            while True:
                data = await reader.readuntil(b"\r\n\r\n")
                for line in data.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        data += await reader.readexactly(int(line.split(b":", 1)[1]))
                self.requests.append(data)
                reply = self.answer(data)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@contextlib.asynccontextmanager
async def raw_upstream(answer: Callable[[bytes], bytes | None]) -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream(answer)
    upstream.server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    try:
        yield upstream
    finally:
        for writer in upstream.writers:
            writer.close()
        upstream.server.close()
        await upstream.server.wait_closed()


def stamps(host: str) -> str:
    return f"Ably-Test-Host: {host}\r\nAbly-Test-Proto: http\r\n"


async def exchange(port: int, data: bytes, until: bytes, timeout: float = 5) -> bytes:
    """Send ``data`` on a new connection to the proxy endpoint; what comes back up to and with ``until``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.readuntil(until), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


OK = b"HTTP/1.1 299 Quite Fine\r\nX-Up: 1\r\nContent-Length: 5\r\n\r\nhello"


async def test_the_upstream_gets_the_request_with_its_headers_and_body_and_no_others(
    app_server: AppServer) -> None:  # fmt: skip
    async with raw_upstream(lambda _: OK) as up:
        sent = (f"POST /p?q=1 HTTP/1.1\r\nHost: rest.example\r\n{stamps(up.host)}X-Mine: a\r\nConnection: x-hop\r\n"
                f"X-Hop: gone\r\nContent-Length: 4\r\n\r\nbody").encode()  # fmt: skip
        got = await exchange(app_server.proxy_port, sent, b"hello")
        host = up.host
    assert up.requests == [f"POST /p?q=1 HTTP/1.1\r\nHost: {host}\r\nX-Mine: a\r\nContent-Length: 4\r\n\r\n"
                           "body".encode()]  # fmt: skip
    # the answer as the upstream gave it: its reason, its headers, its length, and nothing added (no Date, Server)
    assert got == OK


@pytest.mark.parametrize("answer, body", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", b"until the end"),
], ids=["chunked", "close-delimited"])  # fmt: skip
async def test_a_body_without_a_length_reaches_the_client_chunked(
    app_server: AppServer, answer: bytes, body: bytes
) -> None:  # fmt: skip
    async with raw_upstream(lambda _: answer) as up:
        up.close_after = b"chunked" not in answer  # close-delimited: the body ends with the connection
        got = await exchange(app_server.proxy_port, f"GET / HTTP/1.1\r\nHost: x\r\n{stamps(up.host)}\r\n".encode(),
                             b"0\r\n\r\n")  # fmt: skip
    head, _, chunks = got.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert dechunk(chunks) == body


def dechunk(data: bytes) -> bytes:
    body = b""
    while True:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return body
        body += rest[:n]
        data = rest[n + 2:]


async def test_kept_alive_requests_share_one_upstream_connection_and_pipelined_ones_keep_their_order(
    app_server: AppServer) -> None:  # fmt: skip
    def answer(request: bytes) -> bytes:
        path = request.split(b" ", 2)[1]
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path)

    async with raw_upstream(answer) as up:
        one = f"GET /{{}} HTTP/1.1\r\nHost: x\r\n{stamps(up.host)}\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", app_server.proxy_port)
        try:
            writer.write(one.format("a").encode())
            assert (await asyncio.wait_for(reader.readuntil(b"/a"), 5)).endswith(b"\r\n\r\n/a")
            writer.write("".join(one.format(n) for n in "bcd").encode())  # three at once
            got = await asyncio.wait_for(reader.readuntil(b"/d"), 5)
            assert [part[-2:] for part in got.split(b"HTTP/1.1 ")[1:]] == [b"/b", b"/c", b"/d"]
        finally:
            writer.close()
            await writer.wait_closed()
    assert up.accepted == 1


async def test_a_kept_connection_the_upstream_closed_is_replaced(app_server: AppServer) -> None:
    """The upstream closes its side after answering (while the pool keeps it): the next request goes on a new
    connection, not to a 502."""
    async with raw_upstream(lambda _: OK) as up:
        request = f"GET / HTTP/1.1\r\nHost: x\r\n{stamps(up.host)}\r\n".encode()
        assert await exchange(app_server.proxy_port, request, b"hello") == OK
        for writer in up.writers:
            writer.close()  # the upstream's keep-alive ends
        await asyncio.sleep(0.05)
        assert await exchange(app_server.proxy_port, request, b"hello") == OK
    assert up.accepted == 2


async def test_a_request_body_that_comes_in_pieces_goes_on_as_it_comes(app_server: AppServer) -> None:
    async with raw_upstream(lambda _: OK) as up:
        reader, writer = await asyncio.open_connection("127.0.0.1", app_server.proxy_port)
        try:
            writer.write(f"PUT /b HTTP/1.1\r\nHost: x\r\n{stamps(up.host)}Content-Length: 20000\r\n\r\n".encode())
            for i in range(20):
                writer.write(bytes([65 + i]) * 1000)
                await writer.drain()
                await asyncio.sleep(0.005)
            assert await asyncio.wait_for(reader.readuntil(b"hello"), 5) == OK
        finally:
            writer.close()
            await writer.wait_closed()
    assert up.requests[0].endswith(b"\r\n\r\n" + b"".join(bytes([65 + i]) * 1000 for i in range(20)))


async def test_an_upstream_that_cannot_be_reached_is_a_502_a_browser_may_read(app_server: AppServer) -> None:
    async with raw_upstream(lambda _: OK) as up:
        host = up.host
    got = await exchange(app_server.proxy_port,
                         f"GET /t HTTP/1.1\r\nHost: x\r\n{stamps(host)}Origin: http://page\r\n\r\n".encode(),
                         b"could not be reached")  # fmt: skip
    assert got.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Access-Control-Allow-Origin: http://page\r\n" in got and b"Server: " in got


async def test_after_plain_requests_an_upgrade_on_the_same_connection_is_handed_to_aiohttp(
    app_server: AppServer, upstream: UpstreamServer
) -> None:  # fmt: skip
    """aiohttp serves the connection from the upgrade on: its WebSocket is relayed as any other."""
    async with raw_upstream(lambda _: OK) as up:
        reader, writer = await asyncio.open_connection("127.0.0.1", app_server.proxy_port)
        try:
            writer.write(f"GET / HTTP/1.1\r\nHost: x\r\n{stamps(up.host)}\r\n".encode())
            assert await asyncio.wait_for(reader.readuntil(b"hello"), 5) == OK
            writer.write((f"GET /?v=6 HTTP/1.1\r\nHost: x\r\nAbly-Test-Host: {upstream.host}\r\n"
                          "Ably-Test-Proto: ws\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                          ).encode())  # fmt: skip
            request, ws = await upstream.next()
            assert request.raw_path == "/?v=6"
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 101")
            await ws.send_str("hi")
            assert (await asyncio.wait_for(reader.readexactly(4), 5)) == b"\x81\x02hi"
            await ws.close()
        finally:
            writer.close()
            await writer.wait_closed()


async def test_with_an_http_rule_the_request_is_aiohttps_and_the_rule_answers(
    app_server: AppServer, suite: Suite
) -> None:  # fmt: skip
    """A rule that may change a request takes it from the relay below aiohttp (which never asks anyone)."""
    await add(suite, {"id": "r", "match": {"event": "http"}, "action": {"type": "respond", "status": 418}})
    async with raw_upstream(lambda _: OK) as up:
        request = f"GET / HTTP/1.1\r\nHost: x\r\n{stamps(up.host)}\r\n".encode()
        assert (await exchange(app_server.proxy_port, request, b"\r\n\r\n")).startswith(b"HTTP/1.1 418")
        assert not up.requests
        assert "result" in await suite.request("removeRules", {"ids": ["r"]})
        assert await exchange(app_server.proxy_port, request, b"hello") == OK


async def test_a_websocket_still_goes_through_after_the_hand_over(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:  # fmt: skip
    client = await connect_client(http, app_server.proxy_port, upstream.host, "/?v=6")
    _, ws = await upstream.next()
    await client.send_str("x")
    assert (await ws.receive()).data == "x"
    await close_cleanly(client, ws)


@pytest.mark.parametrize("ruled", [False, True], ids=["below aiohttp", "through aiohttp"])
async def test_the_relay_keeps_no_cookies(
    http: aiohttp.ClientSession, app_server: AppServer, suite: Suite, ruled: bool
) -> None:  # fmt: skip
    """A Set-Cookie an upstream (a named host) sends one client is not sent back on a later request, on either
    path (aiohttp's client would keep it in its cookie jar and add it)."""
    if ruled:  # a rule that matches none of these requests: they go through aiohttp's client
        await add(suite, {"match": {"event": "http", "path": "/never"}, "action": {"type": "respond", "status": 404}})
    cookies: list[str | None] = []

    async def set_cookie(request: web.Request) -> web.Response:
        return web.Response(text="set", headers={"Set-Cookie": "session=secret; Path=/"})

    async def look(request: web.Request) -> web.Response:
        cookies.append(request.headers.get("Cookie"))
        return web.Response(text="looked")

    app = web.Application()
    app.router.add_get("/set", set_cookie)
    app.router.add_get("/look", look)
    async with run_app(app) as port:
        stamps = {"Ably-Test-Host": f"localhost:{port}", "Ably-Test-Proto": "http"}
        for path in ("/set", "/look"):
            async with http.get(f"http://127.0.0.1:{app_server.proxy_port}{path}", headers=stamps) as response:
                assert response.status == 200, await response.text()
    assert cookies == [None]


async def test_a_client_that_does_not_read_holds_the_upstream_back_and_gets_every_byte(app_server: AppServer) -> None:
    """Backpressure: while the client reads nothing, the upstream's writes stall (the proxy stops reading it
    rather than buffer the body); once the client reads, every byte arrives in order."""
    size = 64 * 1024 * 1024
    block = bytes(range(256)) * 256  # 64 KiB
    wrote = 0
    finished = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal wrote
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        try:
            while wrote < size:
                writer.write(block)
                await writer.drain()
                wrote += len(block)
            finished.set()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    reader, writer = await asyncio.open_connection("127.0.0.1", app_server.proxy_port, limit=1 << 20)
    try:
        writer.write(f"GET /big HTTP/1.1\r\nHost: x\r\n{stamps(host)}\r\n".encode())
        await asyncio.sleep(1.0)  # not reading
        assert not finished.is_set() and wrote < size // 2, wrote
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200 OK")
        got = 0
        while got < size:
            data = await asyncio.wait_for(reader.read(1 << 20), 10)
            assert data, f"ended after {got} bytes"
            assert data == _expected(block, got, len(data)), f"wrong bytes after {got}"
            got += len(data)
        assert got == size
        await asyncio.wait_for(finished.wait(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()


def _expected(block: bytes, offset: int, length: int) -> bytes:
    start = offset % len(block)
    reps = (start + length) // len(block) + 1
    return (block * reps)[start:start + length]


async def test_an_upstream_that_does_not_read_holds_the_clients_body_back(app_server: AppServer) -> None:
    """The other way: while the upstream reads nothing of a large request body, the proxy stops reading the
    client (its writes stall); once the upstream reads, the body arrives whole."""
    size = 64 * 1024 * 1024
    reading = asyncio.Event()
    received = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await reader.readuntil(b"\r\n\r\n")
        await reading.wait()
        while received < size:
            data = await reader.read(1 << 20)
            if not data:
                break
            received += len(data)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    reader, writer = await asyncio.open_connection("127.0.0.1", app_server.proxy_port)
    sent = 0
    try:
        writer.write(f"POST /up HTTP/1.1\r\nHost: x\r\n{stamps(host)}Content-Length: {size}\r\n\r\n".encode())

        async def send_all() -> None:
            nonlocal sent
            block = b"z" * (1 << 20)
            while sent < size:
                writer.write(block)
                await writer.drain()
                sent += len(block)

        sending = asyncio.create_task(send_all())
        await asyncio.sleep(1.0)
        assert not sending.done() and sent < size // 2, sent
        reading.set()
        await asyncio.wait_for(sending, 20)
        assert (await asyncio.wait_for(reader.readuntil(b"done"), 10)).startswith(b"HTTP/1.1 200 OK")
        assert received == size
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()


async def test_a_direct_sessions_port_relays_below_aiohttp_and_its_connections_stay_with_it(
    http: aiohttp.ClientSession, app_server: AppServer
) -> None:  # fmt: skip
    """A direct session's own port is read by relay/front.py too. Once the session is closed, a connection that
    carried a request goes on with it — below aiohttp, and handed to aiohttp (a HEAD) alike — while one that
    carried none yet is told the session has ended, as aiohttp's listener answers it."""
    def answer(request: bytes) -> bytes:
        return OK[: -len(b"hello")] if request.startswith(b"HEAD") else OK  # a HEAD's answer has no body

    async with raw_upstream(answer) as up, suite_connection(http, app_server.control_port) as owner:
        opened = await owner.request("openSession", {"mode": "direct", "upstream": f"ws://{up.host}/"})
        port = opened["result"]["proxyPort"]
        used = await asyncio.open_connection("127.0.0.1", port)
        fresh = await asyncio.open_connection("127.0.0.1", port)
        try:
            with Walk() as walk:
                used[1].write(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
                assert await asyncio.wait_for(used[0].readuntil(b"hello"), 5) == OK
            assert "appserver/relay/front.py" in walk.files and "appserver/relay/http.py" not in walk.files
            assert (await owner.request("closeSession", {}))["result"] == {}
            used[1].write(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(used[0].readuntil(b"hello"), 5) == OK
            used[1].write(b"HEAD /three HTTP/1.1\r\nHost: x\r\n\r\n")  # aiohttp's from here on
            assert (await asyncio.wait_for(used[0].readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 299")
            fresh[1].write(b"GET /four HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"this test session has ended" in await asyncio.wait_for(fresh[0].readuntil(b"ended"), 5)
        finally:
            for _, writer in (used, fresh):
                writer.close()
                await writer.wait_closed()
    assert [r.split(b" ")[1] for r in up.requests] == [b"/one", b"/two", b"/three"]


async def test_an_upstream_that_answers_garbage_is_a_502(app_server: AppServer) -> None:
    async with raw_upstream(lambda _: b"NOT HTTP AT ALL\r\n\r\n") as up:
        got = await exchange(app_server.proxy_port, f"GET / HTTP/1.1\r\nHost: x\r\n{stamps(up.host)}\r\n".encode(),
                             b"could not be reached")  # fmt: skip
    assert got.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


async def test_a_client_gone_before_the_answer_closes_the_upstream_request(app_server: AppServer) -> None:
    """The upstream has the request and has not answered: the client goes, and so does the proxy's upstream
    connection (the upstream sees it close), with nothing left behind (no_leaks)."""
    got_request = asyncio.Event()
    upstream_saw_close = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        got_request.set()
        if not await reader.read(1):  # never answers; EOF when the proxy hangs up
            upstream_saw_close.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", app_server.proxy_port)
        writer.write(f"GET /slow HTTP/1.1\r\nHost: x\r\n{stamps(host)}\r\n".encode())
        await asyncio.wait_for(got_request.wait(), 5)
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(upstream_saw_close.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()
