"""ably-js's REST side in headless Chromium through a real mitmdump (proxy mode), with Ably's own host names.

The SDK keeps its defaults: REST to ``main.realtime.ably.net``, fallback hosts
``main.[a-e].fallback.ably-realtime.com``, the connectivity check on
``internet-up.ably-realtime.com`` (over plain HTTP here: ``tls: false``).
Chromium asks mitmproxy for those names, the redirector sends every request to
the app server stamped with the host it meant, and the app server's ``--route``
sends ``*.ably.net`` and ``*.ably-realtime.com`` to the fake Ably server on
loopback, so nothing leaves the machine (the check below reads mitmdump's log
and fails on any other host). The same scenarios run in Node, in direct mode,
in test_ably_js_http.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
from yarl import URL

from appserver.app import AppServer
from shared import http_dialogue, rules
from shared.client import InterceptionContext
from tests.ably_driver import BROWSER_DRIVER, AblyDriver, CommandError
from tests.conftest import launching_config, running_app_server
from tests.fake_ably import FakeAbly
from tests.sdk.test_ably_js_browser import CHROMIUM, assert_gone, descendants, requested_hosts
from tests.sdk_fixtures import SHORT_TIMEOUTS, driver_pid, fake, intercepting  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} not found: the browser tests need Debian's chromium (apt-get install -y chromium)",
)

PRIMARY = "main.realtime.ably.net"
FALLBACKS = {f"main.{letter}.fallback.ably-realtime.com" for letter in "abcde"}
CHECK_HOST = "internet-up.ably-realtime.com"
#: Every host the page may ask for: Ably's, routed to the fake, and the driver's own page server.
ALLOWED = {PRIMARY, CHECK_HOST, *FALLBACKS, "127.0.0.1"}


@pytest.fixture
def ably_hosts_only(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if the browser asked mitmproxy for a host that is neither Ably's nor loopback."""
    yield
    hosts = requested_hosts(caplog)
    assert hosts <= ALLOWED, f"the browser asked for other hosts: {hosts - ALLOWED}"


@pytest.fixture
async def routed_stack(no_leaks: None, tmp_path: Path, fake: FakeAbly) -> AsyncIterator[AppServer]:
    """An app server that launches mitmdump, with --route '*.ably.net' and '*.ably-realtime.com' → the fake."""
    upstream = URL(f"http://{fake.host}")
    config = launching_config(tmp_path / "mitmproxy-conf",
                              routes=(("*.ably.net", upstream), ("*.ably-realtime.com", upstream)))  # fmt: skip
    async with running_app_server(config) as server:
        yield server


@pytest.fixture
async def intercept(ably_hosts_only: None, routed_stack: AppServer) -> AsyncIterator[InterceptionContext]:
    async with intercepting(routed_stack) as context:
        yield context


def default_hosts(**overrides: Any) -> dict[str, Any]:
    """ClientOptions that keep ably-js's own hosts (plain HTTP, so no certificate to trust)."""
    return {"key": "fakeApp.fakeKey:fakeSecret", "tls": False, "autoConnect": False,
            "connectivityCheckUrl": f"http://{CHECK_HOST}/is-the-internet-up.txt", **SHORT_TIMEOUTS,
            **overrides}  # fmt: skip


@contextlib.asynccontextmanager
async def browser(stack: AppServer, **overrides: Any) -> AsyncIterator[AblyDriver]:
    """ably-js in Chromium, proxied by the stack's mitmdump; nothing of it survives the block."""
    proxy = f"http://127.0.0.1:{stack.config.mitmproxy_port}"
    sdk = AblyDriver(default_hosts(**overrides), script=BROWSER_DRIVER, args=["--proxy-server", proxy])
    async with sdk:
        processes = descendants(driver_pid(sdk))
        try:
            yield sdk
        finally:
            processes.update(descendants(driver_pid(sdk)))
    await assert_gone(processes)


def matched(intercept: InterceptionContext, rule_id: str) -> list[tuple[str, str | None, str]]:
    """What a rule's ruleMatched notifications say: method, host and path (ably-js adds a random query)."""
    urls = [(m["method"], URL(m["url"])) for m in intercept.rule_matches if m["ruleId"] == rule_id]
    return [(method, url.host, url.path) for method, url in urls]


async def test_rest_time_on_the_primary_host_answered_by_a_rule(
    routed_stack: AppServer, intercept: InterceptionContext, fake: FakeAbly
) -> None:
    """time() goes to main.realtime.ably.net through mitmproxy; a rule on that host answers it: the SDK returns
    the rule's time and the fake saw no request."""
    [rule_id] = await intercept.add_rules(rules.http_respond(200, json=[1234567890123], host=PRIMARY, path="/time"))
    async with browser(routed_stack) as sdk:
        assert await sdk.command("time") == 1234567890123
    assert await intercept.wait_for_rule(rule_id) == 1  # the GET itself: the preflight is forwarded
    assert fake.http_requests == []


