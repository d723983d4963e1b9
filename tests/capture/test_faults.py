"""Faults, each a test: peers and mitmdump killed mid-stream, the app server stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any, AsyncIterator

import json

import aiohttp
import pytest
import websockets
import websockets.asyncio.server
from aiohttp import WSMsgType

from appserver.app import AppServer
from shared.client import InterceptionClient
from tests.mitm_helpers import free_port, pids_with_arg, ws_connect_via_proxy
from tests.peers import Suite, UpstreamServer, connect_client, receive, receive_data, redirect_headers
from tests.sdk_fixtures import mitmdump_stack, start_local_or_skip  # noqa: F401  (mitmdump_stack: a fixture)

ECHO_UPSTREAM = textwrap.dedent(
    """
    import asyncio, sys
    from aiohttp import web

    async def echo(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    async def main():
        app = web.Application()
        app.router.add_get("/", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)

CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    import aiohttp

    async def main():
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(sys.argv[1], headers=json.loads(sys.argv[2]))
            await ws.send_str("hello from a process")
            print("sent", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def spawn(code: str, *args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 15)
    return proc


@pytest.fixture
async def echo_process(no_leaks: None) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    port = free_port()
    proc = await spawn(ECHO_UPSTREAM, str(port))
    try:
        yield proc, port
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def test_upstream_killed_mid_stream(
    http: aiohttp.ClientSession, app_server: AppServer, echo_process: tuple[Any, int]
) -> None:
    """The upstream process SIGKILLed mid-stream: the client sees an abrupt drop and nothing hangs."""
    proc, port = echo_process
    client = await connect_client(http, app_server.proxy_port, f"127.0.0.1:{port}")
    for i in range(20):
        await client.send_str(f"m{i}")
    assert len(await receive_data(client, 5)) == 5
    proc.send_signal(signal.SIGKILL)
    async with asyncio.timeout(10):
        while (msg := await client.receive()).type in (WSMsgType.TEXT, WSMsgType.BINARY):
            pass
    assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR), f"expected an abrupt drop, got {msg}"
    async with asyncio.timeout(5):
        while app_server.registry.connections:
            await asyncio.sleep(0.02)


async def test_client_killed_mid_stream(
    app_server: AppServer, upstream: UpstreamServer
) -> None:
    """The client process SIGKILLed: the upstream sees an abrupt drop, not a close frame."""
    import json

    proc = await spawn(
        CLIENT, f"http://127.0.0.1:{app_server.proxy_port}/", json.dumps(redirect_headers(upstream.host))
    )
    try:
        _, server = await upstream.next()
        assert (await receive(server)).data == "hello from a process"
        proc.send_signal(signal.SIGKILL)
        msg = await receive(server, timeout=10)
        assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR), f"expected an abrupt drop, got {msg}"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def test_mitmdump_killed_with_open_connections(
    stack: AppServer, intercepting_suite: Suite, upstream: UpstreamServer, confdir: Path
) -> None:
    """mitmdump killed while a connection is open: the client and the upstream both see an abrupt drop;
    the next startInterception starts a new mitmdump and traffic flows again."""
    async with ws_connect_via_proxy(f"ws://{upstream.host}/", stack.config.mitmproxy_port) as client:
        _, server = await upstream.next()
        [pid] = pids_with_arg(str(confdir))
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(websockets.ConnectionClosedError) as caught:
            await asyncio.wait_for(client.recv(), 10)
        assert caught.value.rcvd is None
        assert (await receive(server, timeout=10)).type in (WSMsgType.CLOSED, WSMsgType.ERROR)
    response = await intercepting_suite.request("startInterception", {"mode": "proxy"}, timeout=60)
    assert response["result"] == {}
    assert pids_with_arg(str(confdir)) not in ([], [pid])
    async with ws_connect_via_proxy(f"ws://{upstream.host}/", stack.config.mitmproxy_port) as client:
        _, server = await upstream.next()
        await client.send("after recovery")
        assert (await receive(server)).data == "after recovery"
        await server.send_frame(b"\x03\xe8", WSMsgType.CLOSE)
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(client.recv(), 5)


