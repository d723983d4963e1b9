"""The real ably-python SDK (3.x), driven over stdin/stdout like tests/js/driver.mjs.

Runs in its own virtualenv (.venv-ably-python, made by `make test-deps`): ably-python
needs websockets < 16, the proxy 17. One JSON command per line on stdin
(``{"id": 1, "cmd": "attach", "channel": "room"}``), answered by
``{"event": "result", "id": 1, "ok": true, "value": …}`` or ``"ok": false`` with the
SDK's ``error`` (code, statusCode, message); connection and channel state changes
are events (``{"event": "state", "current": …, "previous": …, "reason": …}``).
It closes its client and exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from ably import AblyRealtime


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def error_info(exc: Any) -> dict[str, Any] | None:
    if exc is None:
        return None
    return {"code": getattr(exc, "code", None), "statusCode": getattr(exc, "status_code", None),
            "message": str(getattr(exc, "message", exc))}  # fmt: skip


class Driver:
    def __init__(self) -> None:
        self.client: AblyRealtime | None = None

    async def create(self, options: dict[str, Any]) -> None:
        self.client = AblyRealtime(**options)
        self.client.connection.on(lambda change: emit({
            "event": "state", "current": change.current.value, "previous": change.previous.value,
            "reason": error_info(change.reason)}))  # fmt: skip

    def require(self) -> AblyRealtime:
        if self.client is None:
            raise RuntimeError('no client: send "create" first')
        return self.client

    async def run(self, cmd: dict[str, Any]) -> Any:
        name = cmd["cmd"]
        if name == "create":
            return await self.create(cmd.get("options") or {})
        client = self.require()
        if name == "connect":
            return client.connect()
        if name == "connection":
            details = client.connection.connection_details
            return {"state": client.connection.state.value, "id": getattr(client.connection, "connection_id", None),
                    "maxIdleInterval": getattr(details, "max_idle_interval", None)}  # fmt: skip
        if name == "attach":
            channel = client.channels.get(cmd["channel"])
            channel.on(lambda change: emit({"event": "channelState", "channel": cmd["channel"],
                                             "current": change.current.value, "reason": error_info(change.reason)}))
            await channel.attach()
            return None
        if name == "publish":
            await client.channels.get(cmd["channel"]).publish(cmd.get("name"), cmd.get("data"))
            return None
        if name == "close":
            await client.close()
            return None
        raise RuntimeError(f"unknown command {name!r}")


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    driver = Driver()
    tasks: set[asyncio.Task[None]] = set()

    async def answer(cmd: dict[str, Any]) -> None:
        try:
            value = await driver.run(cmd)
            emit({"event": "result", "id": cmd["id"], "ok": True, "value": value})
        except Exception as exc:  # the SDK's error goes back to the test
            emit({"event": "result", "id": cmd["id"], "ok": False, "error": error_info(exc)})

    while line := await reader.readline():
        task = asyncio.ensure_future(answer(json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if driver.client is not None:
        try:
            await asyncio.wait_for(driver.client.close(), 5)
        except Exception:  # closing a client that never connected
            pass


if __name__ == "__main__":
    asyncio.run(main())
