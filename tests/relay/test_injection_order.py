"""SPEC Part 9, injection order, at the socket: what the suite learns of an injection — injectMessage's
answer, waitForRule on a rule that injects, its ruleMatched — is written to the control socket only after
the injected frame was written to its destination's socket.

Every write the app server makes to a socket is recorded in order (the event loop's socket transport,
wrapped for the test), so the order is exact, whatever the scheduling of the processes reading them.
tests/sdk/test_injection_order.py shows the same from ably-js's side."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from asyncio import selector_events

from appserver.app import AppServer
from tests.peers import Suite, UpstreamServer, close_cleanly, connect_client, receive_data

INJECTED = '{"action":13,"channel":"injected-here"}'


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every socket write in this process, in order (the upstream's and the clients' too: each is told
    apart by its content)."""
    log: list[bytes] = []

    original = selector_events._SelectorSocketTransport.write  # noqa: SLF001

    def write(self: Any, data: Any) -> None:
        log.append(bytes(data))
        original(self, data)

    monkeypatch.setattr(selector_events._SelectorSocketTransport, "write", write)  # noqa: SLF001
    yield log


def first_index(log: list[bytes], needle: bytes) -> int:
    for index, data in enumerate(log):
        if needle in data:
            return index
    raise AssertionError(f"{needle!r} was never written")


async def note(suite: Suite, method: str, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            item = await suite.notifications.get()
            if item["method"] == method:
                return item["params"]  # type: ignore[no-any-return]


async def rpc(suite: Suite, method: str, params: dict[str, Any]) -> Any:
    response = await suite.request(method, params)
    assert "result" in response, response
    return response["result"]


async def test_inject_message_answers_after_the_frame_is_written(
    writes: list[bytes], http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
) -> None:  # fmt: skip
    client = await connect_client(http, app_server.proxy_port, upstream.host, "/?format=json")
    _, server = await upstream.next()
    opened = await note(suite, "interceptedConnectionOpened")
    result = await rpc(suite, "injectMessage", {"connectionID": opened["connectionID"], "fromClient": False,
                                                "type": "text", "data": INJECTED})  # fmt: skip
    answer = json.dumps({"id": result["id"]}).replace(" ", "").encode()[1:-1]  # "id":"…"
    assert first_index(writes, b"injected-here") < first_index(writes, answer)
    assert await receive_data(client, 1) == [INJECTED]
    await close_cleanly(client, server)


@pytest.mark.parametrize("notify", [False, True], ids=["waitForRule", "ruleMatched"])
async def test_a_rules_injection_is_reported_after_its_frame_is_written(
    writes: list[bytes], http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
    notify: bool,
) -> None:  # fmt: skip
    actions: list[dict[str, Any]] = [{"type": "pass"}, {"type": "inject", "fromClient": False,
                                                         "raw": {"type": "text", "data": INJECTED}}]  # fmt: skip
    if notify:
        actions.append({"type": "notify"})
    await rpc(suite, "addRules", {"rules": [{"id": "trigger", "match": {"fromClient": True}, "action": actions}]})
    client = await connect_client(http, app_server.proxy_port, upstream.host, "/?format=json")
    _, server = await upstream.next()
    waiting = asyncio.ensure_future(rpc(suite, "waitForRule", {"id": "trigger", "count": 1}))
    await asyncio.sleep(0.05)  # the wait is registered before the trigger arrives
    await client.send_str("trigger-frame")
    assert (await waiting) == {"matched": 1}
    report = b'"ruleMatched"' if notify else b'"matched":1'
    assert first_index(writes, b"injected-here") < first_index(writes, report)
    assert await receive_data(client, 1) == [INJECTED]
    await close_cleanly(client, server)


async def test_a_connect_rules_injection_is_reported_after_its_frame_is_written(
    writes: list[bytes], http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
) -> None:  # fmt: skip
    await rpc(suite, "addRules", {"rules": [{"id": "serve", "match": {"event": "connect"}, "action": [
        {"type": "inject", "raw": {"type": "text", "data": INJECTED}}, {"type": "notify"}]}]})
    client = await connect_client(http, app_server.proxy_port, upstream.host, "/?format=json")
    await note(suite, "ruleMatched")
    assert first_index(writes, b"injected-here") < first_index(writes, b'"ruleMatched"')
    assert await receive_data(client, 1) == [INJECTED]
    await client.close()