async def test_rest_publish_observed_and_answered(
    routed_stack: AppServer, intercept: InterceptionContext, fake: FakeAbly
) -> None:
    """A REST publish is seen by an observe rule (with its real host) and answered 201 by a rule matching its
    JSON body's fields; ably-js reports the rule's answer."""
    observe, answer = await intercept.add_rules(
        rules.observe(event="http", method="POST", path="/channels/*/messages"),
        rules.http_respond(201, json={"channel": "room", "messageId": "rule:0"}, method="POST",
                           path="/channels/room/messages", fields={"name": "greeting"}),
    )  # fmt: skip
    async with browser(routed_stack) as sdk:
        result = await sdk.command("request", method="post", path="/channels/room/messages",
                                   body={"name": "greeting", "data": "hello"})  # fmt: skip
    assert (result["statusCode"], result["success"]) == (201, True)
    assert await intercept.wait_for_rule(answer) == 1
    assert matched(intercept, observe) == [("POST", PRIMARY, "/channels/room/messages")]
    assert fake.http_requests == []


async def test_rest_request_reaches_the_fake_by_route(
    routed_stack: AppServer, intercept: InterceptionContext, fake: FakeAbly
) -> None:
    """With no rule but an observer, time() on Ably's primary host is relayed by --route to the fake server,
    whose answer the SDK returns."""
    [observe] = await intercept.add_rules(rules.observe(event="http", path="/time"))
    async with browser(routed_stack) as sdk:
        assert isinstance(await sdk.command("time"), int)
    assert await intercept.wait_for_rule(observe) == 1
    assert matched(intercept, observe) == [("GET", PRIMARY, "/time")]
    assert [(method, path.split("?")[0]) for method, path, _ in fake.http_requests] == [("GET", "/time")]


async def test_a_failing_primary_host_falls_back_to_a_real_fallback_name(
    routed_stack: AppServer, intercept: InterceptionContext, fake: FakeAbly
) -> None:
    """The primary host's time() answered 500 by a rule: ably-js retries on one of its default fallback hosts
    (main.?.fallback.ably-realtime.com), which --route sends to the fake, and time() succeeds."""
    primary, fallback = await intercept.add_rules(
        rules.http_respond(500, json={"error": {"code": 50000, "statusCode": 500}}, host=PRIMARY, path="/time"),
        rules.observe(event="http", host="*.fallback.ably-realtime.com", path="/time"),
    )  # fmt: skip
    async with browser(routed_stack) as sdk:
        assert isinstance(await sdk.command("time"), int)
    assert await intercept.wait_for_rule(primary) == 1 and await intercept.wait_for_rule(fallback) == 1
    [(method, host, path)] = matched(intercept, fallback)
    assert (method, path) == ("GET", "/time") and host in FALLBACKS
    # only the fallback's request reached it
    assert [(method, path.split("?")[0]) for method, path, _ in fake.http_requests] == [("GET", "/time")]


async def test_a_slow_failing_token_request_is_reported(routed_stack: AppServer,
                                                        intercept: InterceptionContext) -> None:  # fmt: skip
    """An authUrl on Ably's host is held by the suite's callback, then answered 401: the SDK reports it."""
    seen: list[str] = []

    async def slow_refusal(request: http_dialogue.HttpExchange) -> object:
        seen.append(request.url)
        await asyncio.sleep(0.3)
        return http_dialogue.respond(401, json={"error": {"code": 40101, "statusCode": 401, "message": "no"}})

    intercept.transform_http_request = slow_refusal
    await intercept.add_rules(rules.http_transform(path="/auth"))
    async with browser(routed_stack, key=None, authUrl=f"http://{PRIMARY}/auth") as sdk:
        with pytest.raises(CommandError) as refused:
            await sdk.command("authorize")
    assert refused.value.error["statusCode"] == 401
    assert seen and all(url.startswith(f"http://{PRIMARY}/auth") for url in seen)


async def test_a_failed_connectivity_check_is_the_internet_down(routed_stack: AppServer,
                                                               intercept: InterceptionContext) -> None:  # fmt: skip
    """Every realtime connect refused and the connectivity check on internet-up.ably-realtime.com answered 503:
    ably-js in the browser concludes that the network is unreachable, and says so."""
    check = rules.http_respond(503, body="no", host=CHECK_HOST, path="/is-the-internet-up.txt")
    await intercept.add_rules(check, rules.refuse_connect(503, times=None))
    async with browser(routed_stack, autoConnect=True) as sdk:
        disconnected = await sdk.next_event(
            "state", lambda e: e["current"] == "disconnected" and e["reason"] is not None, timeout=20)
    assert "network unreachable" in disconnected["reason"]["message"]
