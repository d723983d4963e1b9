"""Issue 20.9, small things a user hits: each with the behaviour a user expects."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from appserver.app import AppServer
from tests.peers import Suite, redirect_headers, suite_connection

UPGRADE = ("GET /slow HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Ably-Test-Host: {upstream}\r\nAbly-Test-Proto: ws\r\n\r\n")  # fmt: skip


async def test_a_client_that_gives_up_mid_handshake_is_one_info_line(
    no_leaks: None, app_server: AppServer, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The client goes while the upstream is still answering its handshake: one INFO line, no ERROR."""
    answered = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.4)  # the client has gone by now
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        answered.set()
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream = f"127.0.0.1:{runner.addresses[0][1]}"
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", app_server.proxy_port)
        writer.write(UPGRADE.format(host=f"127.0.0.1:{app_server.proxy_port}", upstream=upstream).encode())
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()  # gives up before the 101
        await writer.wait_closed()
        await asyncio.wait_for(answered.wait(), 5)
        await asyncio.sleep(0.3)
    finally:
        await runner.cleanup()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    gave_up = [r for r in caplog.records if r.levelno == logging.INFO and "gave up during the handshake" in r.message]
    assert len(gave_up) == 1, [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]


async def test_add_rules_without_rules_says_rules_is_required(suite: Suite) -> None:
    response = await suite.request("addRules", {})
    assert response["error"]["code"] == -32602
    assert response["error"]["message"] == "Invalid params: rules: is required"


async def test_a_local_session_for_a_pid_that_does_not_exist_names_it(
    http: aiohttp.ClientSession, app_server: AppServer,
) -> None:  # fmt: skip
    """Even on an app server without mitmproxy: the pid is what the suite got wrong."""
    async with suite_connection(http, app_server.control_port) as suite:
        response = await suite.request("openSession", {"mode": "local", "pid": 999_999_999})
        assert response["error"]["code"] == -32602
        assert "no process with pid 999999999" in response["error"]["message"]


def test_transparent_remove_says_when_nothing_was_there() -> None:
    done = subprocess.run([sys.executable, "-m", "appserver.transparent", "remove", "54321"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    said = done.stdout + done.stderr
    if "iptables" not in said and done.returncode != 0:
        pytest.fail(f"appserver.transparent remove could not run iptables here: {said}")
    assert "removed" not in said.replace("nothing to remove", ""), said
    assert "no rules for uid 54321" in said and done.returncode == 0, said
