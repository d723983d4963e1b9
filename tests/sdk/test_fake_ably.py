"""The fake Ably server works with the real ably-js SDK, directly (no proxy), in JSON and msgpack."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest

from shared.ably import Action, Format
from tests.ably_driver import AblyDriver, CommandError, fake_ably_options
from tests.fake_ably import FakeAbly


@pytest.fixture
async def fake(no_leaks: None) -> AsyncIterator[FakeAbly]:
    async with FakeAbly() as server:
        yield server


@pytest.fixture(params=[False, True], ids=["json", "msgpack"])
def binary(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def options(fake: FakeAbly, binary: bool, **overrides: Any) -> dict[str, Any]:
    return fake_ably_options(fake.host, useBinaryProtocol=binary, **overrides)


async def test_connects(fake: FakeAbly, binary: bool) -> None:
    """ably-js connects in the format it asked for and adopts the connectionId the server sent."""
    async with AblyDriver(options(fake, binary)) as sdk:
        await sdk.wait_for_state("connected")
        conn = await fake.next_connection()
        info = await sdk.command("connection")
    assert info["id"] == conn.connection_id
    assert info["key"] == conn.connection_key
    assert conn.format is (Format.MSGPACK if binary else Format.JSON)
    assert conn.query["format"] == ("msgpack" if binary else "json")
    assert conn.query["v"] == "6"
    assert conn.query["heartbeats"] == "false"
    assert "resume" not in conn.query


async def test_node_default_format_is_msgpack(fake: FakeAbly) -> None:
    """Without useBinaryProtocol, ably-js in Node connects with format=msgpack."""
    async with AblyDriver(fake_ably_options(fake.host)) as sdk:
        await sdk.wait_for_state("connected")
        conn = await fake.next_connection()
    assert conn.query["format"] == "msgpack"


async def test_publish_is_acked_and_echoed(fake: FakeAbly, binary: bool) -> None:
    """A message published on an attached channel is ACKed and comes back to its own subscriber."""
    async with AblyDriver(options(fake, binary)) as sdk:
        await sdk.wait_for_state("connected")
        conn = await fake.next_connection()
        await sdk.command("attach", channel="room")
        await sdk.command("subscribe", channel="room")
        await sdk.command("publish", channel="room", name="greeting", data={"text": "hi"})
        received = await sdk.next_event("message")
        await sdk.command("publish", channel="room", name="bytes", data="AAEC/w==", binary=True)
        received_bytes = await sdk.next_event("message")
    assert received["name"] == "greeting" and received["data"] == {"text": "hi"}
    assert received["connectionId"] == conn.connection_id
    assert received_bytes["binary"] and received_bytes["data"] == "AAEC/w=="
    actions = [m["action"] for m in conn.received]
    assert actions[:3] == [Action.ATTACH, Action.MESSAGE, Action.MESSAGE]
    assert [m["msgSerial"] for m in conn.received[1:3]] == [0, 1]
    assert [m["action"] for m in conn.sent].count(Action.ACK) == 2


async def test_injected_disconnected_resumes(fake: FakeAbly, binary: bool) -> None:
    """After a server DISCONNECTED, ably-js reconnects with resume=<connectionKey> and keeps its connectionId."""
    async with AblyDriver(options(fake, binary)) as sdk:
        await sdk.wait_for_state("connected")
        first = await fake.next_connection()
        await first.send({"action": Action.DISCONNECTED, "error": {"code": 80003, "statusCode": 400, "message": "x"}})
        disconnected = await sdk.wait_for_state("disconnected")
        await sdk.wait_for_state("connected")
        second = await fake.next_connection()
        info = await sdk.command("connection")
    assert disconnected["reason"]["code"] == 80003
    assert second.query["resume"] == first.connection_key
    assert second.resumed and second.connection_id == first.connection_id == info["id"]


async def test_injected_fatal_error_fails(fake: FakeAbly, binary: bool) -> None:
    """A connection-level ERROR puts ably-js in the failed state with that error, and it does not reconnect."""
    async with AblyDriver(options(fake, binary)) as sdk:
        await sdk.wait_for_state("connected")
        conn = await fake.next_connection()
        await conn.send({"action": Action.ERROR, "error": {"code": 40000, "statusCode": 400, "message": "fake fatal"}})
        failed = await sdk.wait_for_state("failed")
        with pytest.raises(CommandError) as publish_error:
            await sdk.command("publish", channel="room", name="n", data="after failure")
    assert failed["reason"] == {"code": 40000, "statusCode": 400, "message": "fake fatal"}
    assert publish_error.value.error["code"] is not None
    assert len(fake.connections) == 1


async def test_abrupt_drop_reconnects(fake: FakeAbly, binary: bool) -> None:
    """After the TCP connection drops without a close frame, ably-js reconnects and resumes."""
    async with AblyDriver(options(fake, binary)) as sdk:
        await sdk.wait_for_state("connected")
        first = await fake.next_connection()
        first.drop()
        await sdk.wait_for_state("disconnected")
        await sdk.wait_for_state("connected")
        second = await fake.next_connection()
    assert second.query["resume"] == first.connection_key
    assert second.connection_id == first.connection_id


async def test_close_is_clean(fake: FakeAbly, binary: bool) -> None:
    """Closing the client sends CLOSE; the server answers CLOSED and the SDK ends in closed."""
    async with AblyDriver(options(fake, binary)) as sdk:
        await sdk.wait_for_state("connected")
        conn = await fake.next_connection()
        await sdk.command("close")
        await sdk.wait_for_state("closed")
        await conn.wait_closed()
    assert [m["action"] for m in conn.received] == [Action.CLOSE]
    assert conn.sent[-1]["action"] == Action.CLOSED


async def test_authorize_reauths_in_band(fake: FakeAbly) -> None:
    """auth.authorize() gets a token from the fake's REST endpoint and sends it in an AUTH message."""
    async with AblyDriver(fake_ably_options(fake.host)) as sdk:
        await sdk.wait_for_state("connected")
        conn = await fake.next_connection()
        details = await sdk.command("authorize")
        auth = await conn.next_message(Action.AUTH)
        assert sdk.states() == ["connecting", "connected"]
    assert auth["auth"]["accessToken"] == details["token"]
    assert fake.token_requests[0]["keyName"] == "fakeApp.fakeKey"


