"""The README's "Writing a test" example, run exactly as written against the real ably-js.

The two fixtures the example uses are set up here: the pytest plugin's
``interception`` (pointed at an app server in direct mode, in front of the
fake Ably server) and ``ably``, this repository's driver of ably-js in Node.
A test suite has its own way of driving its SDK; the interception side is
the product's, unchanged.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import AsyncIterator

import pytest

from appserver.app import AppServer
from shared.client import InterceptionClient
from tests.sdk_fixtures import direct, fake  # noqa: F401 - fixtures are found by name


@pytest.fixture
async def interception_client(direct: AppServer) -> AsyncIterator[InterceptionClient]:  # noqa: F811
    """The plugin's fixture of that name, pointed at this test's app server."""
    client = await InterceptionClient.connect(f"ws://127.0.0.1:{direct.control_port}/")
    try:
        await client.start_interception("proxy")
        yield client
    finally:
        await client.close()


@pytest.fixture
def proxy_endpoint(direct: AppServer) -> str:  # noqa: F811
    """This test's app server in direct mode (the README's is `make run ARGS="--default-upstream …"`)."""
    return f"127.0.0.1:{direct.proxy_port}"


# --- the README's `ably` fixture ------------------------------------------------------------------
from tests.ably_driver import AblyDriver, fake_ably_options  # noqa: E402


@pytest.fixture
async def ably(proxy_endpoint):  # type: ignore[no-untyped-def]
    """ably-js 2.x in Node (this repository's driver), pointed at the proxy endpoint in direct mode."""
    options = fake_ably_options(proxy_endpoint, useBinaryProtocol=False, disconnectedRetryTimeout=300,
                                autoConnect=False)  # JSON; the test connects, once its rules are in place
    async with AblyDriver(options) as sdk:  # starts `node tests/js/driver.mjs`, creates a Realtime client
        yield sdk
# --- end of the README's `ably` fixture -----------------------------------------------------------


# --- the README's example ---------------------------------------------------------------------
from shared.ably import Action  # noqa: E402


async def test_publish_without_ack_is_resent_after_a_drop(interception, ably):  # type: ignore[no-untyped-def]
    """A publish whose ACK is dropped stays pending; after an abrupt drop the SDK resends it and it succeeds."""
    published = []
    interception.spy_client_message = lambda m: published.append(m.message) if m.action == Action.MESSAGE else None
    interception.transform_server_message = lambda m: None if m.action == Action.ACK else m.message

    await ably.command("connect")
    await ably.wait_for_state("connected")
    conn = await interception.next_connection()  # interceptedConnectionOpened
    assert conn.query["v"] == "6" and conn.query["format"] == "json"

    await ably.command("attach", channel="room")
    publish = asyncio.ensure_future(ably.command("publish", channel="room", name="greeting", data="hello"))
    await asyncio.sleep(1)
    assert not publish.done()  # its ACK was dropped
    assert published[0]["channel"] == "room" and published[0]["messages"][0]["data"] == "hello"

    interception.transform_server_message = None  # let ACKs through again
    await interception.close_connection(conn.id, abrupt=True)  # TCP dropped, no close frame
    await publish  # the SDK resumed, resent the message, and got its ACK
    assert len(published) == 2 and published[1]["msgSerial"] == published[0]["msgSerial"]
# --- end of the README's example ----------------------------------------------------------------


# --- the README's rule-based example -------------------------------------------------------------
from shared import rules  # noqa: E402
from tests.ably_driver import CommandError  # noqa: E402


async def test_refused_connect_and_nacked_publish(interception, ably):  # type: ignore[no-untyped-def]
    """The first connect is refused with 503 and every ACK becomes a NACK: the SDK retries, then its publish fails."""
    nack = {"action": "NACK", "msgSerial": 0, "count": 1, "error": {"code": 50001, "statusCode": 500, "message": "no"}}
    refuse_id, nack_id = await interception.add_rules(
        rules.refuse_connect(503, path="/"),  # the realtime path; the SDK's /ws-up check is left alone
        rules.replace_with(nack, action="ACK"),
    )

    await ably.command("connect")
    await ably.wait_for_state("disconnected")  # the refused handshake
    await ably.wait_for_state("connected")  # the retry, which the spent rule lets through
    await ably.command("attach", channel="room")
    with pytest.raises(CommandError) as failed:
        await ably.command("publish", channel="room", name="greeting", data="hello")
    assert failed.value.error["code"] == 50001
    assert await interception.wait_for_rule(nack_id) == 1
# --- end of the README's rule-based example ------------------------------------------------------


# --- the README's HTTP example ---------------------------------------------------------------------
async def test_rest_time_answered_by_an_http_rule(interception, ably):  # type: ignore[no-untyped-def]
    """An http rule answers the SDK's REST time() request: the upstream is never asked."""
    [rule_id] = await interception.add_rules(rules.http_respond(200, json=[1234567890123], path="/time"))

    assert await ably.command("time") == 1234567890123
    assert await interception.wait_for_rule(rule_id) == 1
# --- end of the README's HTTP example --------------------------------------------------------------


@pytest.mark.parametrize("shown", [test_publish_without_ack_is_resent_after_a_drop, ably,
                                   test_refused_connect_and_nacked_publish, test_rest_time_answered_by_an_http_rule],
                         ids=["test", "fixture", "rules", "http"])
def test_readme_shows_this_example(shown: object) -> None:
    """The README's example test and its `ably` fixture are this file's, word for word."""
    source = inspect.getsource(getattr(shown, "__wrapped__", shown)).replace("  # type: ignore[no-untyped-def]", "")
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert source in readme, "the README's 'Writing a test' example differs from tests/sdk/test_readme_example.py"
