"""Rules against the real ably-js 2.28.0 in Node, JSON and msgpack, in direct mode, one theme per test.

Written with the client library's rule helpers (shared.rules), the way a test
author would; every test asserts what the SDK observably does (states,
errors, callbacks), not only what the proxy answered.
"""

from __future__ import annotations

import asyncio
import re
import time

from appserver.app import AppServer
from shared import rules
from shared.ably import Action
from shared.client import InterceptionContext
from tests.ably_driver import CommandError
from tests.fake_ably import FakeAbly
from tests.sdk_fixtures import (  # noqa: F401 - fixtures are found by name
    SHORT_TIMEOUTS,
    binary,
    direct,
    fake,
    intercept,
    next_ably_connection,
    sdk_via_proxy,
)

REALTIME = "/"  # ably-js's realtime path (its WebSocket connectivity check is /ws-up)


async def test_refused_first_connect_is_retried(direct: AppServer, intercept: InterceptionContext, binary: bool) -> None:
    """The first realtime handshake refused with 503: ably-js reports disconnected with a retry, then connects."""
    await intercept.add_rules(rules.refuse_connect(503, path=REALTIME))
    async with sdk_via_proxy(direct, binary) as sdk:
        disconnected = await sdk.wait_for_state("disconnected")
        assert disconnected["retryIn"] is not None
        await sdk.wait_for_state("connected")
    # matched: the refused handshake, and the retry that went through (the rule spent: remaining 0)
    [listed] = await intercept.list_rules()
    assert (listed["matched"], listed["remaining"]) == (2, 0)


async def test_connect_answered_with_a_fatal_error(direct: AppServer, intercept: InterceptionContext,
                                                   binary: bool) -> None:  # fmt: skip
    """A connect answered by the proxy alone with ERROR 40101 and a close: ably-js fails with that error."""
    error = {"code": 40101, "statusCode": 401, "message": "Invalid credentials (rule)"}
    await intercept.add_rules(rules.answer_connect({"action": "ERROR", "error": error}, close=1000, path=REALTIME))
    async with sdk_via_proxy(direct, binary) as sdk:
        failed = await sdk.wait_for_state("failed")
    assert failed["reason"]["code"] == 40101 and failed["reason"]["statusCode"] == 401


async def test_timer_drop_then_the_sdk_resumes(direct: AppServer, intercept: InterceptionContext, fake: FakeAbly,
                                               binary: bool) -> None:  # fmt: skip
    """A timer drops the transport abruptly 500 ms after it opened; ably-js reconnects with resume= and is
    resumed (the same connection id)."""
    await intercept.add_rules(rules.after(500, rules.close_action(abrupt=True), path=REALTIME, times=1))
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        first = await next_ably_connection(intercept)
        before = await sdk.command("connection")
        await sdk.wait_for_state("disconnected")
        await sdk.wait_for_state("connected")
        second = await next_ably_connection(intercept)
        after = await sdk.command("connection")
    assert "resume" not in first.query and second.query["resume"] == before["key"]
    assert after["id"] == before["id"]  # resumed


async def test_heartbeat_starvation_ends_in_an_idle_disconnect(
    direct: AppServer, intercept: InterceptionContext, fake: FakeAbly, binary: bool
) -> None:
    """Server pings and HEARTBEATs dropped and maxIdleInterval patched to 500 ms: ably-js, hearing nothing,
    disconnects on its idle timer (a proxy relaying pings would keep it alive however many messages it dropped)."""
    fake.ping_interval = 0.1
    await intercept.add_rules(
        rules.patch(set={"connectionDetails.maxIdleInterval": 500}, action="CONNECTED"),
        rules.drop_pings(from_client=False),
        rules.drop(action="HEARTBEAT", from_client=False),
    )
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        started = time.monotonic()
        disconnected = await sdk.wait_for_state("disconnected", timeout=10)
    assert time.monotonic() - started >= 0.5
    reason = disconnected["reason"]
    assert reason["code"] == 80003 and "No activity seen from realtime" in reason["message"]
    # maxIdleInterval (500, patched; 15,000 unpatched) + realtimeRequestTimeout (1,000): the patch took effect
    assert int(re.search(r"in (\d+)ms", reason["message"]).group(1)) < 5000  # type: ignore[union-attr]


