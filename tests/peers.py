"""Real peers on loopback for the tests: a scriptable upstream WebSocket server,
a client that goes through the app server, and a minimal test suite.

Every peer here uses aiohttp with autoping and autoclose off, so the tests
see exactly the frames that arrive, pings and close frames included.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import WSMsgType, web

from shared.constants import HEADER_TEST_HOST, HEADER_TEST_PROTO


class UpstreamServer:
    """A WebSocket server whose accepted sockets the test drives itself.

    ``refuse_with`` answers upgrades with that HTTP status instead.
    """

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[tuple[web.Request, web.WebSocketResponse]] = asyncio.Queue()
        self.refuse_with: int | None = None
        self.protocols: tuple[str, ...] = ()
        self.compress = True
        self.ssl_context: Any = None
        self.bind_host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._done: asyncio.Event = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_with is not None:
            return web.Response(status=self.refuse_with, text="refused by test upstream")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            # Plain HTTP: describe the request, so tests can see what arrived.
            body = await request.text()
            return web.json_response(
                {"method": request.method, "path": request.raw_path, "body": body, "headers": dict(request.headers)},
                status=201 if request.method == "POST" else 200,
                headers={"X-Upstream": "yes"},
            )
        ws = web.WebSocketResponse(
            autoclose=False, autoping=False, protocols=self.protocols, compress=self.compress, max_msg_size=0
        )
        ws.headers["X-Upstream-Handshake"] = "yes"
        await ws.prepare(request)
        await self.accepted.put((request, ws))
        # The test owns the socket until its peer goes away or the server stops.
        while not self._done.is_set() and request.transport is not None and not request.transport.is_closing():
            try:
                await asyncio.wait_for(self._done.wait(), 0.5)
            except TimeoutError:
                pass
        return ws

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind_host, 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self._done.set()
        while not self.accepted.empty():
            _, ws = self.accepted.get_nowait()
            ws._writer.transport.abort()  # type: ignore[union-attr]
        if self._runner is not None:
            await self._runner.cleanup()

    async def next(self, timeout: float = 5) -> tuple[web.Request, web.WebSocketResponse]:
        async with asyncio.timeout(timeout):
            return await self.accepted.get()

    @property
    def host(self) -> str:
        return f"[{self.bind_host}]:{self.port}" if ":" in self.bind_host else f"{self.bind_host}:{self.port}"


def redirect_headers(host: str, proto: str = "ws") -> dict[str, str]:
    """The headers the redirector would stamp."""
    return {HEADER_TEST_HOST: host, HEADER_TEST_PROTO: proto}


async def connect_client(
    session: aiohttp.ClientSession,
    proxy_port: int,
    upstream_host: str,
    path: str = "/",
    **kwargs: Any,
) -> aiohttp.ClientWebSocketResponse:
    """A client WebSocket to the app server's proxy endpoint, as mitmproxy would send it."""
    headers = {**redirect_headers(upstream_host), **kwargs.pop("headers", {})}
    return await session.ws_connect(
        f"http://127.0.0.1:{proxy_port}{path}",
        headers=headers,
        autoclose=False,
        autoping=False,
        max_msg_size=0,
        **kwargs,
    )


async def receive(ws: Any, timeout: float = 5) -> aiohttp.WSMessage:
    async with asyncio.timeout(timeout):
        return await ws.receive()  # type: ignore[no-any-return]


