"""SDK scenarios written as a test suite in another repository would write them, with this project's pytest
plugin and a session per test (``--interception-session=per-test``): run by tests/sdk/test_per_test_sessions.py
under pytest-xdist, against one shared app server in direct mode. Not collected by the main run (the file
name does not start with ``test_``).

Each is a slow-server scenario: a rule holds the server's CONNECTED for two seconds, so the SDK spends most
of the test waiting, as SDK tests do (on timers, retries, a slow network): tests that parallelise.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared import rules
from shared.ably import Action
from shared.client import Intercepted, InterceptionContext
from shared.client_methods import SessionInfo
from tests.ably_driver import AblyDriver, fake_ably_options
from tests.sdk_fixtures import SHORT_TIMEOUTS

SLOW_MS = 2000


@pytest.mark.parametrize("n", range(8))
async def test_a_slow_connect_through_my_own_session(interception: InterceptionContext,
                                                     interception_session: SessionInfo, n: int) -> None:  # fmt: skip
    """ably-js connects late (its CONNECTED held by this test's rule), then publishes and receives; this test
    transforms its own client's messages and sees its own connection only, whatever runs beside it."""
    seen: list[Intercepted] = []

    def tag(message: Intercepted) -> Any:
        seen.append(message)
        if message.action == Action.MESSAGE and message.message is not None:
            for item in message.message.get("messages", []):
                item["data"] = f"{item['data']} seen by test {n}"
        return message.message

    interception.transform_server_message = tag
    await interception.add_rules(rules.delay(SLOW_MS, action="CONNECTED", fromClient=False))
    options = fake_ably_options(f"127.0.0.1:{interception_session.proxy_port}", useBinaryProtocol=False,
                                **{**SHORT_TIMEOUTS, "realtimeRequestTimeout": 5000})  # fmt: skip
    started = time.monotonic()
    async with AblyDriver(options) as ably:
        await ably.wait_for_state("connected", timeout=15)
        assert time.monotonic() - started >= SLOW_MS / 1000
        channel = f"room-{n}"  # the fake Ably server is shared: a channel of its own per test
        await ably.command("attach", channel=channel)
        await ably.command("subscribe", channel=channel)
        await ably.command("publish", channel=channel, name="greeting", data=f"hello {n}")
        received = await ably.next_event("message")
        assert received["data"] == f"hello {n} seen by test {n}"
        opened = await interception.next_connection()
        await ably.command("close")
        closed = await interception.connection_closed(opened.id)  # by either side: ably-js's CLOSE races the fake's
    assert {m.connection_id for m in seen} == {opened.id} and closed.clean
