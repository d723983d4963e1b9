"""Churn: thousands of connections opened and closed leave nothing behind."""

from __future__ import annotations

import asyncio
import gc
import os

import aiohttp
from aiohttp import WSMsgType

from appserver.app import AppServer
from tests.peers import Router, Suite, UpstreamServer, connect_client, receive

CHURN = int(os.environ.get("LEAK_CHURN", "3000"))
PARALLEL = 25


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def one(http: aiohttp.ClientSession, app_server: AppServer, router: Router, n: int) -> None:
    """Open, exchange a message, close: by the client or the server, cleanly or abruptly."""
    client = await connect_client(http, app_server.proxy_port, router.host, f"/{n}")
    server = await router.socket_for(f"/{n}")
    await client.send_str("x")
    assert (await receive(server)).data == "x"
    closer, other = (client, server) if n % 2 else (server, client)
    if n % 5 == 0:
        closer._writer.transport.abort()
        assert (await receive(other)).type in (WSMsgType.CLOSED, WSMsgType.ERROR)
    else:
        await closer.send_frame(b"\x03\xe8", WSMsgType.CLOSE)
        assert (await receive(other)).type is WSMsgType.CLOSE
        await other.send_frame(b"\x03\xe8", WSMsgType.CLOSE)
        assert (await receive(closer)).type is WSMsgType.CLOSE
    await client.close()  # gives the test's own connector slot back, whatever happened


async def test_churn_returns_to_baseline(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """After 3,000 connections (half closed by each side, a fifth abruptly), the app server's tasks,
    file descriptors and connection registry are back to their baseline."""
    await asyncio.sleep(0.1)
    gc.collect()
    tasks_before, fds_before = len(asyncio.all_tasks()), open_fds()
    semaphore = asyncio.Semaphore(PARALLEL)

    router = Router(upstream)

    async def bounded(n: int) -> None:
        async with semaphore:
            await one(http, app_server, router, n)

    try:
        await asyncio.gather(*(bounded(n) for n in range(CHURN)))
    finally:
        await router.close()
    async with asyncio.timeout(10):
        while app_server.registry.connections or len(asyncio.all_tasks()) > tasks_before:
            await asyncio.sleep(0.05)
    gc.collect()
    assert app_server.registry.connections == {}
    assert len(asyncio.all_tasks()) <= tasks_before
    # The test's own client pool may keep a few idle sockets; the proxy must not keep any.
    assert open_fds() <= fds_before + 2, f"{open_fds() - fds_before} file descriptors more than before"
    assert len(suite.transform_requests) == CHURN
