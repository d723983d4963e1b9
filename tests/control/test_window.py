"""``window: N`` (SPEC Part 10): up to N messages per connection and direction with the suite at once, delivered
strictly in their order, each exactly once; the N+1th is asked about only once the first is delivered."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from appserver.app import AppServer
from shared.cork import TurnCork, cork_writer
from tests.peers import Suite, UpstreamServer, connect_client, receive, receive_data, suite_connection


async def windowed_suite(http: aiohttp.ClientSession, app_server: AppServer, window: int) -> Any:
    context = suite_connection(http, app_server.control_port)
    suite = await context.__aenter__()
    response = await suite.request("startInterception", {"mode": "proxy", "window": window})
    assert response.get("result") == {}, response
    return context, suite


async def test_n_messages_are_with_the_suite_at_once_and_arrive_in_order(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """With window 4 and 6 messages sent, the suite is asked about the first 4 before it answers any; answered
    last to first, they still arrive first to last; the 5th is asked about only once the first is delivered."""
    context, suite = await windowed_suite(http, app_server, 4)
    try:
        asked: list[dict[str, Any]] = []
        answers: dict[str, asyncio.Future[None]] = {}
        four = asyncio.Event()

        async def hold(params: dict[str, Any]) -> dict[str, Any]:
            asked.append(params)
            if len(asked) <= 4:  # the first four wait to be answered, the rest are answered at once
                answers[params["data"]] = asyncio.get_running_loop().create_future()
                if len(asked) == 4:
                    four.set()
                await answers[params["data"]]
            return {"action": "replace", "type": "text", "data": params["data"] + "!"}

        suite.on_transform = hold
        client = await connect_client(http, app_server.proxy_port, upstream.host)
        _, server = await upstream.next()
        sent = [f"m{i}" for i in range(6)]
        for data in sent:
            await client.send_str(data)
        await asyncio.wait_for(four.wait(), 5)
        await asyncio.sleep(0.2)  # room for a fifth request, which must not come while the first is unanswered
        assert [p["data"] for p in asked] == sent[:4]
        for data in reversed(sent[1:4]):  # answered last to first: none may be delivered before the first
            answers[data].set_result(None)
        await asyncio.sleep(0.2)
        assert len(asked) == 4  # the window is still full: the first is with the suite
        answers[sent[0]].set_result(None)
        assert await receive_data(server, 6) == [data + "!" for data in sent]
        assert len(asked) == 6  # each asked about exactly once
        await client.close()
        await server.close()
    finally:
        await context.__aexit__(None, None, None)


async def test_window_one_asks_about_one_message_at_a_time(
    suite: Suite, http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """The default: the next message is asked about only once the one before it was delivered."""
    release = asyncio.Event()

    async def hold(params: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"action": "replace", "type": "text", "data": params["data"]}

    suite.on_transform = hold
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    for data in ("a", "b", "c"):
        await client.send_str(data)
    await asyncio.sleep(0.2)
    assert [p["data"] for p in suite.transform_requests] == ["a"]
    release.set()
    assert await receive_data(server, 3) == ["a", "b", "c"]
    await client.close()
    await server.close()


async def test_a_close_waits_for_the_window(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """The client's close is passed on only after every message before it was answered and delivered."""
    context, suite = await windowed_suite(http, app_server, 8)
    try:
        async def slow(params: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(0.05 * (5 - int(params["data"])))  # the earliest answered last
            return {"action": "replace", "type": "text", "data": params["data"]}

        suite.on_transform = slow
        client = await connect_client(http, app_server.proxy_port, upstream.host)
        _, server = await upstream.next()
        for i in range(5):
            await client.send_str(str(i))
        closing = asyncio.ensure_future(client.close())  # it completes once the upstream has answered the close
        got = []
        while (msg := await receive(server)).type is aiohttp.WSMsgType.TEXT:
            got.append(msg.data)
        assert (got, msg.type, msg.data) == (["0", "1", "2", "3", "4"], aiohttp.WSMsgType.CLOSE, 1000)
        await server.close()  # the upstream answers the close: the client's close completes
        await asyncio.wait_for(closing, 5)
    finally:
        await context.__aexit__(None, None, None)


@pytest.mark.parametrize("window, problem", [(0, "from 1 to 256"), (257, "from 1 to 256"), ("4", "an integer"),
                                             (True, "an integer")])  # fmt: skip
async def test_a_bad_window_is_invalid_params_naming_it(
    http: aiohttp.ClientSession, app_server: AppServer, window: Any, problem: str
) -> None:
    for method, params in (("startInterception", {"mode": "proxy"}), ("openSession", {"mode": "proxy"})):
        async with suite_connection(http, app_server.control_port) as suite:
            response = await suite.request(method, {**params, "window": window})
            assert response["error"]["code"] == -32602, response
            assert "'window'" in response["error"]["message"] and problem in response["error"]["message"], response


class Writes:
    """What a cork's transport was asked to write, one entry per write (the control socket's send()s)."""

    def __init__(self, cork: TurnCork) -> None:
        self.calls: list[bytes] = []
        self._transport = cork._transport  # noqa: SLF001
        cork._transport = self  # type: ignore[assignment]  # noqa: SLF001

    def write(self, data: bytes) -> None:
        self.calls.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def test_with_a_window_the_requests_about_what_one_read_brought_leave_in_one_write(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """Eight frames that arrive together are asked about in one send() to the suite, not one each (nor the first
    alone and the rest after it): the control connection's cork holds whole turns while the window is > 1, and
    only then (a lone request of window 1 leaves at once)."""
    context, suite = await windowed_suite(http, app_server, 8)
    try:
        socket = app_server.registry.classic.suite.active
        assert socket is not None and socket.cork is not None and socket.cork.whole_turns
        writes = Writes(socket.cork)
        client = await connect_client(http, app_server.proxy_port, upstream.host)
        _, server = await upstream.next()
        cork_writer(client).whole_turns = True  # the client's eight frames go in one write too
        sent = [f"m{i}" for i in range(8)]
        for data in sent:
            await client.send_str(data)
        assert await receive_data(server, 8) == sent
        asked = [call for call in writes.calls if b"transformInterceptedMessage" in call]
        assert [call.count(b"transformInterceptedMessage") for call in asked] == [8], writes.calls
        await client.close()
        await server.close()
    finally:
        await context.__aexit__(None, None, None)
    assert not socket.cork.whole_turns  # released: it is no longer the suite's


async def test_window_one_writes_a_lone_request_at_once(
    suite: Suite, app_server: AppServer
) -> None:
    socket = app_server.registry.classic.suite.active
    assert socket is not None and socket.cork is not None and not socket.cork.whole_turns
