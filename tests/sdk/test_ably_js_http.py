"""HTTP rules and the HTTP dialogue against the real ably-js 2.28.0 in Node, in direct mode (SPEC Part 4).

ably-js in Node talks to the proxy endpoint for everything: its realtime WebSocket
and its REST requests, which the app server relays to the fake Ably server.
"""

from __future__ import annotations

import asyncio

from appserver.app import AppServer
from shared import http_dialogue, rules
from shared.client import InterceptionContext
from tests.ably_driver import AblyDriver, CommandError, fake_ably_options
from tests.fake_ably import FakeAbly
from tests.sdk_fixtures import SHORT_TIMEOUTS, direct, fake, intercept, publish_and_receive  # noqa: F401 - fixtures


def rest_only(server: AppServer, **overrides: object) -> AblyDriver:
    """ably-js whose realtime side stays unconnected: its REST requests go to the proxy endpoint."""
    options = {**SHORT_TIMEOUTS, "autoConnect": False, "useBinaryProtocol": False, **overrides}
    return AblyDriver(fake_ably_options(f"127.0.0.1:{server.proxy_port}", **options))


async def test_rest_time_answered_by_a_rule(direct: AppServer, intercept: InterceptionContext, fake: FakeAbly) -> None:
    """ably-js's REST time() is answered by an http rule: the SDK returns the rule's time; the fake saw nothing."""
    [rule_id] = await intercept.add_rules(rules.http_respond(200, json=[1234567890123], method="GET", path="/time"))
    async with rest_only(direct) as sdk:
        assert await sdk.command("time") == 1234567890123
    assert await intercept.wait_for_rule(rule_id) == 1 and fake.http_requests == []


async def test_a_failing_primary_host_falls_back(direct: AppServer, intercept: InterceptionContext,
                                                 fake: FakeAbly) -> None:  # fmt: skip
    """The primary host's REST request answered 500 by a rule: ably-js retries on its fallback host, which
    the proxy relays to the fake, and time() succeeds."""
    port = direct.proxy_port
    primary, fallback = await intercept.add_rules(
        rules.http_respond(500, json={"error": {"code": 50000, "statusCode": 500}}, host=f"127.0.0.1:{port}",
                           path="/time"),
        rules.observe(event="http", host="localhost:*", path="/time"),
    )  # fmt: skip
    async with rest_only(direct, fallbackHosts=["localhost"]) as sdk:
        assert isinstance(await sdk.command("time"), int)
    assert await intercept.wait_for_rule(primary) == 1 and await intercept.wait_for_rule(fallback) == 1
    assert [m["url"] for m in intercept.rule_matches if m["ruleId"] == fallback] == [f"http://localhost:{port}/time"]
    assert [path for _, path, _ in fake.http_requests] == ["/time"]  # only the fallback's request reached it


async def test_a_slow_failing_token_request_is_reported(direct: AppServer, intercept: InterceptionContext) -> None:
    """ably-js's authUrl request is held by the suite's callback, then answered 401: the SDK reports the
    authUrl error."""
    async def slow_refusal(request: http_dialogue.HttpExchange) -> object:
        await asyncio.sleep(0.3)
        return http_dialogue.respond(401, json={"error": {"code": 40101, "statusCode": 401, "message": "no"}})

    intercept.transform_http_request = slow_refusal
    await intercept.add_rules(rules.http_transform(path="/auth"))
    auth_url = f"http://127.0.0.1:{direct.proxy_port}/auth"
    async with AblyDriver(fake_ably_options(f"127.0.0.1:{direct.proxy_port}", key=None, authUrl=auth_url,
                                            autoConnect=False, **SHORT_TIMEOUTS)) as sdk:  # fmt: skip
        try:
            await sdk.command("authorize")
        except CommandError as exc:
            error = exc.error
        else:
            raise AssertionError("authorize succeeded although its authUrl answered 401")
    assert error["statusCode"] == 401


async def test_a_failed_connectivity_check_is_the_internet_down(direct: AppServer,
                                                               intercept: InterceptionContext) -> None:  # fmt: skip
    """Its realtime connects refused and its connectivity check answered 503: ably-js concludes the network is
    unreachable (rather than that its hosts are), and says so."""
    await intercept.add_rules(rules.http_respond(503, body="no", path="/is-the-internet-up.txt"),
                              rules.refuse_connect(503, times=None, path="/"))  # fmt: skip
    async with AblyDriver(fake_ably_options(f"127.0.0.1:{direct.proxy_port}", fallbackHosts=["localhost"],
                                            **SHORT_TIMEOUTS)) as sdk:  # fmt: skip
        disconnected = await sdk.next_event(
            "state", lambda e: e["current"] == "disconnected" and e["reason"] is not None, timeout=15)
    assert "network unreachable" in disconnected["reason"]["message"]


async def test_comet_transport_through_the_app_server_survives_a_dropped_poll(
    direct: AppServer, intercept: InterceptionContext, fake: FakeAbly
) -> None:
    """ably-js on its Comet transport (HTTP long polling: every protocol message is HTTP) through the app
    server's streaming HTTP path: it connects, publishes and receives; an HTTP rule drops its first poll
    (connection reset), and ably-js reconnects on Comet and goes on publishing and receiving."""
    fake.COMET_POLL = 0.3  # polls end soon, so that there are more of them
    [rule_id] = await intercept.add_rules(rules.http_drop("reset", path="/comet/*/recv", times=1, skip=3))
    async with AblyDriver(fake_ably_options(f"127.0.0.1:{direct.proxy_port}", transports=["comet"],
                                            useBinaryProtocol=False, **SHORT_TIMEOUTS)) as sdk:  # fmt: skip
        await sdk.wait_for_state("connected")
        received = await publish_and_receive(sdk, "over comet")
        assert received["data"] == "over comet"
        assert await intercept.wait_for_rule(rule_id, count=4) >= 4  # a poll was dropped (the fourth)…
        await sdk.wait_for_state("connected", timeout=15)  # …and ably-js came back
        await sdk.command("publish", channel="room", name="again", data="after the drop")
        again = await sdk.next_event("message", lambda e: e["data"] == "after the drop")
    assert again["name"] == "again"
    assert all(type(conn).__name__ == "CometConnection" for conn in fake.connections)


async def test_rest_publish_observed_and_answered(direct: AppServer, intercept: InterceptionContext,
                                                  fake: FakeAbly) -> None:  # fmt: skip
    """A REST publish (POST /channels/room/messages) is seen by an observe rule and answered 201 by the next
    rule, whose fields match its JSON body; ably-js reports the rule's answer."""
    observe, answer = await intercept.add_rules(
        rules.observe(event="http", method="POST", path="/channels/*/messages"),
        rules.http_respond(201, json={"channel": "room", "messageId": "rule:0"}, method="POST",
                           path="/channels/room/messages", fields={"name": "greeting"}),
    )  # fmt: skip
    async with rest_only(direct) as sdk:
        result = await sdk.command("request", method="post", path="/channels/room/messages",
                                   body={"name": "greeting", "data": "hello"})  # fmt: skip
    assert result["statusCode"] == 201 and result["success"] is True
    assert await intercept.wait_for_rule(observe) == 1 and await intercept.wait_for_rule(answer) == 1
    [seen] = [m for m in intercept.rule_matches if m["ruleId"] == observe]
    assert (seen["method"], seen["url"]) == ("POST", f"http://127.0.0.1:{direct.proxy_port}/channels/room/messages")
