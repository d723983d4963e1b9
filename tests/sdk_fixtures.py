"""Fixtures and helpers for tests that drive the real ably-js through the whole product.

Import the fixtures a test module uses into it (pytest finds fixtures by name
in the module's namespace):

    from tests.sdk_fixtures import binary, direct, fake, intercept  # noqa: F401

- ``fake``: a :class:`FakeAbly` on loopback (the "real server");
- ``direct``: an :class:`AppServer` in direct mode whose default upstream is the fake;
- ``intercept``: a test-suite client (the product's client library) that has
  called startInterception on ``direct``, and its per-test context;
- :func:`sdk_via_proxy`: ably-js pointed at ``direct``'s proxy endpoint;
- :class:`Traffic`: every message the context saw, decoded and awaitable by action.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from yarl import URL

from appserver.app import AppServer
from shared.ably import Action
from shared.client import ConnectionOpened, Intercepted, InterceptionClient, InterceptionContext
from tests.ably_driver import AblyDriver, fake_ably_options
from tests.conftest import make_config
from tests.fake_ably import FakeAbly

#: ClientOptions that keep every SDK retry and timeout short, so that tests run in seconds.
SHORT_TIMEOUTS: dict[str, Any] = {
    "realtimeRequestTimeout": 1000,
    "disconnectedRetryTimeout": 300,
    "suspendedRetryTimeout": 500,
    "channelRetryTimeout": 300,
}

#: The path of an Ably realtime connection (ably-js's WebSocket connectivity check uses another one).
ABLY_PATH = "/"


@pytest.fixture(params=[False, True], ids=["json", "msgpack"])
def binary(request: pytest.FixtureRequest) -> bool:
    """useBinaryProtocol: False → format=json (text frames), True → format=msgpack (binary frames)."""
    return bool(request.param)


@pytest.fixture
async def fake(no_leaks: None) -> AsyncIterator[FakeAbly]:
    async with FakeAbly() as server:
        yield server


@pytest.fixture
async def direct(no_leaks: None, fake: FakeAbly) -> AsyncIterator[AppServer]:
    """The app server in direct mode (no mitmproxy): upgrades and plain HTTP go to the fake."""
    server = AppServer(make_config(default_upstream=URL(f"ws://{fake.host}/")))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
    assert not server.registry.connections, "connections left in the app server's registry"


@pytest.fixture
async def intercept(direct: AppServer) -> AsyncIterator[InterceptionContext]:
    """The active test suite's interception context, made with the client library."""
    client = await InterceptionClient.connect(f"ws://127.0.0.1:{direct.control_port}/")
    try:
        await client.start_interception("proxy")
        async with client.intercept() as context:
            yield context
    finally:
        await client.close()


def sdk_via_proxy(server: AppServer, binary: bool, **overrides: Any) -> AblyDriver:
    """ably-js pointed at the app server's proxy endpoint (direct mode), with short timeouts."""
    options = {**SHORT_TIMEOUTS, "useBinaryProtocol": binary, **overrides}
    return AblyDriver(fake_ably_options(f"127.0.0.1:{server.proxy_port}", **options))


async def next_ably_connection(context: InterceptionContext, timeout: float = 10) -> ConnectionOpened:
    """The next intercepted realtime connection, skipping WebSocket connectivity checks."""
    async with asyncio.timeout(timeout):
        while True:
            opened = await context.next_connection(timeout=timeout)
            if opened.path == ABLY_PATH:
                return opened


def driver_pid(sdk: AblyDriver) -> int:
    """The process id of the Node driver (for local mode)."""
    process = sdk._process  # noqa: SLF001 - AblyDriver does not expose it
    assert process is not None, "the driver is not running"
    return process.pid


@dataclass
class Traffic:
    """Every message an interception context let through its spies, decoded, in order.

    ``traffic.install(ctx)`` sets both spy callbacks; ``await traffic.next(Action.MESSAGE,
    from_client=True)`` returns the next such message not returned by an earlier
    ``next`` for the same (action, direction).
    """

    items: list[Intercepted] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _cursors: dict[tuple[int | None, bool], int] = field(default_factory=dict)

    def install(self, context: InterceptionContext) -> Traffic:
        context.spy_client_message = self.record
        context.spy_server_message = self.record
        return self

    async def record(self, item: Intercepted) -> None:
        async with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    async def next(
        self, action: Action, *, from_client: bool, predicate: Callable[[Intercepted], bool] | None = None,
        timeout: float = 5,
    ) -> Intercepted:  # fmt: skip
        key = (int(action), from_client)
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for index in range(self._cursors.get(key, 0), len(self.items)):
                    item = self.items[index]
                    if item.action == action and item.from_client == from_client and (
                        predicate is None or predicate(item)
                    ):
                        self._cursors[key] = index + 1
                        return item
                await self._changed.wait()

    def actions(self, *, from_client: bool, connection_id: str | None = None) -> list[int | None]:
        return [
            i.action for i in self.items
            if i.from_client == from_client and connection_id in (None, i.connection_id)
        ]  # fmt: skip

