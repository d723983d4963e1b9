"""The control API's answers to good and bad input, on the connection that sent it."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType

from appserver.app import AppServer
from appserver.config import Config
from tests.conftest import launching_config, make_config, running_app_server
from tests.peers import NO_ANSWER, Suite, UpstreamServer, close_cleanly, connect_client, receive_data, suite_connection


async def still_works(suite: Suite) -> None:
    response = await suite.request("startInterception", {"mode": "proxy"})
    assert response["result"] == {}, response


async def raw_reply(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5) -> Any:
    async with asyncio.timeout(timeout):
        msg = await ws.receive()
    assert msg.type is WSMsgType.TEXT, msg
    return json.loads(msg.data)


@pytest.mark.parametrize(
    "frame, code",
    [
        ("this is not json", -32700),
        ("{\"jsonrpc\": \"2.0\", \"method\": ", -32700),
        ("42", -32600),
        ("{\"hello\": \"world\"}", -32600),
        ("[]", -32600),
        ("{\"jsonrpc\": \"1.0\", \"method\": \"startInterception\", \"id\": 1}", -32600),
        ("{\"jsonrpc\": \"2.0\", \"id\": 1}", -32600),
        ("{\"jsonrpc\": \"2.0\", \"method\": \"injectMessage\", \"id\": 1, \"extra\": true}", -32600),
        ("{\"jsonrpc\": \"2.0\", \"method\": \"noSuchMethod\", \"id\": 1}", -32601),
        ("{\"jsonrpc\": \"2.0\", \"method\": \"startInterception\", \"params\": {\"mode\": 7}, \"id\": 1}", -32602),
        ("{\"jsonrpc\": \"2.0\", \"method\": \"startInterception\", \"params\": {\"mode\": \"bogus\"}, \"id\": 1}", -32602),
        ("{\"jsonrpc\": \"2.0\", \"method\": \"startInterception\", \"params\": {\"mode\": \"local\"}, \"id\": 1}", -32602),
        ("{\"jsonrpc\": \"2.0\", \"method\": \"startInterception\", \"params\": {\"mode\": \"local\", \"pid\": \"1\"}, \"id\": 1}", -32602),
        ("{\"jsonrpc\": \"2.0\", \"method\": \"startInterception\", \"params\": [\"proxy\"], \"id\": 1}", -32602),
        ("{\"jsonrpc\": \"2.0\", \"method\": \"injectMessage\", \"params\": {\"connectionID\": 5}, \"id\": 1}", -32602),
    ],
)  # fmt: skip
async def test_bad_input_gets_the_specified_error(
    http: aiohttp.ClientSession, app_server: AppServer, frame: str, code: int
) -> None:
    """Each kind of bad input gets its JSON-RPC error code, and the server still works afterwards."""
    async with suite_connection(http, app_server.control_port) as suite:
        # The error carries the request's id whenever it can be read, else null (JSON-RPC 2.0 §5).
        response = await suite.send_raw(frame, expect_id=1 if '"id": 1' in frame else None)
        assert response["jsonrpc"] == "2.0"
        assert response["error"]["code"] == code, response
        await still_works(suite)


@pytest.mark.parametrize("params, kind", [("\"x\"", "a string"), ("5", "a number"), ("true", "a boolean"),
                                         ("null", "null"), ("[\"proxy\"]", "an array")])
async def test_params_not_an_object_answered_with_the_request_id(
    http: aiohttp.ClientSession, app_server: AppServer, params: str, kind: str
) -> None:
    """Params that are not an object get -32602 saying what they were, with the caller's id, so its call resolves."""
    async with suite_connection(http, app_server.control_port) as suite:
        frame = f'{{"jsonrpc": "2.0", "id": 5, "method": "injectMessage", "params": {params}}}'
        response = await suite.send_raw(frame, expect_id=5)
        assert response["id"] == 5
        assert response["error"] == {"code": -32602, "message": f"Invalid params: expected an object, got {kind}"}