async def test_attached_dropped_once_then_reattached(direct: AppServer, intercept: InterceptionContext,
                                                    binary: bool) -> None:  # fmt: skip
    """The first ATTACHED is dropped: ably-js's attach times out, it retries, and the channel is attached."""
    [rule_id] = await intercept.add_rules(rules.drop(action="ATTACHED", from_client=False, times=1))
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        attaching = asyncio.ensure_future(sdk.command("attach", channel="room", timeout=20))
        assert await intercept.wait_for_rule(rule_id) == 1
        try:
            await attaching  # may fail with the timeout before the retry succeeds
        except CommandError:
            pass
        await sdk.next_event("channelState", lambda e: e["current"] == "attached", timeout=15)
    assert intercept.rule_matches == []  # a drop alone notifies nothing


async def test_ack_replaced_by_nack_fails_the_publish(direct: AppServer, intercept: InterceptionContext,
                                                     binary: bool) -> None:  # fmt: skip
    """Every ACK replaced by a NACK with error 50001: the publish fails with that error."""
    nack = {"action": "NACK", "msgSerial": 0, "count": 1, "error": {"code": 50001, "statusCode": 500,
                                                                     "message": "nacked by a rule"}}  # fmt: skip
    await intercept.add_rules(rules.replace_with(nack, action="ACK"))
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.command("attach", channel="room")
        try:
            await sdk.command("publish", channel="room", name="n", data="d")
        except CommandError as exc:
            error = exc.error
        else:
            raise AssertionError("the publish succeeded although its ACK became a NACK")
    assert error["code"] == 50001 and error["statusCode"] == 500


async def test_delayed_ack_resolves_the_publish_late(direct: AppServer, intercept: InterceptionContext,
                                                    binary: bool) -> None:  # fmt: skip
    """Every ACK delayed 700 ms: the publish resolves, but only once the ACK arrives."""
    await intercept.add_rules(rules.delay(700, action="ACK"), rules.observe(action="ACK", id="ack"))
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.command("attach", channel="room")
        started = time.monotonic()
        await sdk.command("publish", channel="room", name="n", data="d")
        assert time.monotonic() - started >= 0.7
    # The delay rule decided the ACK, so the observer after it never saw it.
    assert [r["ruleId"] for r in intercept.rule_matches] == []


async def test_patched_connected_is_what_the_sdk_exposes(direct: AppServer, intercept: InterceptionContext,
                                                        binary: bool) -> None:  # fmt: skip
    """CONNECTED patched: ably-js exposes the patched connectionKey and clientId."""
    await intercept.add_rules(rules.patch(action="CONNECTED", set={
        "connectionKey": "patched!key", "connectionDetails.connectionKey": "patched!key",
        "connectionDetails.clientId": "patched-client"}))  # fmt: skip
    async with sdk_via_proxy(direct, binary, clientId="patched-client") as sdk:
        await sdk.wait_for_state("connected")
        info = await sdk.command("connection")
    assert info["key"] == "patched!key" and info["clientId"] == "patched-client"


async def test_observed_messages_reach_the_callback(direct: AppServer, intercept: InterceptionContext,
                                                   binary: bool) -> None:  # fmt: skip
    """An observe rule on the client's MESSAGE: the callback gets ruleMatched, the publish goes through."""
    seen: list[dict[str, object]] = []
    intercept.on_rule_matched = seen.append
    rule_id, _ = await intercept.add_rules(rules.observe(action=Action.MESSAGE.name, from_client=True),
                                          rules.pass_all())  # fmt: skip
    async with sdk_via_proxy(direct, binary) as sdk:
        await sdk.command("attach", channel="room")
        await sdk.command("publish", channel="room", name="n", data="d")
        await intercept.wait_for_rule(rule_id)
    assert seen and seen[0]["ruleId"] == rule_id and seen[0]["fromClient"] is True
