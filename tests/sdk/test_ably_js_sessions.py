"""Sessions (SPEC Part 6) with the real ably-js: suites side by side, and a lingering client of one test
that never reaches the next. Node's ably-js in direct mode (pointed at its session's port), Chromium's
through proxy mode (its session's mitmproxy listener as its proxy)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from appserver.app import AppServer
from shared.ably import Action
from shared.client import Intercepted, InterceptionClient, InterceptionContext
from shared.client_methods import SessionInfo
from tests.ably_driver import BROWSER_DRIVER, AblyDriver, fake_ably_options
from tests.conftest import launching_config, running_app_server
from tests.fake_ably import FakeAbly
from tests.sdk_fixtures import SHORT_TIMEOUTS, direct, fake, publish_and_receive  # noqa: F401 - fixtures

CHROMIUM = Path("/usr/bin/chromium")


@contextlib.asynccontextmanager
async def suite_with_session(server: AppServer, mode: str, **params: Any
                             ) -> AsyncIterator[tuple[InterceptionContext, SessionInfo, InterceptionClient]]:  # fmt: skip
    client = await InterceptionClient.connect(f"ws://127.0.0.1:{server.control_port}/")
    try:
        session = await client.open_session(mode, **params)
        async with client.intercept() as context:
            yield context, session, client
    finally:
        await client.close()


def node_sdk(session: SessionInfo, **overrides: Any) -> AblyDriver:
    """ably-js in Node, pointed at the session's own port (direct mode)."""
    return AblyDriver(fake_ably_options(f"127.0.0.1:{session.proxy_port}", useBinaryProtocol=False,
                                        **{**SHORT_TIMEOUTS, **overrides}))  # fmt: skip


def tagging(tag: str, seen: list[Intercepted]) -> Any:
    def transform(message: Intercepted) -> Any:
        seen.append(message)
        if message.action == Action.MESSAGE and message.message is not None:
            for item in message.message.get("messages", []):
                item["data"] = f"{item.get('data')} {tag}"
        return message.message

    return transform


async def test_two_suites_at_once_in_direct_mode(direct: AppServer, fake: FakeAbly) -> None:
    """Two sessions side by side, each with its own ably-js client, transform and trace: each suite changes
    only its own client's messages and sees only its own connection."""
    upstream = f"ws://{fake.host}/"
    async with suite_with_session(direct, "direct", upstream=upstream) as (a, session_a, client_a), \
            suite_with_session(direct, "direct", upstream=upstream) as (b, session_b, client_b):  # fmt: skip
        seen_a: list[Intercepted] = []
        seen_b: list[Intercepted] = []
        a.transform_server_message = tagging("+a", seen_a)
        b.transform_server_message = tagging("+b", seen_b)
        async with node_sdk(session_a) as sdk_a, node_sdk(session_b) as sdk_b:
            got_a = await publish_and_receive(sdk_a, "hello")
            got_b = await publish_and_receive(sdk_b, "hello")
            opened_a, opened_b = await a.next_connection(), await b.next_connection()
        assert (got_a["data"], got_b["data"]) == ("hello +a", "hello +b")
        assert {m.connection_id for m in seen_a} == {opened_a.id} and {m.connection_id for m in seen_b} == {opened_b.id}
        events_a, _ = await client_a.get_trace()
        assert {e["connectionID"] for e in events_a if e["kind"] == "open"} == {opened_a.id}
        events_b, _ = await client_b.get_trace()
        assert {e["connectionID"] for e in events_b if e["kind"] == "open"} == {opened_b.id}


async def test_a_lingering_client_never_reaches_the_next_test(direct: AppServer, fake: FakeAbly) -> None:
    """Test A leaves its ably-js client connected and ends (its session closes: the client is released and
    goes on unchanged); test B's session sees only its own client, however much A's goes on publishing."""
    upstream = f"ws://{fake.host}/"
    lingering = None
    async with contextlib.AsyncExitStack() as stack:
        async with suite_with_session(direct, "direct", upstream=upstream) as (a, session_a, _):
            lingering = await stack.enter_async_context(node_sdk(session_a))
            await publish_and_receive(lingering, "from test A")
            await a.next_connection()
        # test B
        async with suite_with_session(direct, "direct", upstream=upstream) as (b, session_b, client_b):
            seen_b: list[Intercepted] = []
            b.transform_client_message = tagging("", seen_b)
            await lingering.command("publish", channel="room", name="late", data="A lingers")
            late = await lingering.next_event("message", lambda e: e["data"] == "A lingers")
            assert late["name"] == "late"  # A's client works, passed through, nobody's
            async with node_sdk(session_b) as sdk_b:
                await publish_and_receive(sdk_b, "from test B")
                opened_b = await b.next_connection()
            assert {m.connection_id for m in seen_b} == {opened_b.id}
            events, _ = await client_b.get_trace()
            assert [e["connectionID"] for e in events if e["kind"] == "open"] == [opened_b.id]


async def test_closing_a_session_releases_its_ably_js_client(direct: AppServer, fake: FakeAbly) -> None:
    """closeSession while ably-js is connected: it stays connected and goes on publishing and receiving,
    its messages no longer transformed (closeConnections, which closes them with 1001, is in
    tests/control/test_sessions.py)."""
    upstream = f"ws://{fake.host}/"
    async with suite_with_session(direct, "direct", upstream=upstream) as (a, session, client):
        a.transform_server_message = tagging("+a", [])
        async with node_sdk(session) as sdk:
            assert (await publish_and_receive(sdk, "before"))["data"] == "before +a"
            await client.close_session()
            await sdk.command("publish", channel="room", name="greeting", data="after")
            after = await sdk.next_event("message", lambda e: e["data"].startswith("after"))
            assert after["data"] == "after" and (await sdk.command("connection"))["state"] == "connected"


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} not found (apt-get install -y chromium)")
async def test_two_suites_at_once_in_proxy_mode(no_leaks: None, tmp_path: Path, fake: FakeAbly) -> None:
    """Two proxy-mode sessions (one mitmdump, a listener each), each with ably-js in its own Chromium using its
    session's listener as its proxy: each suite transforms only its own client's messages."""
    async with running_app_server(launching_config(tmp_path / "mitmproxy-conf")) as server:
        async with suite_with_session(server, "proxy") as (a, session_a, _), \
                suite_with_session(server, "proxy") as (b, session_b, _):  # fmt: skip
            a.transform_server_message = tagging("+a", [])
            b.transform_server_message = tagging("+b", [])
            options = fake_ably_options(fake.host, useBinaryProtocol=False, **SHORT_TIMEOUTS)
            browser_a = AblyDriver(options, script=BROWSER_DRIVER, args=["--proxy-server", str(session_a.proxy_url)])
            browser_b = AblyDriver(options, script=BROWSER_DRIVER, args=["--proxy-server", str(session_b.proxy_url)])
            async with browser_a as sdk_a, browser_b as sdk_b:
                got_a = await publish_and_receive(sdk_a, "hello")
                got_b = await publish_and_receive(sdk_b, "hello")
                opened_a, opened_b = await a.next_connection(), await b.next_connection()
            assert (got_a["data"], got_b["data"]) == ("hello +a", "hello +b")
            assert opened_a.id != opened_b.id and opened_a.query["heartbeats"] == "true"
