"""The control channel in msgpack (SPEC Part 10): a connection that offers the ``jsonrpc-msgpack`` subprotocol
carries every JSON-RPC message as one msgpack binary frame, a binary frame's data as the bytes themselves; one
that does not speaks JSON as before."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgpack

from appserver.app import AppServer
from shared.client import InterceptionClient, Intercepted
from shared.wire import Frame
from tests.peers import UpstreamServer, connect_client, receive


async def call(ws: aiohttp.ClientWebSocketResponse, request_id: int, method: str, params: Any) -> dict[str, Any]:
    await ws.send_bytes(msgpack.packb({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
    while True:
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type is aiohttp.WSMsgType.BINARY, msg
        payload = msgpack.unpackb(msg.data)
        if isinstance(payload, dict) and payload.get("id") == request_id and "method" not in payload:
            return payload


async def test_the_dialogue_in_msgpack_carries_binary_data_as_bytes(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    async with http.ws_connect(f"ws://127.0.0.1:{app_server.control_port}/", protocols=("jsonrpc-msgpack",)) as ws:
        assert ws.protocol == "jsonrpc-msgpack"
        assert await call(ws, 1, "startInterception", {"mode": "proxy"}) == {"jsonrpc": "2.0", "id": 1, "result": {}}
        client = await connect_client(http, app_server.proxy_port, upstream.host)
        _, server = await upstream.next()
        opened = msgpack.unpackb((await ws.receive()).data)
        assert opened["method"] == "interceptedConnectionOpened"
        await client.send_bytes(b"\x00\xffraw")
        request = msgpack.unpackb((await asyncio.wait_for(ws.receive(), 5)).data)
        assert request["method"] == "transformInterceptedMessage"
        assert (request["params"]["type"], request["params"]["data"]) == ("binary", b"\x00\xffraw")  # no Base64
        await ws.send_bytes(msgpack.packb({"jsonrpc": "2.0", "id": request["id"], "result": {
            "action": "replace", "type": "binary", "data": b"\x01changed"}}, use_bin_type=True))
        assert (await receive(server)).data == b"\x01changed"
        await client.send_str('{"action":0}')  # a text frame's data is still a string
        request = msgpack.unpackb((await asyncio.wait_for(ws.receive(), 5)).data)
        assert (request["params"]["type"], request["params"]["data"]) == ("text", '{"action":0}')
        await ws.send_bytes(msgpack.packb({"jsonrpc": "2.0", "id": request["id"], "result": {"action": "drop"}}))
        injected = await call(ws, 2, "injectMessage", {"connectionID": opened["params"]["connectionID"],
                                                      "fromClient": False, "type": "binary", "data": b"\x02inj"})
        assert "result" in injected, injected
        assert (await receive(client)).data == b"\x02inj"
        await client.close()
        await server.close()


async def test_a_text_frame_or_bad_msgpack_on_a_msgpack_connection_is_an_error_saying_so(
    http: aiohttp.ClientSession, app_server: AppServer
) -> None:
    async with http.ws_connect(f"ws://127.0.0.1:{app_server.control_port}/", protocols=("jsonrpc-msgpack",)) as ws:
        await ws.send_str('{"jsonrpc":"2.0","id":1,"method":"listRules"}')
        answer = msgpack.unpackb((await asyncio.wait_for(ws.receive(), 5)).data)
        assert answer["error"]["code"] == -32600 and "binary frames of msgpack" in answer["error"]["message"]
        await ws.send_bytes(b"\xc1")  # never used in msgpack
        answer = msgpack.unpackb((await asyncio.wait_for(ws.receive(), 5)).data)
        assert answer["error"]["code"] == -32700 and "not msgpack" in answer["error"]["message"], answer
        answer = await call(ws, 3, "listRules", {})  # and the connection still answers, in msgpack
        assert answer["error"]["code"] == -32001 and "startInterception" in answer["error"]["message"], answer


async def test_without_the_subprotocol_the_channel_is_json(http: aiohttp.ClientSession, app_server: AppServer) -> None:
    async with http.ws_connect(f"ws://127.0.0.1:{app_server.control_port}/") as ws:
        assert ws.protocol is None
        await ws.send_str('{"jsonrpc":"2.0","id":1,"method":"listRules"}')
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type is aiohttp.WSMsgType.TEXT and '"code":-32001' in msg.data and '"id":1' in msg.data


async def test_the_python_client_in_msgpack(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """encoding="msgpack": the callbacks see the same frames; a rule's ruleMatched carries the bytes."""
    client = await InterceptionClient.connect(f"ws://127.0.0.1:{app_server.control_port}/", encoding="msgpack")
    try:
        assert client.encoding.name == "msgpack"
        await client.start_interception("proxy")
        async with client.intercept() as ctx:
            seen: list[Frame] = []

            def change(item: Intercepted) -> Frame:
                seen.append(item.frame)
                return Frame.binary(bytes(item.frame.data) + b"!")

            ctx.transform_client_message = change
            sdk = await connect_client(http, app_server.proxy_port, upstream.host)
            _, server = await upstream.next()
            await sdk.send_bytes(b"\x80")
            assert (await receive(server)).data == b"\x80!"
            assert seen == [Frame.binary(b"\x80")]
            [connection] = ctx.connections
            await client.inject_message(connection.id, Frame.binary(b"\x81"), from_client=False)
            assert (await receive(sdk)).data == b"\x81"
            await sdk.close()
            await server.close()
    finally:
        await client.close()


async def test_an_unknown_encoding_is_refused_at_once() -> None:
    try:
        await InterceptionClient.connect("ws://127.0.0.1:9/", encoding="cbor")
    except ValueError as exc:
        assert "json, msgpack" in str(exc) and "'cbor'" in str(exc)
    else:
        raise AssertionError("no error")
