"""Benchmark helper: the echo upstream (a process of its own, started by bench.py).

Binds a free loopback port, prints ``{"port": N}`` on stdout, and echoes every
data message back with its own frame type until its standard input closes;
the text ``__close__`` makes it close that connection (1000) instead. Plain
HTTP: ``GET /http/small`` answers 100 bytes, ``GET /http/big`` 1 MiB streamed.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import WSMsgType, web

CLOSE_REQUEST = "__close__"


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0, compress=False)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT and msg.data == CLOSE_REQUEST:  # the churn job's server-side closes
            await ws.close(code=1000)
        elif msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


SMALL = b"x" * 100
BIG_CHUNK = b"y" * 65536  # 16 of them: a 1 MiB response, streamed (chunked)


async def small(request: web.Request) -> web.Response:
    return web.Response(body=SMALL)


async def big(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(16):
        await response.write(BIG_CHUNK)
    await response.write_eof()
    return response


async def until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        pass


async def main() -> None:
    app = web.Application()
    app.router.add_get("/http/small", small)
    app.router.add_get("/http/big", big)
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
    try:
        await until_stdin_closes()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
