"""ably-js's browser bundle in headless Chromium, through mitmproxy regular mode, in JSON and msgpack.

The app server launches a real mitmdump when the suite calls startInterception
{"mode": "proxy"}; Chromium (Debian's ``chromium``, driven by playwright-core
through tests/js/browser_driver.mjs) uses it as its HTTP proxy for everything,
loopback included (``--proxy-bypass-list=<-loopback>``), and the page's ably-js
connects to the fake Ably server's port as if it were the real service. The
suite uses the product's client library, as a test author would.

Needs ``apt-get install -y chromium`` (skipped, with the reason, without it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

from appserver.app import AppServer
from shared.ably import Action
from shared.client import Intercepted, InterceptionContext
from tests.ably_driver import BROWSER_DRIVER, AblyDriver, fake_ably_options
from tests.fake_ably import FakeAbly
from tests.sdk_fixtures import (  # noqa: F401 - fixtures are found by name
    SHORT_TIMEOUTS,
    Traffic,
    binary,
    driver_pid,
    expected_format,
    fake,
    intercepting,
    mitmdump_stack,
    next_ably_connection,
    round_trip,
    tag_data,
)

log = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} not found: the browser tests need Debian's chromium (apt-get install -y chromium)",
)


#: A host mitmdump's log shows the browser asking for: a CONNECT target or an absolute-form URL.
REQUESTED_HOST = re.compile(r"(?:CONNECT |server connect |certificate for |[a-z]+://)\[?([^\s/:\]]+)")


def requested_hosts(caplog: pytest.LogCaptureFixture) -> set[str]:
    """Every host the browser asked mitmproxy for during the test (from mitmdump's log); never empty."""
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    lines = [r.getMessage() for r in records if r.name == "appserver.mitmdump"]
    hosts = {host for line in lines for host in REQUESTED_HOST.findall(line)}
    assert hosts, "no requests in mitmdump's log (logger appserver.mitmdump): this check cannot see the browser"
    return hosts


@pytest.fixture
def loopback_only(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if the browser asked mitmproxy for anything but loopback (its own background traffic)."""
    yield
    hosts = requested_hosts(caplog)
    assert hosts <= {"127.0.0.1"}, f"the browser asked for non-loopback hosts: {hosts}"


@pytest.fixture
async def intercept(loopback_only: None, mitmdump_stack: AppServer) -> AsyncIterator[InterceptionContext]:
    """The active test suite (startInterception in proxy mode: mitmdump is running) and its context."""
    async with intercepting(mitmdump_stack) as context:
        yield context


def descendants(pid: int) -> dict[int, str]:
    """Every live process below pid (children, their children, …), with its command line."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.update((child, commands[child]) for child in children)
        frontier.extend(children)
    return found


async def assert_gone(processes: dict[int, str], timeout: float = 5) -> None:
    def alive() -> dict[int, str]:
        left = {}
        for pid, command in processes.items():
            with contextlib.suppress(OSError):
                if (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    left[pid] = command
        return left

    for _ in range(int(timeout / 0.1)):
        if not alive():
            return
        await asyncio.sleep(0.1)
    assert not alive(), f"processes left running: {alive()}"


@contextlib.asynccontextmanager
async def browser_sdk(stack: AppServer, fake: FakeAbly, binary: bool, **overrides: Any) -> AsyncIterator[AblyDriver]:
    """ably-js in Chromium, proxied by the stack's mitmdump, aimed at the fake; nothing of it survives the block."""
    options = fake_ably_options(fake.host, useBinaryProtocol=binary, **{**SHORT_TIMEOUTS, **overrides})
    proxy = f"http://127.0.0.1:{stack.config.mitmproxy_port}"
    sdk = AblyDriver(options, script=BROWSER_DRIVER, args=["--proxy-server", proxy])
    async with sdk:
        browser = descendants(driver_pid(sdk))
        assert any("chromium" in command for command in browser.values()), browser
        try:
            yield sdk
        finally:
            browser.update(descendants(driver_pid(sdk)))
            log.debug("browser driver stderr:\n%s", sdk.stderr.decode(errors="replace"))
    await assert_gone(browser)


async def test_browser_end_to_end(
    mitmdump_stack: AppServer, fake: FakeAbly, intercept: InterceptionContext, binary: bool
) -> None:
    """Chromium's ably-js through mitmproxy: the suite sees the connection (heartbeats=true, its format) and
    transforms decoded messages both ways; the SDK attaches, publishes, is ACKed and receives its message."""
    from_client: list[Intercepted] = []
    from_server: list[Intercepted] = []
    intercept.transform_client_message = tag_data(" +client", from_client)
    intercept.transform_server_message = tag_data(" +server", from_server)
    async with browser_sdk(mitmdump_stack, fake, binary) as sdk:
        opened, upstream, received, closed = await round_trip(sdk, intercept, fake)
    headers = {name.lower(): value for name, value in opened.headers.items()}
    assert (opened.host, opened.proto, opened.path) == (fake.host, "ws", "/")
    assert opened.query["heartbeats"] == "true"  # a browser cannot see WebSocket pings
    assert opened.query["v"] == "6" and "browser" in opened.query["agent"]
    assert opened.query["format"] == ("msgpack" if binary else "json")
    assert opened.format is upstream.format is expected_format(binary)
    assert "Chrome" in headers["user-agent"] and headers["origin"].startswith("http://127.0.0.1:")
    assert {item.format for item in from_client + from_server} == {expected_format(binary)}
    assert [item.action for item in from_client] == [Action.ATTACH, Action.MESSAGE, Action.CLOSE]
    sent = from_client[1].message
    assert sent is not None and sent["channel"] == "room" and sent["messages"][0]["name"] == "greeting"
    server_actions = [item.action for item in from_server]
    assert server_actions[0] == Action.CONNECTED and {Action.ATTACHED, Action.ACK} <= set(server_actions)
    assert next(m for m in upstream.received if m["action"] == Action.MESSAGE)["messages"][0]["data"] == (
        "hello +client"
    )
    assert received["data"] == "hello +client +server"
    assert received["connectionId"] == upstream.connection_id
    # whoever closes first: the browser's WebSocket.close() sends no code, the fake's after CLOSED sends 1000
    assert closed.clean and closed.code in (None, 1000)


async def test_browser_dropped_ack_resent_after_injected_disconnected(
    mitmdump_stack: AppServer, fake: FakeAbly, intercept: InterceptionContext, binary: bool
) -> None:
    """With its ACK dropped, a publish stays pending; after an injected DISCONNECTED the browser's ably-js
    reconnects with resume=<connectionKey>, keeps its connectionId, resends the message and is ACKed."""
    traffic = Traffic().install(intercept)
    acks = 0

    def drop_first_ack(item: Intercepted) -> dict[str, Any] | None:
        nonlocal acks
        if item.action == Action.ACK:
            acks += 1
            if acks == 1:
                return None
        return item.message

    intercept.transform_server_message = drop_first_ack
    async with browser_sdk(mitmdump_stack, fake, binary) as sdk:
        await sdk.wait_for_state("connected")
        first = await next_ably_connection(intercept)
        before = await sdk.command("connection")
        await sdk.command("attach", channel="room")
        publish = asyncio.create_task(sdk.command("publish", channel="room", name="n", data="unacked"))
        try:
            original = await traffic.next(Action.MESSAGE, from_client=True)
            await traffic.next(Action.ACK, from_client=False)
            await asyncio.sleep(0.5)
            assert not publish.done(), "the publish completed although its ACK was dropped"
            error = {"code": 80003, "statusCode": 400, "message": "injected by the test"}
            await intercept.inject_message(first.id, {"action": Action.DISCONNECTED, "error": error}, from_client=False)
            disconnected = await sdk.wait_for_state("disconnected")
            await sdk.wait_for_state("connected")
            second = await next_ably_connection(intercept)
            resent = await traffic.next(Action.MESSAGE, from_client=True)
            assert await asyncio.wait_for(publish, 10) is None
        finally:
            publish.cancel()
        after = await sdk.command("connection")
    assert disconnected["reason"]["code"] == 80003
    assert second.query["resume"] == before["key"] and second.query["heartbeats"] == "true"
    assert after["id"] == before["id"]
    assert (original.connection_id, resent.connection_id) == (first.id, second.id)
    assert original.message is not None and resent.message is not None
    assert resent.message["msgSerial"] == original.message["msgSerial"]
    assert resent.message["messages"][0]["data"] == "unacked"
    assert acks == 2


async def test_browser_comet_through_proxy_mode_survives_a_dropped_poll(
    mitmdump_stack: AppServer, fake: FakeAbly, intercept: InterceptionContext
) -> None:
    """Chromium's ably-js forced onto its Comet transport (transports: ['xhr_polling']) through mitmproxy: every
    protocol message is an HTTP request the redirector sends to the app server; it connects, publishes and
    receives, and when an HTTP rule drops one of its polls it reconnects and goes on."""
    from shared import rules
    from tests.sdk_fixtures import publish_and_receive

    fake.COMET_POLL = 0.3  # polls end soon, so that there are more of them
    # The sixth poll (about 1.5 s in: after the publish below) is dropped.
    drop = rules.http_drop("reset", path="/comet/*/recv", times=1, skip=5)
    [rule_id] = await intercept.add_rules(drop)
    async with browser_sdk(mitmdump_stack, fake, False, transports=["xhr_polling"],
                           realtimeRequestTimeout=5000) as sdk:  # fmt: skip
        await sdk.wait_for_state("connected")
        received = await publish_and_receive(sdk, "over xhr polling")
        assert received["data"] == "over xhr polling"
        assert await intercept.wait_for_rule(rule_id, count=6, timeout_ms=15_000) >= 6  # the dropped one
        await sdk.wait_for_state("connected", timeout=20)
        await sdk.command("publish", channel="room", name="again", data="after the drop")
        again = await sdk.next_event("message", lambda e: e["data"] == "after the drop")
    assert again["name"] == "again"
    comets = [conn for conn in fake.connections if type(conn).__name__ == "CometConnection"]
    assert comets and len(comets) == len(fake.connections)  # no WebSocket at all
    assert all(not conn.stream for conn in comets)  # browsers poll