async def test_sigterm_stops_mitmdump_too(tmp_path: Path, no_leaks: None) -> None:
    """SIGTERM to an app server that started mitmdump: mitmdump is stopped and the exit code is 0."""
    confdir = tmp_path / "conf"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver", "--start-mitmproxy", "proxy", "--mitmproxy-confdir", str(confdir),
        "--control-port", str(free_port()), "--proxy-port", str(free_port()),
        "--mitmproxy-port", str(free_port()),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(60):
            while b"mitmproxy is intercepting" not in await proc.stderr.readline():
                pass
        assert pids_with_arg(str(confdir)) != []
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.communicate()
        assert proc.returncode == 0
        assert pids_with_arg(str(confdir)) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


CAPTURED = textwrap.dedent(
    """
    import asyncio, json, sys, websockets

    async def watch(name, conn):
        try:
            await asyncio.wait_for(conn.wait_closed(), 20)
        except TimeoutError:
            return {name: "hung"}
        rcvd = conn.protocol.close_rcvd
        return {name: None if rcvd is None else [rcvd.code, rcvd.reason]}

    async def main():
        control_url, upstream_url = sys.argv[1], sys.argv[2]
        sys.stdin.readline()  # "go": capture applies to sockets created after it started
        async with websockets.connect(control_url, proxy=None) as control, \\
                websockets.connect(upstream_url, proxy=None) as ws:
            await ws.send("through?")
            print(json.dumps({"echo": await ws.recv()}), flush=True)
            ends = await asyncio.gather(watch("control", control), watch("ws", ws))
            print(json.dumps({k: v for end in ends for k, v in end.items()}), flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("how", ["mode switch", "shutdown"])
async def test_stopping_local_mitmdump_ends_what_runs_through_it(
    mitmdump_stack: AppServer, how: str
) -> None:
    """Local mode: when the app server stops mitmdump (to switch mode, or shutting down), the captured process
    sees its WebSocket and its control connection end at once: the WebSocket dropped (or 1001 on shutdown),
    the control connection closed with 1012 'interception is restarting' (1001 on shutdown), nothing hangs."""
    async def echo(ws: websockets.asyncio.server.ServerConnection) -> None:
        async for message in ws:
            await ws.send(f"echo:{message!s}")

    async with websockets.serve(echo, "127.0.0.1", 0) as upstream:
        upstream_url = f"ws://127.0.0.1:{upstream.sockets[0].getsockname()[1]}/"
        control_url = f"ws://127.0.0.1:{mitmdump_stack.control_port}/"
        captured = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CAPTURED, control_url, upstream_url,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)  # fmt: skip
        assert captured.stdin is not None and captured.stdout is not None
        suite = await InterceptionClient.connect(control_url)
        try:
            await start_local_or_skip(suite, captured.pid)
            captured.stdin.write(b"go\n")
            await captured.stdin.drain()
            assert json.loads(await asyncio.wait_for(captured.stdout.readline(), 20)) == {"echo": "echo:through?"}
            registry = mitmdump_stack.registry  # the suite's and the captured one's (and mitmdump's own)
            assert len(registry.controls - {registry.mitmproxy_channel}) == 2
            if how == "mode switch":
                await suite.start_interception("proxy")
            else:
                await mitmdump_stack.stop()
            ends = json.loads(await asyncio.wait_for(captured.stdout.readline(), 30))
        finally:
            await suite.close()
            if captured.returncode is None:
                captured.kill()
            await captured.wait()
    if how == "mode switch":
        assert ends == {"control": [1012, "interception is restarting: mitmproxy is stopping"], "ws": None}
    else:
        assert ends == {"control": [1001, "app server shutting down"], "ws": [1001, "app server shutting down"]}
