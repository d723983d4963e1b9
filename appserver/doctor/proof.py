"""The proof that interception works here: a canary WebSocket and HTTP request through the chosen mode.

An app server of its own (free loopback ports) launches mitmdump as a suite's
``startInterception`` would; a loopback upstream echoes the canary. In proxy
mode the canaries use mitmdump as their proxy; in local mode a probe process
(probe.py) is captured by pid and sends them as an SDK would, addressed to
the upstream directly. The app server's trace then shows whether they came
through it. Nothing started here outlives the proof.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import websockets
from aiohttp import web

from appserver.app import AppServer
from appserver.capture.processes import free_loopback_port
from appserver.config import Config
from appserver.doctor.checks import Step
from shared.client import InterceptionClient, ProxyCallError

CANARY = "interception-proxy doctor canary"
TIMEOUT = 30.0


async def prove(mode: str, confdir: Path) -> list[Step]:
    """The steps of the end-to-end proof, in order; the first failure ends it."""
    steps: list[Step] = []
    config = Config(control_port=free_loopback_port(), proxy_port=free_loopback_port(),
                    mitmproxy_port=free_loopback_port(), mitmproxy_confdir=str(confdir),
                    ipv6_loopback=False)  # fmt: skip
    async with upstream() as port, running(config) as server:
        client = await InterceptionClient.connect(f"ws://127.0.0.1:{server.control_port}/")
        try:
            async with probe(mode, port) as child:
                pid = None if child is None else child.pid
                try:
                    await asyncio.wait_for(client.start_interception(mode, pid), TIMEOUT)
                except (ProxyCallError, TimeoutError) as exc:
                    reason = exc.proxy_message if isinstance(exc, ProxyCallError) else f"no answer in {TIMEOUT:g}s"
                    steps.append(Step(f"start interception ({mode} mode)", False, reason, _fix(mode)))
                    return steps
                steps.append(Step(f"start interception ({mode} mode)", True, _started(server, mode, pid)))
                sent = await (_through_proxy(server, port) if child is None else _from_probe(child))
            steps += await _seen(client, port, sent)
        finally:
            await client.close()
    return steps


def _started(server: AppServer, mode: str, pid: int | None) -> str:
    if mode == "proxy":
        return f"mitmdump listens on 127.0.0.1:{server.config.mitmproxy_port}, redirecting to the app server"
    return f"mitmdump captures the probe process {pid}"


def _fix(mode: str) -> str:
    if mode == "local":
        return "see the local-mode steps above (root, cgroup2, unshare); the app server's log says more"
    return "check that mitmdump runs (`.venv/bin/mitmdump --version`) and that the mitmproxy CA can be created"


@contextlib.asynccontextmanager
async def upstream() -> AsyncIterator[int]:
    """A loopback upstream: GET /doctor answers the canary, and echoes it over a WebSocket."""
    async def doctor(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(text=CANARY)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/doctor", doctor)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[AppServer]:
    server = AppServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def probe(mode: str, port: int) -> AsyncIterator[asyncio.subprocess.Process | None]:
    """Local mode's probe process (waiting for "go" on stdin), or None in proxy mode."""
    if mode != "local":
        yield None
        return
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver.doctor.probe", str(port),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)  # fmt: skip
    try:
        yield child
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


async def _through_proxy(server: AppServer, port: int) -> dict[str, Any]:
    """The canaries with mitmdump as their proxy (CONNECT for the WebSocket, as browsers do)."""
    proxy = f"http://127.0.0.1:{server.config.mitmproxy_port}"
    sent: dict[str, Any] = {}
    try:
        async with asyncio.timeout(TIMEOUT):
            async with websockets.connect(f"ws://127.0.0.1:{port}/doctor", proxy=proxy) as ws:
                await ws.send(CANARY)
                sent["ws"] = await ws.recv()
    except (OSError, websockets.WebSocketException, TimeoutError) as exc:
        sent["ws_error"] = repr(exc)
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(TIMEOUT):
            async with http.get(f"http://127.0.0.1:{port}/doctor", proxy=proxy) as response:
                sent["http"] = [response.status, await response.text()]
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        sent["http_error"] = repr(exc)
    return sent


async def _from_probe(child: asyncio.subprocess.Process) -> dict[str, Any]:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(b"go\n")
    await child.stdin.drain()
    try:
        line = await asyncio.wait_for(child.stdout.readline(), TIMEOUT * 2)
        result: dict[str, Any] = json.loads(line)
    except (TimeoutError, ValueError) as exc:
        return {"ws_error": f"the probe process said nothing usable: {exc!r}", "http_error": "(same)"}
    return result


async def _seen(client: InterceptionClient, port: int, sent: dict[str, Any]) -> list[Step]:
    """Whether the canaries came back, and whether the app server saw them (its trace)."""
    await asyncio.sleep(0.1)  # the WebSocket's close is traced a moment after the client saw it
    events, _ = await client.get_trace()
    url = f"127.0.0.1:{port}/doctor"
    opened = [e for e in events if e["kind"] == "open" and url in e["url"]]
    ws_id = opened[0]["connectionID"] if opened else None
    frames = [e for e in events if e["kind"] == "frame" and e.get("connectionID") == ws_id]
    requests = [e for e in events if e["kind"] == "http_request" and url in e["url"]]
    hint = ("the SDK's traffic does not reach the app server: in proxy mode point it at the proxy; in local mode "
            "check the steps above")  # fmt: skip
    steps = []
    if sent.get("ws") == CANARY and opened and len(frames) >= 2:
        steps.append(Step("WebSocket canary", True, f"echoed; the app server relayed it as connection "
                          f"{opened[0]['connectionID'][:8]}… ({opened[0]['url']}), one frame each way"))
    else:
        found = sent.get("ws_error") or (f"echoed but not seen by the app server ({len(opened)} connections)"
                                         if sent.get("ws") == CANARY else f"answered {sent.get('ws')!r}")
        steps.append(Step("WebSocket canary", False, found, hint))
    if sent.get("http") == [200, CANARY] and requests:
        steps.append(Step("HTTP canary", True, f"GET {requests[0]['url']} → 200, relayed by the app server"))
    else:
        found = sent.get("http_error") or (f"answered {sent.get('http')} but not seen by the app server"
                                           if sent.get("http") else "no answer")
        steps.append(Step("HTTP canary", False, found, hint))
    return steps
