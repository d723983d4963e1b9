"""The real ably-js 2.28.0 in Node, through the whole product, in JSON and msgpack.

Everything here is written with the test-suite client library (shared.client),
the way a test author would: callbacks on an interception context, connection
events, injections. The "real server" is tests/fake_ably.py on loopback.

- direct mode: ably-js is pointed at the app server's proxy endpoint, which
  relays its WebSocket and its plain HTTP to the fake (no mitmproxy);
- local mode: the app server launches a real mitmdump capturing the Node
  process by PID, and ably-js connects straight to the fake's port.
"""

from __future__ import annotations

import logging

import pytest


from appserver.app import AppServer
from shared.ably import Action
from shared.client import InterceptionClient, InterceptionContext
from tests.ably_driver import AblyDriver, fake_ably_options
from tests.fake_ably import FakeAbly
from tests.sdk_fixtures import (  # noqa: F401 - fixtures are found by name
    SHORT_TIMEOUTS,
    Traffic,
    binary,
    direct,
    driver_pid,
    expected_format,
    fake,
    intercept,
    mitmdump_stack,
    next_ably_connection,
    publish_and_receive,
    round_trip,
    sdk_via_proxy,
    start_local_or_skip,
    tag_data,
)

log = logging.getLogger(__name__)


# -- direct mode ----------------------------------------------------------------


async def test_direct_mode_end_to_end(
    direct: AppServer, fake: FakeAbly, intercept: InterceptionContext, binary: bool
) -> None:
    """Direct mode: ably-js at the proxy endpoint reaches the fake, transformed both ways; its REST call is relayed."""
    traffic = Traffic().install(intercept)
    intercept.transform_client_message = tag_data(" +client")
    intercept.transform_server_message = tag_data(" +server")
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        opened = await next_ably_connection(intercept)
        upstream = await fake.next_connection()
        received = await publish_and_receive(sdk, "hello")
        token = await sdk.command("authorize")
        auth = await traffic.next(Action.AUTH, from_client=True)
        info = await sdk.command("connection")
    # the host the client asked for, with the upstream beside it (SPEC Part 9)
    assert (opened.host, opened.proto, opened.path) == (f"127.0.0.1:{direct.proxy_port}", "ws", "/")
    assert opened.upstream.startswith(f"ws://{fake.host}/?")
    assert opened.query["v"] == "6"
    assert opened.query["format"] == ("msgpack" if binary else "json")
    assert opened.format is upstream.format is expected_format(binary)
    assert {item.format for item in traffic.items} == {expected_format(binary)}
    assert info["id"] == upstream.connection_id
    sent = next(m for m in upstream.received if m["action"] == Action.MESSAGE)
    assert sent["messages"][0]["data"] == "hello +client"
    assert received["data"] == "hello +client +server"
    assert received["connectionId"] == upstream.connection_id
    assert fake.token_requests and fake.token_requests[0]["keyName"] == "fakeApp.fakeKey"
    assert auth.message is not None and auth.message["auth"]["accessToken"] == token["token"]


async def test_direct_mode_close_is_seen_by_suite(
    direct: AppServer, fake: FakeAbly, intercept: InterceptionContext, binary: bool
) -> None:
    """Closing ably-js sends CLOSE through the proxy; the suite sees the CLOSE, the CLOSED, then a clean close."""
    traffic = Traffic().install(intercept)
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        opened = await next_ably_connection(intercept)
        await sdk.command("close")
        await sdk.wait_for_state("closed")
        closed = await intercept.connection_closed(opened.id)
    await traffic.next(Action.CLOSE, from_client=True)
    await traffic.next(Action.CLOSED, from_client=False)
    # After CLOSED both ends close at once: ably-js with a bare close frame, the fake with 1000; either wins.
    assert closed.clean and (closed.closed_by, closed.code) in {("client", None), ("server", 1000)}, closed


# -- local mode by PID --------------------------------------------------------------


async def test_local_mode_by_pid(mitmdump_stack: AppServer, fake: FakeAbly, binary: bool) -> None:
    """Local mode by PID: ably-js connecting straight to the fake goes through mitmproxy and the suite."""
    async with AblyDriver() as sdk:
        client = await InterceptionClient.connect(f"ws://127.0.0.1:{mitmdump_stack.control_port}/")
        try:
            await start_local_or_skip(client, driver_pid(sdk))
            async with client.intercept() as context:
                traffic = Traffic().install(context)
                context.transform_server_message = tag_data(" +server")
                options = fake_ably_options(fake.host, useBinaryProtocol=binary, **SHORT_TIMEOUTS)
                await sdk.command("create", options=options)
                opened, upstream, received, closed = await round_trip(sdk, context, fake)
        finally:
            await client.close()
    # in local mode the client asked for the fake itself, and that is the upstream too
    assert (opened.host, opened.proto, opened.path) == (fake.host, "ws", "/")
    assert opened.upstream.startswith(f"ws://{fake.host}/?")
    assert "Ably-Test-Host" not in opened.headers  # stripped before the suite and the upstream see them
    assert opened.query["v"] == "6" and opened.format is expected_format(binary)
    assert "Ably-Test-Host" not in upstream.headers
    assert received["data"] == "hello +server"
    server_actions = traffic.actions(from_client=False, connection_id=opened.id)
    assert server_actions[0] == Action.CONNECTED and Action.ACK in server_actions
    assert Action.MESSAGE in traffic.actions(from_client=True, connection_id=opened.id)
    assert closed.clean


async def test_local_mode_rest_goes_through_the_app_server(
    mitmdump_stack: AppServer, fake: FakeAbly, caplog: pytest.LogCaptureFixture
) -> None:
    """Local mode: ably-js's REST time() to the fake is captured, redirected to the app server as plain HTTP
    (Ably-Test-Proto http) and relayed to the fake, which never sees the stamps."""
    caplog.set_level(logging.DEBUG, logger="appserver.relay.http")
    async with AblyDriver() as sdk:
        client = await InterceptionClient.connect(f"ws://127.0.0.1:{mitmdump_stack.control_port}/")
        try:
            await start_local_or_skip(client, driver_pid(sdk))
            await sdk.command("create", options=fake_ably_options(fake.host, autoConnect=False, **SHORT_TIMEOUTS))
            assert isinstance(await sdk.command("time"), int)
        finally:
            await client.close()
    [(method, path, headers)] = fake.http_requests
    assert (method, path) == ("GET", "/time") and not [h for h in headers if h.lower().startswith("ably-test-")]
    assert any(f"relayed GET http://{fake.host}/time" in r.getMessage() for r in caplog.records)
