"""The seed's requirements list, as tests against the real ably-js (Node) in direct mode.

The seed (shared/seed/000_…txt, "Requirements") lists what ably-js's own tests
do today with private APIs: replace transport.send, onProtocolMessage,
channel.processMessage and friends. Each test here does the same through the
proxy with the test-suite client library only, and pins what the SDK then
does. Each runs in JSON and msgpack, with short SDK timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from appserver.app import AppServer
from shared.ably import Action, Flag
from shared.client import Intercepted, InterceptionContext
from tests.ably_driver import CommandError
from tests.fake_ably import FakeAbly
from tests.sdk_fixtures import (  # noqa: F401 - fixtures are found by name
    Traffic,
    binary,
    direct,
    fake,
    intercept,
    next_ably_connection,
    sdk_via_proxy,
)

FATAL = {"code": 40000, "statusCode": 400, "message": "injected fatal error"}
TRANSIENT = {"code": 80003, "statusCode": 400, "message": "injected disconnect"}


def drop(action: Action) -> Any:
    """A transform that drops every message with that action and passes the rest."""
    return lambda item: None if item.action == action else item.message


def realtime_connections(context: InterceptionContext) -> list[str]:
    return [c.id for c in context.connections if c.path == "/"]


# -- outgoing: transport.send --------------------------------------------------------------


async def test_outgoing_message_checked_then_continued(
    direct: AppServer, fake: FakeAbly, intercept: InterceptionContext, binary: bool
) -> None:
    """An outgoing MESSAGE held by the suite is checked, then let go: only then is it sent and ACKed."""
    seen: asyncio.Future[Intercepted] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def hold_message(item: Intercepted) -> dict[str, Any] | None:
        if item.action == Action.MESSAGE:
            seen.set_result(item)
            await release.wait()
        return item.message

    intercept.transform_client_message = hold_message
    async with sdk_via_proxy(direct, binary, clientId="alice") as sdk:
        await sdk.wait_for_state("connected")
        opened = await next_ably_connection(intercept)
        upstream = await fake.next_connection()
        await sdk.command("attach", channel="room")
        await sdk.command("subscribe", channel="room")
        publish = asyncio.ensure_future(sdk.command("publish", channel="room", name="greeting", data="hello"))
        try:
            message = (await asyncio.wait_for(seen, 5)).message
            await asyncio.sleep(0.2)
            assert not publish.done()
            assert Action.MESSAGE not in [m["action"] for m in upstream.received]
        finally:
            release.set()
        await publish
        echoed = await sdk.next_event("message")
    assert message is not None and message["channel"] == "room" and message["msgSerial"] == 0
    [entry] = message["messages"]
    assert (entry["name"], entry["data"]) == ("greeting", "hello")
    # ably-js leaves the clientId off the message: the connection carries it and the server fills it in.
    assert "clientId" not in entry
    assert opened.query["clientId"] == "alice"
    assert (echoed["data"], echoed["clientId"]) == ("hello", "alice")


async def test_outgoing_binary_data_encoding(
    direct: AppServer, intercept: InterceptionContext, binary: bool
) -> None:
    """Binary data goes out as msgpack bytes, or as Base64 text with encoding "base64" in JSON."""
    traffic = Traffic().install(intercept)
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        await sdk.command("publish", channel="room", name="bytes", data="AAEC/w==", binary=True)
        sent = await traffic.next(Action.MESSAGE, from_client=True)
    assert sent.message is not None
    [entry] = sent.message["messages"]
    if binary:
        assert entry["data"] == b"\x00\x01\x02\xff" and "encoding" not in entry
    else:
        assert (entry["data"], entry["encoding"]) == (base64.b64encode(b"\x00\x01\x02\xff").decode(), "base64")


async def test_outgoing_attach_flag_set(direct: AppServer, intercept: InterceptionContext, binary: bool) -> None:
    """Setting ATTACH_RESUME on the outgoing ATTACH reaches the server, whose RESUMED flag ably-js reports."""

    def set_attach_resume(item: Intercepted) -> dict[str, Any] | None:
        message = item.message
        if message is not None and item.action == Action.ATTACH:
            message["flags"] = int(message.get("flags") or 0) | Flag.ATTACH_RESUME
        return message

    traffic = Traffic().install(intercept)
    intercept.transform_client_message = set_attach_resume
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        result = await sdk.command("attach", channel="room")
        attached = await traffic.next(Action.ATTACHED, from_client=False)
    assert attached.message is not None and attached.message["flags"] & Flag.RESUMED
    assert result["resumed"] is True


async def test_dropped_attach_sabotages_attach(
    direct: AppServer, fake: FakeAbly, intercept: InterceptionContext, binary: bool
) -> None:
    """With every outgoing ATTACH dropped, the server never hears of the channel and the attach times out."""
    intercept.transform_client_message = drop(Action.ATTACH)
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        upstream = await fake.next_connection()
        try:
            await sdk.command("attach", channel="room")
        except CommandError as exc:
            error = exc.error
        else:
            raise AssertionError("the attach succeeded without an ATTACH")
    assert error["code"] == 90007
    assert Action.ATTACH not in [m["action"] for m in upstream.received]


# -- outgoing AUTH after a server AUTH ----------------------------------------------------------


async def test_server_auth_gets_client_auth(
    direct: AppServer, fake: FakeAbly, intercept: InterceptionContext, binary: bool
) -> None:
    """An injected server AUTH makes ably-js fetch a token over REST and send it in an outgoing AUTH."""
    traffic = Traffic().install(intercept)
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        opened = await next_ably_connection(intercept)
        await intercept.inject_message(opened.id, {"action": Action.AUTH}, from_client=False)
        auth = await traffic.next(Action.AUTH, from_client=True)
        await sdk.next_event("update")
        states = sdk.states()
    assert auth.message is not None and auth.connection_id == opened.id
    token = auth.message["auth"]["accessToken"]
    assert token.startswith("fake-token-")
    assert len(fake.token_requests) == 1 and fake.token_requests[0]["keyName"] == "fakeApp.fakeKey"
    assert states == ["connecting", "connected"]


# -- incoming: injected protocol messages -------------------------------------------------------


async def test_injected_message_delivered(direct: AppServer, intercept: InterceptionContext, binary: bool) -> None:
    """A MESSAGE injected towards the client is delivered to the channel's subscriber like a server one."""
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        opened = await next_ably_connection(intercept)
        await sdk.command("attach", channel="room")
        await sdk.command("subscribe", channel="room")
        await intercept.inject_message(opened.id, {
            "action": Action.MESSAGE, "channel": "room", "id": "injected:0", "connectionId": "someoneElse",
            "timestamp": int(time.time() * 1000),
            "messages": [{"id": "injected:0:0", "name": "injected", "data": "from the test"}],
        }, from_client=False)  # fmt: skip
        received = await sdk.next_event("message")
    assert (received["name"], received["data"], received["connectionId"]) == (
        "injected", "from the test", "someoneElse"
    )


