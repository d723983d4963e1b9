"""pytest plugin: fixtures that connect a test suite to the interception proxy.

Enabled automatically once this project is installed (entry point
``pytest11``). Options: ``--interception-url`` (the control API, default
ws://127.0.0.1:8001/, or $INTERCEPTION_CONTROL_URL) and
``--interception-mode`` (proxy, local or none; local captures
``--interception-pid``, default this process).

    async def test_drops_ack(interception):
        interception.transform_server_message = lambda m: None if m.action == Action.ACK else m.message
"""

from __future__ import annotations

import os
from typing import AsyncIterator

import pytest
import pytest_asyncio

from shared.client import InterceptionClient, InterceptionContext


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("interception", "interception proxy")
    group.addoption(
        "--interception-url",
        default=os.environ.get("INTERCEPTION_CONTROL_URL", "ws://127.0.0.1:8001/"),
        help="the proxy's control API (default %(default)s)",
    )
    group.addoption(
        "--interception-mode",
        choices=("proxy", "local", "none"),
        default="proxy",
        help="startInterception mode; none: do not call it (default %(default)s)",
    )
    group.addoption("--interception-pid", type=int, default=None, help="process to capture in local mode")


@pytest_asyncio.fixture
async def interception_client(request: pytest.FixtureRequest) -> AsyncIterator[InterceptionClient]:
    """A control connection that has called startInterception: the active test suite for this test."""
    config = request.config
    client = await InterceptionClient.connect(config.getoption("--interception-url"))
    try:
        mode = config.getoption("--interception-mode")
        if mode != "none":
            pid = config.getoption("--interception-pid") or os.getpid() if mode == "local" else None
            await client.start_interception(mode, pid)
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture
async def interception(interception_client: InterceptionClient) -> AsyncIterator[InterceptionContext]:
    """This test's interception context: set its callbacks, await its connection events."""
    async with interception_client.intercept() as context:
        yield context
