"""pytest plugin: fixtures that connect a test suite to the interception proxy.

Enabled automatically once this project is installed with its ``pytest`` extra
(entry point ``pytest11``). Options: ``--interception-url`` (the control API,
default ws://127.0.0.1:8001/, or $INTERCEPTION_CONTROL_URL) and
``--interception-mode``: ``proxy``, ``local`` (captures ``--interception-pid``,
default this process) or ``none`` (direct mode: the app server starts no
mitmproxy; the SDK is pointed at its proxy endpoint). Whatever the mode, the
fixture makes this connection the active test suite, or fails the test
saying why: a suite never runs believing it intercepts when it does not.

    async def test_drops_ack(interception):
        interception.transform_server_message = lambda m: None if m.action == Action.ACK else m.message
"""

from __future__ import annotations

import os
from typing import Any, AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from shared.client import InterceptionClient, InterceptionContext, ProxyCallError

MODES = ("proxy", "local", "none")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("interception", "interception proxy")
    group.addoption(
        "--interception-url",
        default=os.environ.get("INTERCEPTION_CONTROL_URL", "ws://127.0.0.1:8001/"),
        help="the proxy's control API (default %(default)s)",
    )
    group.addoption(
        "--interception-mode",
        choices=MODES,
        default="proxy",
        help="startInterception mode: proxy, local (capture --interception-pid) or none (direct mode, no "
        "mitmproxy) (default %(default)s)",
    )
    group.addoption("--interception-pid", type=int, default=None, help="process to capture in local mode")


async def start(url: str, mode: str, pid: int | None) -> InterceptionClient:
    """A control connection that is the active test suite in that mode; pytest.fail saying why if not."""
    try:
        client = await InterceptionClient.connect(url)
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        pytest.fail(f"interception proxy: cannot reach the control API at {url}: {exc!r} "
                    "(is the app server running? `make run-proxy`, or `make run ARGS=...` for direct mode)",
                    pytrace=False)  # fmt: skip
    params: dict[str, Any] = {"mode": mode, **({"pid": pid} if pid is not None else {})}
    try:
        await client.start_interception(mode, pid)
    except ProxyCallError as exc:
        await client.close()
        pytest.fail(f"interception proxy: startInterception {params} failed at {url}: {exc.proxy_message} "
                    f"(code {exc.code})", pytrace=False)  # fmt: skip
    except BaseException:
        await client.close()
        raise
    return client


@pytest_asyncio.fixture
async def interception_client(request: pytest.FixtureRequest) -> AsyncIterator[InterceptionClient]:
    """A control connection that has called startInterception: the active test suite for this test."""
    config = request.config
    mode = config.getoption("--interception-mode")
    pid = (config.getoption("--interception-pid") or os.getpid()) if mode == "local" else None
    client = await start(config.getoption("--interception-url"), mode, pid)
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture
async def interception(interception_client: InterceptionClient) -> AsyncIterator[InterceptionContext]:
    """This test's interception context: set its callbacks, await its connection events."""
    async with interception_client.intercept() as context:
        yield context
