"""Sessions (SPEC Part 6) in local mode: each session's processes captured by pid in the one mitmdump, and
each flow attributed to the session whose process holds its socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from appserver.app import AppServer
from appserver.capture import local
from appserver.doctor.proof import CANARY, upstream
from shared.client import InterceptionClient, ProxyCallError
from tests.conftest import launching_config, running_app_server
from tests.mitm_helpers import pids_with_arg

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or local.cgroup2_mount() is None,
                                reason="local capture needs root and a cgroup2 hierarchy")  # fmt: skip


@pytest.fixture
async def stack(no_leaks: None, tmp_path: Path) -> AsyncIterator[AppServer]:
    async with running_app_server(launching_config(tmp_path / "mitmproxy-conf")) as server:
        yield server


@contextlib.asynccontextmanager
async def probe(port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """A process that, once told "go", opens a WebSocket and GETs to 127.0.0.1:port/doctor as an SDK would."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", "appserver.doctor.probe", str(port),
                                                 stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)  # fmt: skip
    try:
        yield child
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


async def go(child: asyncio.subprocess.Process) -> dict[str, Any]:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(b"go\n")
    await child.stdin.drain()
    result: dict[str, Any] = json.loads(await asyncio.wait_for(child.stdout.readline(), 60))
    return result


async def local_session(server: AppServer, pid: int) -> InterceptionClient:
    client = await InterceptionClient.connect(f"ws://127.0.0.1:{server.control_port}/")
    try:
        await client.open_session("local", pid=pid)
    except ProxyCallError as exc:
        await client.close()
        if "local capture" in exc.proxy_message:
            pytest.skip(f"local capture unavailable on this host: {exc.proxy_message}")
        raise
    return client


def seen(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["kind"], e["url"]) for e in events if e["kind"] in ("open", "http_request")]


async def test_two_local_sessions_each_see_their_own_process(stack: AppServer) -> None:
    """Two local sessions, a captured process each, in one mitmdump: each suite's trace holds its own
    process's WebSocket and HTTP request and nothing of the other's; closing one leaves the other capturing."""
    async with upstream() as port, probe(port) as child_a, probe(port) as child_b:
        a = await local_session(stack, child_a.pid)
        try:
            b = await local_session(stack, child_b.pid)
            try:
                assert stack.config.mitmproxy_confdir is not None
                [mitmdump] = pids_with_arg(stack.config.mitmproxy_confdir)
                assert await go(child_a) == {"ws": CANARY, "http": [200, CANARY]}
                assert await go(child_b) == {"ws": CANARY, "http": [200, CANARY]}
                await asyncio.sleep(0.2)
                url_ws, url_http = f"ws://127.0.0.1:{port}/doctor", f"http://127.0.0.1:{port}/doctor"
                events_a, _ = await a.get_trace()
                events_b, _ = await b.get_trace()
                assert seen(events_a) == [("open", url_ws), ("http_request", url_http)]
                assert seen(events_b) == [("open", url_ws), ("http_request", url_http)]
                ids_a = {e.get("connectionID") for e in events_a}
                assert not ids_a & {e.get("connectionID") for e in events_b}
                await a.close_session()
                assert pids_with_arg(stack.config.mitmproxy_confdir) == [mitmdump]  # no restart
            finally:
                await b.close()
        finally:
            await a.close()


async def test_bad_local_sessions_are_32602(stack: AppServer) -> None:
    """A pid that does not exist, or one another session captures already: -32602 saying which."""
    client = await InterceptionClient.connect(f"ws://127.0.0.1:{stack.control_port}/")
    try:
        with pytest.raises(ProxyCallError) as refused:
            await client.open_session("local", pid=999_999_999)
        assert refused.value.code == -32602 and "999999999" in refused.value.proxy_message
        async with upstream() as port, probe(port) as child:
            owner = await local_session(stack, child.pid)
            try:
                with pytest.raises(ProxyCallError) as taken:
                    await client.open_session("local", pid=child.pid)
                assert taken.value.code == -32602 and "captured for session" in taken.value.proxy_message
            finally:
                await owner.close()
    finally:
        await client.close()
