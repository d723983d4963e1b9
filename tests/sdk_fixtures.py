"""Fixtures and helpers for tests that drive the real ably-js through the whole product.

Import the fixtures a test module uses into it (pytest finds fixtures by name
in the module's namespace):

    from tests.sdk_fixtures import binary, direct, fake, intercept  # noqa: F401

- ``fake``: a :class:`FakeAbly` on loopback (the "real server");
- ``direct``: an :class:`AppServer` in direct mode whose default upstream is the fake;
- ``mitmdump_stack``: an :class:`AppServer` that launches a real mitmdump on startInterception;
- ``intercept``: a test-suite client (the product's client library) that has
  called startInterception on ``direct``, and its per-test context
  (:func:`intercepting` makes one for another app server);
- :func:`sdk_via_proxy`: ably-js pointed at ``direct``'s proxy endpoint;
- :class:`Traffic`: every message the context saw, decoded and awaitable by action;
- :func:`tag_data`, :func:`publish_and_receive`, :func:`round_trip`,
  :func:`expected_format`: what the end-to-end tests of both drivers do and check.
"""

from __future__ import annotations

import asyncio
import logging
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from yarl import URL

from appserver.app import AppServer
from shared.ably import Action, Format
from shared.client import Intercepted, InterceptionClient, InterceptionContext, ProxyCallError
from shared.connections import ConnectionClosed, ConnectionOpened
from tests.ably_driver import AblyDriver, fake_ably_options
from tests.conftest import launching_config, make_config, running_app_server
from tests.fake_ably import FakeAbly, FakeConnection

log = logging.getLogger(__name__)

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
    async with running_app_server(make_config(default_upstream=URL(f"ws://{fake.host}/"))) as server:
        yield server


@pytest.fixture
async def mitmdump_stack(no_leaks: None, tmp_path: Path) -> AsyncIterator[AppServer]:
    """An app server that launches a real mitmdump (temporary confdir, free port) on startInterception."""
    async with running_app_server(launching_config(tmp_path / "mitmproxy-conf")) as server:
        yield server


@contextlib.asynccontextmanager
async def intercepting(server: AppServer) -> AsyncIterator[InterceptionContext]:
    """The interception context of a test suite (the client library) that called startInterception in proxy mode."""
    client = await InterceptionClient.connect(f"ws://127.0.0.1:{server.control_port}/")
    try:
        await client.start_interception("proxy")
        async with client.intercept() as context:
            yield context
    finally:
        await client.close()


@pytest.fixture
async def intercept(direct: AppServer) -> AsyncIterator[InterceptionContext]:
    """The active test suite's interception context, made with the client library."""
    async with intercepting(direct) as context:
        yield context


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


def expected_format(binary: bool) -> Format:
    return Format.MSGPACK if binary else Format.JSON


def tag_data(suffix: str, seen: list[Intercepted] | None = None) -> Any:
    """A transform that appends suffix to the data of every MESSAGE's entries (and leaves the rest alone);
    with seen, it also records every item it is given there."""

    def transform(item: Intercepted) -> dict[str, Any] | None:
        if seen is not None:
            seen.append(item)
        message = item.message
        if message is not None and item.action == Action.MESSAGE:
            for entry in message.get("messages") or []:
                entry["data"] = f"{entry['data']}{suffix}"
        return message

    return transform


async def publish_and_receive(sdk: AblyDriver, data: str) -> dict[str, Any]:
    """Attach to "room", subscribe, publish data as "greeting"; the message event the SDK then gets."""
    await sdk.command("attach", channel="room")
    await sdk.command("subscribe", channel="room")
    await sdk.command("publish", channel="room", name="greeting", data=data)
    return await sdk.next_event("message")


class RoundTrip(NamedTuple):
    """What :func:`round_trip` saw: the suite's and the fake's view of the connection, the message
    the SDK received, and how the connection closed."""

    opened: ConnectionOpened
    upstream: FakeConnection
    received: dict[str, Any]
    closed: ConnectionClosed


async def round_trip(sdk: AblyDriver, context: InterceptionContext, fake: FakeAbly) -> RoundTrip:
    """The SDK (a client made already) connects, publishes "hello" and receives it (:func:`publish_and_receive`),
    then closes; returns once the suite has seen the connection closed."""
    await sdk.wait_for_state("connected")
    opened = await next_ably_connection(context)
    upstream = await fake.next_connection()
    received = await publish_and_receive(sdk, "hello")
    await sdk.command("close")
    await sdk.wait_for_state("closed")
    closed = await context.connection_closed(opened.id)
    return RoundTrip(opened, upstream, received, closed)


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


async def start_local_or_skip(client: InterceptionClient, pid: int) -> None:
    """startInterception in local mode; skip the test, with the launcher's reason, where capture is impossible."""
    try:
        await client.start_interception("local", pid=pid)
    except ProxyCallError as exc:
        reason = exc.proxy_message
        if "local capture" in reason or "needs root" in reason:
            log.warning("local mode unavailable: %s", reason)
            pytest.skip(f"local capture unavailable on this host: {reason}")
        raise