async def test_injected_disconnected_resumes(
    direct: AppServer, fake: FakeAbly, intercept: InterceptionContext, binary: bool
) -> None:
    """After an injected DISCONNECTED, ably-js reconnects with resume=<connectionKey> and keeps its connectionId."""
    traffic = Traffic().install(intercept)
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        first = await next_ably_connection(intercept)
        connected = await traffic.next(Action.CONNECTED, from_client=False)
        await intercept.inject_message(first.id, {"action": Action.DISCONNECTED, "error": TRANSIENT}, from_client=False)
        disconnected = await sdk.wait_for_state("disconnected")
        second = await next_ably_connection(intercept)
        await sdk.wait_for_state("connected")
        closed = await intercept.connection_closed(first.id)
        info = await sdk.command("connection")
    assert connected.message is not None
    assert disconnected["reason"]["code"] == TRANSIENT["code"]
    assert second.query["resume"] == connected.message["connectionKey"]
    assert info["id"] == connected.message["connectionId"]
    assert closed.closed_by == "client"
    assert len(fake.connections) == 2 and fake.connections[1].resumed


async def test_injected_error_fails(direct: AppServer, intercept: InterceptionContext, binary: bool) -> None:
    """An injected connection-level ERROR puts ably-js in failed with that error; it does not reconnect."""
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        opened = await next_ably_connection(intercept)
        await intercept.inject_message(opened.id, {"action": Action.ERROR, "error": FATAL}, from_client=False)
        failed = await sdk.wait_for_state("failed")
        await intercept.connection_closed(opened.id)
        await asyncio.sleep(0.5)
        assert realtime_connections(intercept) == [opened.id]
        info = await sdk.command("connection")
    assert failed["reason"] == FATAL
    assert info["state"] == "failed" and info["errorReason"] == FATAL


