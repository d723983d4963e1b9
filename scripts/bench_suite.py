"""Benchmark helper: the passthrough test suite (a process of its own, started by bench.py).

Commands arrive one JSON line at a time on stdin, each answered by one JSON line:

* ``{"op": "attach", "url": "ws://127.0.0.1:P/", "rules": [...], "window": N, "encoding": "json"|"msgpack"}``:
  connect to the control API (over the ``jsonrpc-msgpack`` subprotocol for msgpack) and call
  ``startInterception`` in proxy mode with that window (retried while the previous session is still being
  released), then ``addRules`` if rules are given;
* ``{"op": "detach"}``: close the control connection (no suite attached);
* ``{"op": "stats"}``: how many transforms were answered, and ruleMatched notifications seen.

While attached, every ``transformInterceptedMessage`` is answered at once, in
the receive loop, with ``replace`` of the same type and data; notifications
are ignored. Its envelopes are read and written, and its socket corked, as the
Python client (shared/client.py) does it: shared/jsonrpc.py's encodings, and
shared/cork.py's TurnCork, whose ``whole_turns`` is on while the window is > 1
(the answers to every request one read brought leave in one write). It exits
when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp

from shared.cork import cork_writer
from shared.jsonrpc import JSON, MSGPACK

TRANSFORM = "transformInterceptedMessage"
START_ID = "bench-start"
RULES_ID = "bench-rules"


class Suite:
    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.loop_task: asyncio.Task[None] | None = None
        self.started: asyncio.Future[Any] | None = None
        self.answered = 0
        self.observed = 0
        self.rules_added: asyncio.Future[Any] | None = None
        self.binary = False  # the control channel in msgpack
        self.encoding = JSON

    async def send(self, ws: aiohttp.ClientWebSocketResponse, payload: Any) -> None:
        if self.binary:
            await ws.send_bytes(self.encoding.dumps(payload))  # type: ignore[arg-type]
        else:
            await ws.send_str(self.encoding.dumps(payload))  # type: ignore[arg-type]

    async def attach(self, url: str, rules: list[dict[str, Any]], window: int = 1,
                     encoding: str = "json") -> dict[str, Any]:  # fmt: skip
        self.binary = encoding == "msgpack"
        self.encoding = MSGPACK if self.binary else JSON
        answer = await self._start(url, window)
        if answer["ok"] and rules and self.ws is not None:
            self.rules_added = asyncio.get_running_loop().create_future()
            await self.send(self.ws, {"jsonrpc": "2.0", "id": RULES_ID, "method": "addRules",
                                      "params": {"rules": rules}})  # fmt: skip
            reply = await asyncio.wait_for(self.rules_added, 10)
            if "result" not in reply:
                return {"ok": False, "error": f"addRules failed: {reply.get('error')}"}
        return answer

    async def _start(self, url: str, window: int) -> dict[str, Any]:
        if self.ws is not None:
            return {"ok": True}
        self.session = self.session or aiohttp.ClientSession()
        params: dict[str, Any] = {"mode": "proxy"}
        if window != 1:
            params["window"] = window
        for _ in range(50):
            self.ws = await self.session.ws_connect(url, max_msg_size=0, autoping=True,
                                                    protocols=("jsonrpc-msgpack",) if self.binary else ())
            if self.binary and self.ws.protocol != "jsonrpc-msgpack":
                return {"ok": False, "error": "the app server did not accept jsonrpc-msgpack"}
            cork_writer(self.ws).whole_turns = window > 1
            self.started = asyncio.get_running_loop().create_future()
            self.loop_task = asyncio.create_task(self.serve(self.ws))
            request = {"jsonrpc": "2.0", "id": START_ID, "method": "startInterception", "params": params}
            await self.send(self.ws, request)
            reply = await asyncio.wait_for(self.started, 10)
            if "result" in reply:
                return {"ok": True}
            await self.detach()  # most likely: our previous session is not released yet
            await asyncio.sleep(0.05)
        return {"ok": False, "error": f"startInterception failed: {reply.get('error')}"}

    async def serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        kind = aiohttp.WSMsgType.BINARY if self.binary else aiohttp.WSMsgType.TEXT
        async for msg in ws:
            if msg.type is not kind:
                continue
            payload = self.encoding.loads(msg.data)
            if isinstance(payload, list):  # a batch of ruleMatched notifications
                self.observed += len(payload)
                continue
            if payload.get("method") == "ruleMatched":
                self.observed += 1
            elif payload.get("id") == RULES_ID and self.rules_added is not None and not self.rules_added.done():
                self.rules_added.set_result(payload)
            elif payload.get("method") == TRANSFORM:
                params = payload["params"]
                result = {"action": "replace", "type": params["type"], "data": params["data"]}
                await self.send(ws, {"jsonrpc": "2.0", "id": payload["id"], "result": result})
                self.answered += 1
            elif payload.get("id") == START_ID and self.started is not None and not self.started.done():
                self.started.set_result(payload)

    async def detach(self) -> dict[str, Any]:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None
        if self.loop_task is not None:
            await self.loop_task
            self.loop_task = None
        return {"ok": True}

    async def close(self) -> None:
        await self.detach()
        if self.session is not None:
            await self.session.close()


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    suite = Suite()
    try:
        while line := await reader.readline():
            command = json.loads(line)
            try:
                if command["op"] == "attach":
                    answer = await suite.attach(command["url"], command.get("rules") or [], command.get("window", 1),
                                                command.get("encoding", "json"))
                elif command["op"] == "detach":
                    answer = await suite.detach()
                else:
                    answer = {"ok": True, "answered": suite.answered, "observed": suite.observed}
            except Exception as exc:  # reported to bench.py, which stops the run
                answer = {"ok": False, "error": repr(exc)}
            print(json.dumps(answer), flush=True)
    finally:
        await suite.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
