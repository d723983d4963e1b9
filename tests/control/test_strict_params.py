"""SPEC Part 9, strict parameters: every method rejects a parameter it does not take with -32602 naming it,
an unknown method's error names it, and ``decoded: true`` works on openSession as on startInterception."""

from __future__ import annotations

import base64

import aiohttp
import msgpack
import pytest

from appserver.app import AppServer
from appserver.control.params import PARAMS
from tests.peers import UpstreamServer, close_cleanly, receive_data, suite_connection


@pytest.mark.parametrize("method", sorted(PARAMS))
async def test_every_method_names_a_parameter_it_does_not_take(
    http: aiohttp.ClientSession, app_server: AppServer, method: str,
) -> None:  # fmt: skip
    async with suite_connection(http, app_server.control_port) as suite:
        response = await suite.request(method, {"sinse": 3})
        error = response["error"]
        assert error["code"] == -32602, response
        assert error["message"].startswith(f"Invalid params: {method}: unknown parameter 'sinse'"), error
        assert error["data"] == {"field": "sinse"}


@pytest.mark.parametrize(("method", "params", "typo"), [
    ("openSession", {"mode": "direct", "upstream": "ws://127.0.0.1:9/", "decodd": True}, "decodd"),
    ("startInterception", {"mode": "proxy", "decodd": True}, "decodd"),
    ("getTrace", {"sinse": 0}, "sinse"),
])  # fmt: skip
async def test_the_typos_a_newcomer_made_are_refused_and_nothing_is_started(
    http: aiohttp.ClientSession, app_server: AppServer, method: str, params: dict[str, object], typo: str,
) -> None:  # fmt: skip
    async with suite_connection(http, app_server.control_port) as suite:
        response = await suite.request(method, params)
        assert response["error"]["code"] == -32602
        assert f"{method}: unknown parameter '{typo}'" in response["error"]["message"]
        assert not app_server.registry.sessions
        assert app_server.registry.suite.active is None


async def test_a_mistyped_parameter_is_named(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    async with suite_connection(http, app_server.control_port) as suite:
        response = await suite.request("openSession", {"mode": "direct", "upstream": "ws://127.0.0.1:9/",
                                                       "decoded": "yes"})  # fmt: skip
        assert response["error"]["code"] == -32602 and "'decoded' must be a boolean" in response["error"]["message"]


async def test_an_unknown_method_is_named(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    async with suite_connection(http, app_server.control_port) as suite:
        response = await suite.request("startIntercepton", {})
        assert response["error"]["code"] == -32601
        assert "'startIntercepton'" in response["error"]["message"]
        assert "startInterception" in response["error"]["message"]  # what it has, to spot the typo


async def test_open_session_decoded_gives_the_decoded_message(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer,
) -> None:  # fmt: skip
    async with suite_connection(http, app_server.control_port) as suite:
        response = await suite.request("openSession", {"mode": "direct", "upstream": f"ws://{upstream.host}/",
                                                       "decoded": True})  # fmt: skip
        port = response["result"]["proxyPort"]
        client = await http.ws_connect(f"ws://127.0.0.1:{port}/?format=msgpack", autoclose=False, autoping=False)
        _, server = await upstream.next()
        packed = msgpack.packb({"action": 15, "channel": "room", "messages": [{"name": "n", "data": b"\x01"}]})
        await client.send_bytes(packed)
        assert await receive_data(server, 1) == [packed]
        [asked] = suite.transform_requests
        assert asked["type"] == "binary" and base64.b64decode(asked["data"]) == packed
        assert asked["message"]["action"] == 15 and asked["message"]["channel"] == "room"
        assert asked["message"]["messages"][0]["data"] == base64.b64encode(b"\x01").decode()
        await close_cleanly(client, server)