# -- incoming: dropped ACK and ATTACHED --------------------------------------------------------


async def test_dropped_ack_publish_pending_until_resume(
    direct: AppServer, fake: FakeAbly, intercept: InterceptionContext, binary: bool
) -> None:
    """With its ACK dropped a publish stays pending; after a resume ably-js resends it and it succeeds."""
    traffic = Traffic().install(intercept)
    dropping = True
    intercept.transform_server_message = lambda item: None if dropping and item.action == Action.ACK else item.message
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        first = await next_ably_connection(intercept)
        await sdk.command("attach", channel="room")
        publish = asyncio.ensure_future(sdk.command("publish", channel="room", name="n", data="unacked"))
        sent = await traffic.next(Action.MESSAGE, from_client=True)
        await traffic.next(Action.ACK, from_client=False)  # the server did acknowledge it
        await asyncio.sleep(1.5)
        assert not publish.done(), "the publish completed without an ACK"
        dropping = False
        await intercept.close_connection(first.id, abrupt=True)
        resent = await traffic.next(Action.MESSAGE, from_client=True)
        await asyncio.wait_for(publish, 5)
    assert sent.message is not None and resent.message is not None
    assert resent.connection_id != first.id
    assert resent.message["msgSerial"] == sent.message["msgSerial"] == 0
    assert resent.message["messages"][0]["data"] == "unacked"


async def test_dropped_ack_then_error_fails_publish(
    direct: AppServer, intercept: InterceptionContext, binary: bool
) -> None:
    """A publish whose ACK was dropped fails with the connection's error when an ERROR then arrives."""
    traffic = Traffic().install(intercept)
    intercept.transform_server_message = drop(Action.ACK)
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        opened = await next_ably_connection(intercept)
        publish = asyncio.ensure_future(sdk.command("publish", channel="room", name="n", data="unacked"))
        await traffic.next(Action.ACK, from_client=False)
        assert not publish.done()
        await intercept.inject_message(opened.id, {"action": Action.ERROR, "error": FATAL}, from_client=False)
        try:
            await publish
        except CommandError as exc:
            error = exc.error
        else:
            raise AssertionError("the publish succeeded without an ACK")
    assert error == FATAL


async def test_dropped_attached_times_out_and_retries(
    direct: AppServer, intercept: InterceptionContext, binary: bool
) -> None:
    """With ATTACHED dropped, attach() fails with 90007 after realtimeRequestTimeout and ably-js retries."""
    traffic = Traffic().install(intercept)
    dropping = True
    intercept.transform_server_message = (
        lambda item: None if dropping and item.action == Action.ATTACHED else item.message
    )
    async with sdk_via_proxy(direct, binary, realtimeRequestTimeout=500, channelRetryTimeout=200) as sdk:
        await sdk.wait_for_state("connected")
        started = time.monotonic()
        try:
            await sdk.command("attach", channel="room")
        except CommandError as exc:
            error, elapsed = exc.error, time.monotonic() - started
        else:
            raise AssertionError("the attach succeeded without an ATTACHED")
        suspended = await sdk.next_event("channelState", lambda e: e["current"] == "suspended")
        await traffic.next(Action.ATTACH, from_client=True)
        await traffic.next(Action.ATTACH, from_client=True)  # the SDK's own retry
        dropping = False
        await sdk.next_event("channelState", lambda e: e["current"] == "attached")
    assert error["code"] == 90007 and error["statusCode"] == 408
    assert 0.4 < elapsed < 3
    assert suspended["reason"]["code"] == 90007


# -- incoming: rewritten CONNECTED ---------------------------------------------------------------