async def test_server_pings_keep_idle_connection_alive(no_leaks: None) -> None:
    """With a short maxIdleInterval, the server's WebSocket pings alone keep ably-js connected."""
    async with FakeAbly(ping_interval=0.2, max_idle_interval=300) as fake:
        async with AblyDriver(fake_ably_options(fake.host, realtimeRequestTimeout=300)) as sdk:
            await sdk.wait_for_state("connected")
            await asyncio.sleep(1.5)
            assert sdk.states() == ["connecting", "connected"]


async def test_no_pings_idle_connection_drops(no_leaks: None) -> None:
    """Without pings or messages, ably-js gives up on the connection after maxIdleInterval + realtimeRequestTimeout."""
    async with FakeAbly(ping_interval=None, max_idle_interval=300) as fake:
        async with AblyDriver(fake_ably_options(fake.host, realtimeRequestTimeout=300)) as sdk:
            await sdk.wait_for_state("connected")
            disconnected = await sdk.wait_for_state("disconnected", timeout=5)
    assert disconnected["reason"]["code"] == 80003


async def test_failed_resume_gets_new_connection_id(fake: FakeAbly, binary: bool) -> None:
    """A resume of a key the server forgot gets a new connectionId and error 80008, and ably-js takes both."""
    async with AblyDriver(options(fake, binary)) as sdk:
        await sdk.wait_for_state("connected")
        first = await fake.next_connection()
        fake.forget_connections()
        first.drop()
        connected = await sdk.next_event("state", lambda e: e["current"] == "connected" and e["reason"] is not None)
        second = await fake.next_connection()
        info = await sdk.command("connection")
    assert second.query["resume"] == first.connection_key
    assert not second.resumed and second.connection_id != first.connection_id == "fakeConn1"
    assert info["id"] == second.connection_id
    assert connected["reason"]["code"] == 80008


async def test_server_auth_request_triggers_reauth(fake: FakeAbly, binary: bool) -> None:
    """A server AUTH makes ably-js fetch a new token and send it in an AUTH; the CONNECTED answer is an update."""
    async with AblyDriver(options(fake, binary)) as sdk:
        await sdk.wait_for_state("connected")
        conn = await fake.next_connection()
        await conn.send({"action": Action.AUTH})
        auth = await conn.next_message(Action.AUTH)
        update = await sdk.next_event("update")
        assert sdk.states() == ["connecting", "connected"]
    assert auth["auth"]["accessToken"].startswith("fake-token-")
    assert update["current"] == "connected"


async def test_client_id_and_echo(fake: FakeAbly, binary: bool) -> None:
    """clientId reaches connectionDetails and messages; with echoMessages false the sender gets no echo."""
    async with (
        AblyDriver(options(fake, binary, clientId="alice", echoMessages=False)) as alice,
        AblyDriver(options(fake, binary)) as bob,
    ):
        await alice.wait_for_state("connected")
        await bob.wait_for_state("connected")
        await bob.command("subscribe", channel="room")
        await alice.command("subscribe", channel="room")
        await alice.command("publish", channel="room", name="n", data="from alice")
        received = await bob.next_event("message")
        info = await alice.command("connection")
        assert not [e for e in alice.events if e["event"] == "message"]
    assert info["clientId"] == "alice"
    assert received["clientId"] == "alice" and received["data"] == "from alice"
    alice_conn = next(c for c in fake.connections if c.client_id == "alice")
    assert alice_conn.query["echo"] == "false"
    assert Action.MESSAGE not in [m["action"] for m in alice_conn.sent]


async def test_stop_closes_live_connections(no_leaks: None) -> None:
    """Stopping the fake with an SDK connected closes its connection with 1001 and leaves nothing behind."""
    fake = FakeAbly()
    await fake.start()
    try:
        async with AblyDriver(fake_ably_options(fake.host, disconnectedRetryTimeout=60_000)) as sdk:
            await sdk.wait_for_state("connected")
            conn = await fake.next_connection()
            await fake.stop()
            await sdk.wait_for_state("disconnected")
    finally:
        await fake.stop()
    assert conn.sent_close == (1001, "fake server stopping")
    assert conn.closed.is_set()
