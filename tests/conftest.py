"""Fixtures: a real app server and a scriptable upstream on loopback, and a
check that every test leaves no task and no socket behind; the helpers they
are made of, for fixtures elsewhere that need another configuration."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from appserver.app import AppServer
from appserver.config import Config
from tests.mitm_helpers import free_port, pids_with_arg
from tests.peers import Suite, UpstreamServer, suite_connection


def _open_sockets() -> set[str]:
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            fds.add(target)
    return fds


@pytest.fixture
async def no_leaks() -> AsyncIterator[None]:
    """Fails the test if a task or socket it created is still there once its fixtures are gone."""
    tasks_before = asyncio.all_tasks()
    sockets_before = _open_sockets()
    yield
    for _ in range(100):
        tasks = {t for t in asyncio.all_tasks() if t not in tasks_before and t is not asyncio.current_task()}
        sockets = _open_sockets() - sockets_before
        if not tasks and not sockets:
            return
        await asyncio.sleep(0.02)
    assert not tasks, f"tasks left behind: {tasks}"
    assert not sockets, f"sockets left behind: {len(sockets)}"


def make_config(**overrides: object) -> Config:
    defaults: dict[str, object] = dict(
        control_port=0, proxy_port=0, launch_mitmproxy=False, transform_timeout=5.0, close_timeout=2.0
    )
    return Config(**{**defaults, **overrides})  # type: ignore[arg-type]


def launching_config(confdir: Path, **overrides: object) -> Config:
    """A config whose app server launches a real mitmdump on startInterception (that confdir, a free port)."""
    return make_config(**{"launch_mitmproxy": True, "mitmproxy_confdir": str(confdir), "mitmproxy_port": free_port(),
                          **overrides})  # fmt: skip


@contextlib.asynccontextmanager
async def running_app_server(config: Config) -> AsyncIterator[AppServer]:
    """An app server started with config; once stopped, nothing is left in its registry nor, if it
    launched mitmdump, running."""
    server = AppServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
    if config.launch_mitmproxy and config.mitmproxy_confdir:
        assert pids_with_arg(config.mitmproxy_confdir) == [], "mitmdump left running after the app server stopped"
    assert not server.registry.connections, "connections left in the app server's registry"


@contextlib.asynccontextmanager
async def intercepting_suite_connection(
    http: aiohttp.ClientSession, control_port: int, timeout: float = 10
) -> AsyncIterator[Suite]:
    """A test suite connected to the control endpoint that has called startInterception {"mode": "proxy"}."""
    async with suite_connection(http, control_port) as s:
        response = await s.request("startInterception", {"mode": "proxy"}, timeout=timeout)
        assert response.get("result") == {}, response
        yield s


@pytest.fixture
def config() -> Config:
    return make_config()


@pytest.fixture
async def app_server(no_leaks: None, config: Config) -> AsyncIterator[AppServer]:
    async with running_app_server(config) as server:
        yield server


@pytest.fixture
async def upstream(no_leaks: None) -> AsyncIterator[UpstreamServer]:
    server = UpstreamServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http(no_leaks: None) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def suite(app_server: AppServer, http: aiohttp.ClientSession) -> AsyncIterator[Suite]:
    """A test suite that has called startInterception (passthrough unless told otherwise)."""
    async with intercepting_suite_connection(http, app_server.control_port) as s:
        yield s