async def receive_data(ws: Any, count: int, timeout: float = 10) -> list[str | bytes]:
    out: list[str | bytes] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            msg = await ws.receive()
            assert msg.type in (WSMsgType.TEXT, WSMsgType.BINARY), f"expected data, got {msg}"
            out.append(msg.data)
    return out


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class Suite:
    """A minimal test suite on the control API: calls methods, answers our requests."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.on_transform: Handler | None = None
        self.notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.transform_requests: list[dict[str, Any]] = []
        self.handlers: dict[str, Handler] = {}  # answers to our other requests, by method
        self.other_requests: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.ensure_future(self._read())
        self._tasks: set[asyncio.Task[None]] = set()

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            payload = json.loads(msg.data)
            if isinstance(payload, list) and payload and all(
                isinstance(item, dict) and "method" in item and "id" not in item for item in payload
            ):  # a batch of notifications (ruleMatched)
                for item in payload:
                    self.notifications.put_nowait(item)
                continue
            if isinstance(payload, dict) and "method" in payload and "id" in payload:
                task = asyncio.ensure_future(self._answer(payload))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(payload, dict) and "method" in payload:
                self.notifications.put_nowait(payload)
            elif isinstance(payload, dict) and payload.get("id") in self._pending:
                self._pending.pop(payload["id"]).set_result(payload)
            else:
                self._pending.pop(None, asyncio.get_running_loop().create_future()).set_result(payload)

    async def _answer(self, request: dict[str, Any]) -> None:
        if request["method"] != "transformInterceptedMessage":  # e.g. the HTTP dialogue (SPEC Part 4)
            self.other_requests.append(request)
            handler = self.handlers.get(request["method"])
            result = {"action": "pass"} if handler is None else await handler(request["params"])
            if result is not NO_ANSWER:
                await self.ws.send_str(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}))
            return
        self.transform_requests.append(request["params"])
        if self.on_transform is None:
            result: Any = {"action": "replace", "type": request["params"]["type"], "data": request["params"]["data"]}
        else:
            result = await self.on_transform(request["params"])
        if result is NO_ANSWER:
            return
        await self.ws.send_str(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}))

    async def request(self, method: str, params: Any = None, timeout: float = 10) -> dict[str, Any]:
        """Send a request; return the whole response object."""
        request_id = next(self._ids)
        payload: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            payload["params"] = params
        return await self.send_raw(json.dumps(payload), request_id, timeout)

    async def send_raw(self, text: str, expect_id: Any = None, timeout: float = 10) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[expect_id] = future
        await self.ws.send_str(text)
        async with asyncio.timeout(timeout):
            return await future

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(self._reader, *self._tasks, return_exceptions=True)


NO_ANSWER = object()


@contextlib.asynccontextmanager
async def suite_connection(session: aiohttp.ClientSession, control_port: int) -> AsyncIterator[Suite]:
    ws = await session.ws_connect(f"ws://127.0.0.1:{control_port}/")
    suite = Suite(ws)
    try:
        yield suite
    finally:
        await suite.close()


async def close_cleanly(client: Any, server: Any, timeout: float = 5) -> None:
    """The client closes with 1000 and the upstream answers, as well-behaved peers do."""
    await client.send_frame(b"\x03\xe8", WSMsgType.CLOSE)
    async with asyncio.timeout(timeout):
        while (await server.receive()).type is not WSMsgType.CLOSE:
            pass
        await server.send_frame(b"\x03\xe8", WSMsgType.CLOSE)
        while (await client.receive()).type is not WSMsgType.CLOSE:
            pass


class Router:
    """Hands each upstream socket to the connection whose path it carries (they arrive in any order)."""

    def __init__(self, upstream: UpstreamServer) -> None:
        self._upstream = upstream
        self._sockets: dict[str, asyncio.Future[Any]] = {}
        self._task = asyncio.ensure_future(self._route())
        self.host = upstream.host

    def _future(self, path: str) -> asyncio.Future[Any]:
        return self._sockets.setdefault(path, asyncio.get_running_loop().create_future())

    async def _route(self) -> None:
        while True:
            request, ws = await self._upstream.accepted.get()
            self._future(request.path).set_result(ws)

    async def socket_for(self, path: str) -> Any:
        async with asyncio.timeout(30):
            return await self._future(path)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def raw_handshake(
    port: int, target: str, lines: list[tuple[str, str]], via_proxy: int | None = None, path: str = "/"
) -> tuple[int, list[tuple[str, str]]]:
    """A WebSocket handshake written byte for byte (e.g. one header on several lines), straight to
    127.0.0.1:port or, with ``via_proxy``, through a CONNECT proxy on that port; the status and the
    response's header lines. The socket is closed at once: only the handshake is looked at."""
    reader, writer = await asyncio.open_connection("127.0.0.1", via_proxy or port)
    try:
        if via_proxy is not None:
            writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head
        key = base64.b64encode(os.urandom(16)).decode()
        request = [f"GET {path} HTTP/1.1", f"Host: {target}", "Upgrade: websocket", "Connection: Upgrade",
                   f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in lines)]
        writer.write(("\r\n".join(request) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [(k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in header_lines if h)]
    return int(status_line.split()[1]), headers
