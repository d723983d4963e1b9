"""Rules against the real ably-python 3.x, JSON and msgpack, in direct mode (its own virtualenv)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from appserver.app import AppServer
from shared import rules
from shared.client import InterceptionContext
from tests.ably_driver import AblyPythonDriver, CommandError, ably_python_options
from tests.sdk_fixtures import binary, direct, fake, intercept  # noqa: F401 - fixtures are found by name

pytestmark = pytest.mark.timeout(60)


def python_sdk(server: AppServer, binary: bool, **overrides: Any) -> AblyPythonDriver:  # noqa: F811
    options = {"use_binary_protocol": binary, "disconnected_retry_timeout": 300, "realtime_request_timeout": 2000,
               **overrides}  # fmt: skip
    return AblyPythonDriver(ably_python_options(f"127.0.0.1:{server.proxy_port}", **options))


async def test_refused_first_connect_is_retried(direct: AppServer, intercept: InterceptionContext, binary: bool) -> None:
    """ably-python's first handshake refused with 503: it reports disconnected, retries, and connects."""
    await intercept.add_rules(rules.refuse_connect(503, path="/"))
    async with python_sdk(direct, binary) as sdk:
        await sdk.wait_for_state("disconnected")
        await sdk.wait_for_state("connected")
    [listed] = await intercept.list_rules()
    assert (listed["matched"], listed["remaining"]) == (2, 0)


async def test_ack_replaced_by_nack_fails_the_publish(direct: AppServer, intercept: InterceptionContext,
                                                     binary: bool) -> None:  # fmt: skip
    """Every ACK turned into a NACK with error 50001: ably-python's publish fails with that error."""
    nack = {"action": "NACK", "msgSerial": 0, "count": 1,
            "error": {"code": 50001, "statusCode": 500, "message": "nacked by a rule"}}  # fmt: skip
    await intercept.add_rules(rules.replace_with(nack, action="ACK"))
    async with python_sdk(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        await sdk.command("attach", channel="room")
        with pytest.raises(CommandError) as failed:
            await sdk.command("publish", channel="room", name="n", data="d")
    assert failed.value.error["code"] == 50001


async def test_delayed_ack_resolves_the_publish_late(direct: AppServer, intercept: InterceptionContext,
                                                    binary: bool) -> None:  # fmt: skip
    """Every ACK delayed 700 ms: ably-python's publish resolves, once the ACK arrives."""
    await intercept.add_rules(rules.delay(700, action="ACK"))
    async with python_sdk(direct, binary) as sdk:
        await sdk.wait_for_state("connected")
        await sdk.command("attach", channel="room")
        started = time.monotonic()
        await sdk.command("publish", channel="room", name="n", data="d")
        assert time.monotonic() - started >= 0.7


async def test_connect_answered_with_a_fatal_error(direct: AppServer, intercept: InterceptionContext,
                                                   binary: bool) -> None:  # fmt: skip
    """The proxy alone answers the handshake with ERROR 40101 and a close: ably-python fails with that error."""
    error = {"code": 40101, "statusCode": 401, "message": "Invalid credentials (rule)"}
    await intercept.add_rules(rules.answer_connect({"action": "ERROR", "error": error}, close=1000, path="/"))
    async with python_sdk(direct, binary) as sdk:
        failed = await sdk.wait_for_state("failed")
    assert failed["reason"]["code"] == 40101