async def test_batch_answers_each_request_with_its_own_id(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    """In a batch, each request is answered on its own: an invalid one gets its error, with its id, beside the others."""
    async with suite_connection(http, app_server.control_port) as suite:
        batch = [{"jsonrpc": "2.0", "id": "a", "method": "injectMessage", "params": "x"},
                 {"jsonrpc": "1.0", "id": "b", "method": "injectMessage", "params": {}},
                 {"jsonrpc": "2.0", "id": "c", "method": "nope"}, 7,
                 {"jsonrpc": "2.0", "method": "mitmproxyReady"}]  # fmt: skip
        answers: Any = await suite.send_raw(json.dumps(batch))  # a batch's answer is a list: no id to wait on
        assert isinstance(answers, list), answers
        codes = {answer["id"]: answer["error"]["code"] for answer in answers}
        assert codes == {"a": -32602, "b": -32600, "c": -32601, None: -32600}


@pytest.fixture
async def launching_app_server(no_leaks: None, tmp_path: Path) -> AsyncIterator[AppServer]:
    """An app server that would launch mitmdump (none of these tests gets that far)."""
    async with running_app_server(launching_config(tmp_path)) as server:
        yield server


@pytest.mark.parametrize("params", [{}, {"mode": "direct"}])
async def test_start_interception_names_the_accepted_modes(
    http: aiohttp.ClientSession, launching_app_server: AppServer, params: dict[str, Any]
) -> None:
    """Where mitmproxy can be launched, a missing or unknown mode is -32602 naming every accepted value."""
    async with suite_connection(http, launching_app_server.control_port) as suite:
        error = (await suite.request("startInterception", params))["error"]
        assert error["code"] == -32602
        assert all(f"'{mode}'" in error["message"] for mode in ("mode", "proxy", "local", "pid", "none")), error


@pytest.mark.parametrize("params", [{}, {"mode": "none"}, {"mode": "proxy"}], ids=["no mode", "none", "proxy"])
async def test_direct_mode_start_interception_makes_the_suite_active(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, params: dict[str, Any]
) -> None:
    """With --no-mitmproxy, startInterception {} (or mode none) makes the caller the active suite: it is asked."""
    assert app_server.launcher is None
    async with suite_connection(http, app_server.control_port) as suite:
        assert (await suite.request("startInterception", params))["result"] == {}
        client = await connect_client(http, app_server.proxy_port, upstream.host)
        _, server = await upstream.next()
        await client.send_str("asked")
        assert await receive_data(server, 1) == ["asked"]
        assert suite.transform_requests[0]["data"] == "asked"
        await close_cleanly(client, server)


async def test_mode_none_starts_no_mitmproxy(http: aiohttp.ClientSession, launching_app_server: AppServer) -> None:
    """Where mitmproxy could be launched, mode none still makes the suite active without starting it."""
    async with suite_connection(http, launching_app_server.control_port) as suite:
        assert (await suite.request("startInterception", {"mode": "none"}))["result"] == {}
        assert launching_app_server.registry.suite.active is not None
        assert launching_app_server.launcher is not None and launching_app_server.launcher.running_mode is None


@pytest.mark.parametrize(
    "params, field",
    [({}, "mode"), ({"mode": 7}, "mode"), ({"mode": "local"}, "pid"), ({"mode": "local", "pid": True}, "pid"),
     ({"mode": "local", "pid": -3}, "pid")],
)  # fmt: skip
async def test_invalid_params_name_the_field(
    http: aiohttp.ClientSession, launching_app_server: AppServer, params: dict[str, Any], field: str
) -> None:
    """-32602 says which field was wrong."""
    async with suite_connection(http, launching_app_server.control_port) as suite:
        response = await suite.request("startInterception", params)
        assert response["error"]["code"] == -32602
        assert f"'{field}'" in response["error"]["message"]


async def test_binary_frame_is_invalid_request(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    """A binary frame on the control API gets -32600 and the connection keeps working."""
    async with suite_connection(http, app_server.control_port) as suite:
        future = asyncio.get_running_loop().create_future()
        suite._pending[None] = future
        await suite.ws.send_bytes(b'{"jsonrpc": "2.0", "method": "startInterception", "id": 1}')
        response = await asyncio.wait_for(future, 5)
        assert response["error"]["code"] == -32600
        assert "text frames" in response["error"]["message"]
        await still_works(suite)


async def test_batch_gets_batch_answer(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    """A batch gets one array with an answer per request (none for notifications)."""
    async with http.ws_connect(f"ws://127.0.0.1:{app_server.control_port}/") as ws:
        await ws.send_str(json.dumps([
            {"jsonrpc": "2.0", "method": "startInterception", "params": {"mode": "proxy"}, "id": "a"},
            {"jsonrpc": "2.0", "method": "nope", "id": "b"},
            {"jsonrpc": "2.0", "method": "mitmproxyReady"},
        ]))  # fmt: skip
        answers = await raw_reply(ws)
        assert isinstance(answers, list)
        by_id = {a["id"]: a for a in answers}
        assert by_id["a"]["result"] == {}
        assert by_id["b"]["error"]["code"] == -32601
        assert len(answers) == 2


async def test_notification_gets_no_answer(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    """mitmproxyReady, a notification, is accepted without any answer."""
    async with http.ws_connect(f"ws://127.0.0.1:{app_server.control_port}/") as ws:
        await ws.send_str(json.dumps({"jsonrpc": "2.0", "method": "mitmproxyReady"}))
        await ws.send_str(json.dumps({"jsonrpc": "2.0", "method": "nope", "id": 9}))
        answer = await raw_reply(ws)
        assert answer["id"] == 9  # the first answer is the second request's: the notification got none


async def test_second_suite_is_refused_until_first_leaves(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    """startInterception from a second connection is an error while the first is active; then it succeeds."""
    async with suite_connection(http, app_server.control_port) as first:
        await still_works(first)
        async with suite_connection(http, app_server.control_port) as second:
            response = await second.request("startInterception", {"mode": "proxy"})
            assert response["error"]["code"] == -32001
            assert "already the active test suite" in response["error"]["message"]
            await still_works(first)  # calling it again from the active suite is fine
            await first.close()
            await asyncio.sleep(0.05)
            await still_works(second)


async def test_errors_answer_only_the_sender(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    """An error goes to the connection that caused it, never to another."""
    async with suite_connection(http, app_server.control_port) as good, suite_connection(
        http, app_server.control_port
    ) as bad:
        await still_works(good)
        response = await bad.send_raw("garbage")
        assert response["error"]["code"] == -32700
        await asyncio.sleep(0.1)
        assert good._pending == {}  # nothing unexpected arrived on the good connection
        assert good.notifications.empty()


async def test_inject_to_unknown_connection(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    """injectMessage naming an unknown connection is an error that names it."""
    async with suite_connection(http, app_server.control_port) as suite:
        response = await suite.request(
            "injectMessage", {"connectionID": "nope", "fromClient": True, "type": "text", "data": "x"}
        )
        assert response["error"]["code"] == -32002
        assert "nope" in response["error"]["message"]


async def test_inject_to_closed_leg(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """injectMessage towards a leg that is already closing is an error."""
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    connection_id = (await suite.notifications.get())["params"]["connectionID"]

    async def hold(params: dict[str, Any]) -> Any:
        return NO_ANSWER

    # The upstream closes; while the proxy waits for the client's answer, the client leg has had our close.
    await server.send_frame(b"\x03\xe8", WSMsgType.CLOSE)
    async with asyncio.timeout(5):
        while (await client.receive()).type is not WSMsgType.CLOSE:
            pass
    response = await suite.request(
        "injectMessage", {"connectionID": connection_id, "fromClient": False, "type": "text", "data": "late"}
    )
    assert response["error"]["code"] == -32003
    assert "client leg" in response["error"]["message"]
    await client.send_frame(b"\x03\xe8", WSMsgType.CLOSE)


@pytest.mark.parametrize(
    "params, field",
    [({"fromClient": True, "type": "text", "data": "x"}, "connectionID"),
     ({"connectionID": "c", "type": "text", "data": "x"}, "fromClient"),
     ({"connectionID": "c", "fromClient": True, "type": "xml", "data": "x"}, "type"),
     ({"connectionID": "c", "fromClient": True, "type": "binary", "data": "%%%"}, "data")],
)  # fmt: skip
async def test_inject_invalid_params(
    http: aiohttp.ClientSession, app_server: AppServer, params: dict[str, Any], field: str
) -> None:
    """injectMessage with a missing or ill-typed field is -32602 naming it."""
    async with suite_connection(http, app_server.control_port) as suite:
        response = await suite.request("injectMessage", params)
        assert response["error"]["code"] == -32602
        assert f"'{field}'" in response["error"]["message"]


@pytest.fixture
def config() -> Config:
    return make_config(transform_timeout=0.3)


async def test_transform_timeout_passes_message_unchanged(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A suite that never answers: after the timeout the message goes on unchanged, logged at ERROR with its id."""

    async def never(params: dict[str, Any]) -> Any:
        return NO_ANSWER

    suite.on_transform = never
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    await client.send_str("eventually")
    assert await receive_data(server, 1) == ["eventually"]
    message_id = suite.transform_requests[0]["id"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"message {message_id} " in e and "no answer within 0.3s" in e for e in errors), errors
    await close_cleanly(client, server)


async def test_late_answer_after_timeout_is_ignored(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    """An answer that comes after the timeout changes nothing and breaks nothing."""

    async def late(params: dict[str, Any]) -> Any:
        await asyncio.sleep(0.5)
        return {"action": "drop"}

    suite.on_transform = late
    client = await connect_client(http, app_server.proxy_port, upstream.host)
    _, server = await upstream.next()
    await client.send_str("first")
    assert await receive_data(server, 1) == ["first"]
    await asyncio.sleep(0.4)
    await still_works(suite)
    await close_cleanly(client, server)