def rewrite_connected(**details: Any) -> Any:
    """A transform that overwrites fields of every CONNECTED's connectionDetails (and its connectionKey)."""

    def transform(item: Intercepted) -> dict[str, Any] | None:
        message = item.message
        if message is not None and item.action == Action.CONNECTED:
            message["connectionDetails"].update(details)
            if "connectionKey" in details:
                message["connectionKey"] = details["connectionKey"]
        return message

    return transform


async def test_rewritten_connection_key_and_client_id_used(
    direct: AppServer, intercept: InterceptionContext, binary: bool
) -> None:
    """A rewritten CONNECTED sets connection.key and auth.clientId, and the next connection resumes that key."""
    intercept.transform_server_message = rewrite_connected(connectionKey="fixed!key", clientId="fixed-client")
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        first = await next_ably_connection(intercept)
        info = await sdk.command("connection")
        await intercept.close_connection(first.id, abrupt=True)
        second = await next_ably_connection(intercept)
        await sdk.wait_for_state("connected")
    assert (info["key"], info["clientId"]) == ("fixed!key", "fixed-client")
    assert second.query["resume"] == "fixed!key"


async def test_rewritten_max_idle_interval_used(
    direct: AppServer, intercept: InterceptionContext, binary: bool
) -> None:
    """A CONNECTED rewritten with maxIdleInterval 300 ms makes ably-js drop a quiet connection within ~1 s."""
    intercept.transform_server_message = rewrite_connected(maxIdleInterval=300)
    async with sdk_via_proxy(direct, binary, realtimeRequestTimeout=500) as sdk:
        await sdk.wait_for_state("connected")
        started = time.monotonic()
        disconnected = await sdk.wait_for_state("disconnected", timeout=5)
        elapsed = time.monotonic() - started
    assert disconnected["reason"]["code"] == 80003
    assert "No activity" in disconnected["reason"]["message"]
    assert 0.7 < elapsed < 3  # maxIdleInterval + realtimeRequestTimeout, not the fake's 15 s


async def test_rewritten_max_message_size_used(direct: AppServer, intercept: InterceptionContext, binary: bool) -> None:
    """A CONNECTED rewritten with maxMessageSize 64 makes ably-js refuse a larger publish itself (40009)."""
    traffic = Traffic().install(intercept)
    intercept.transform_server_message = rewrite_connected(maxMessageSize=64)
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        await sdk.command("publish", channel="room", name="small", data="x")
        try:
            await sdk.command("publish", channel="room", name="big", data="x" * 200)
        except CommandError as exc:
            error = exc.error
        else:
            raise AssertionError("the SDK published a message over maxMessageSize")
    assert error["code"] == 40009
    [sent] = [i.message for i in traffic.items if i.from_client and i.action == Action.MESSAGE]
    assert sent is not None and sent["messages"][0]["name"] == "small"


# -- connection events and closeConnection ----------------------------------------------------


async def test_connection_event_has_version_and_format(
    direct: AppServer, intercept: InterceptionContext, binary: bool
) -> None:
    """The connection event's query carries ably-js's protocol version v=6 and its format."""
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        opened = await next_ably_connection(intercept)
    assert opened.query["v"] == "6"
    assert opened.query["format"] == ("msgpack" if binary else "json")
    assert opened.query["heartbeats"] == "false"
    assert opened.query["agent"].startswith("ably-js/2.")
    assert "resume" not in opened.query


async def test_abrupt_close_connection_reconnects(
    direct: AppServer, fake: FakeAbly, intercept: InterceptionContext, binary: bool
) -> None:
    """closeConnection abrupt drops both legs without a close frame; ably-js reconnects and resumes."""
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        first = await next_ably_connection(intercept)
        upstream = await fake.next_connection()
        await intercept.close_connection(first.id, abrupt=True)
        closed = await intercept.connection_closed(first.id)
        disconnected = await sdk.wait_for_state("disconnected")
        second = await next_ably_connection(intercept)
        await sdk.wait_for_state("connected")
        info = await sdk.command("connection")
    assert (closed.closed_by, closed.clean) == ("proxy", False)
    assert disconnected["reason"] is not None
    assert second.query["resume"] == upstream.connection_key
    assert info["id"] == upstream.connection_id
