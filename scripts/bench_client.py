"""Benchmark helper: the WebSocket client that drives the workloads (a process of its own).

Jobs arrive one JSON line at a time on stdin, each answered by one JSON line.
Every job opens fresh connections (not timed), runs, and closes them:

* ``{"op": "latency", "url", "headers", "proxy", "kind", "size", "count", "warmup"}``:
  one message at a time; answers ``{"rtt_us": [...]}``;
* ``{"op": "throughput", ..., "conns"}``: ``count`` messages spread over ``conns``
  connections, each connection sending all of its share without waiting for
  the echoes; answers ``{"elapsed_s": ...}`` (first send to last echo);
* ``{"op": "churn", ..., "count"}``: ``count`` short-lived connections, closed by
  either side, some abruptly; answers ``{"elapsed_s": ...}``.

Every echo is checked (same type, same payload, in order). A job that fails or
exceeds ``timeout`` answers ``{"error": ...}``. It exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

MessageData = str | bytes


def payloads(kind: str, size: int, count: int) -> list[MessageData]:
    """Distinct payloads (a sequence number first), so order and content can be checked."""
    texts = [f"{i:010d}".ljust(size, "x") for i in range(count)]
    return texts if kind == "text" else [t.encode("ascii") for t in texts]  # type: ignore[misc]


async def send(ws: aiohttp.ClientWebSocketResponse, data: MessageData) -> None:
    if isinstance(data, str):
        await ws.send_str(data)
    else:
        await ws.send_bytes(data)


async def expect(ws: aiohttp.ClientWebSocketResponse, data: MessageData) -> None:
    msg = await ws.receive()
    if msg.data != data:
        raise RuntimeError(f"unexpected echo: {msg.type.name} {str(msg.data)[:40]!r} (expected {str(data)[:40]!r})")


async def connect(session: aiohttp.ClientSession, job: dict[str, Any]) -> aiohttp.ClientWebSocketResponse:
    return await session.ws_connect(
        job["url"], headers=job.get("headers") or {}, proxy=job.get("proxy"), max_msg_size=0, autoping=True
    )


async def latency(session: aiohttp.ClientSession, job: dict[str, Any]) -> dict[str, Any]:
    warmup, count = job["warmup"], job["count"]
    messages = payloads(job["kind"], job["size"], warmup + count)
    rtts: list[float] = []
    ws = await connect(session, job)
    try:
        for i, data in enumerate(messages):
            start = time.perf_counter_ns()
            await send(ws, data)
            await expect(ws, data)
            if i >= warmup:
                rtts.append((time.perf_counter_ns() - start) / 1000)
    finally:
        await ws.close()
    return {"rtt_us": rtts}


async def pipelined(ws: aiohttp.ClientWebSocketResponse, messages: list[MessageData]) -> None:
    async def sender() -> None:
        for data in messages:
            await send(ws, data)

    sending = asyncio.create_task(sender())
    try:
        for data in messages:
            await expect(ws, data)
    finally:
        if not sending.done():
            sending.cancel()
    await sending


async def throughput(session: aiohttp.ClientSession, job: dict[str, Any]) -> dict[str, Any]:
    conns, count = job["conns"], job["count"]
    shares = [count // conns + (1 if i < count % conns else 0) for i in range(conns)]
    sockets = await asyncio.gather(*(connect(session, job) for _ in range(conns)))
    try:
        work = [payloads(job["kind"], job["size"], share) for share in shares]
        start = time.perf_counter()
        await asyncio.gather(*(pipelined(ws, messages) for ws, messages in zip(sockets, work)))
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {"elapsed_s": elapsed}


async def churn(session: aiohttp.ClientSession, job: dict[str, Any]) -> dict[str, Any]:
    """Open, exchange one message and close ``count`` connections, 25 at a time: half closed
    by the client, half by the server, every fifth client-side close abrupt."""
    gate = asyncio.Semaphore(25)

    async def one(n: int) -> None:
        async with gate:
            ws = await connect(session, job)
            await send(ws, "ping")
            await expect(ws, "ping")
            if n % 2:
                await ws.send_str("__close__")
                await ws.receive()
            elif n % 5 == 0:
                ws._response.connection.transport.abort()  # type: ignore[union-attr]  # noqa: SLF001
            await ws.close()

    start = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(job["count"])))
    return {"elapsed_s": time.perf_counter() - start}


async def http_get(session: aiohttp.ClientSession, job: dict[str, Any]) -> dict[str, Any]:
    """Sequential GETs on one keep-alive connection: each one's latency (or, streaming, its time to the
    first chunk), and the time for all of them."""
    rtts: list[float] = []
    lasts: list[float] = []  # streaming: the time to the last byte
    streaming = job["op"] == "http_stream"
    started = time.perf_counter()
    for i in range(job["warmup"] + job["count"]):
        if i == job["warmup"]:
            started = time.perf_counter()
        start = time.perf_counter_ns()
        async with session.get(job["url"], headers=job.get("headers") or {}, proxy=job.get("proxy")) as response:
            if response.status != 200:
                raise RuntimeError(f"GET {job['url']}: {response.status}")
            if streaming:
                await response.content.readany()
                first = time.perf_counter_ns()
                size = len(await response.read())
                last = time.perf_counter_ns()
            else:
                await response.read()
                first = time.perf_counter_ns()
        if i >= job["warmup"]:
            rtts.append((first - start) / 1000)
            if streaming:
                lasts.append((last - start) / 1000)
    result: dict[str, Any] = {"rtt_us": rtts, "elapsed_s": time.perf_counter() - started}
    if streaming:
        result["last_us"] = lasts
    return result


async def run_job(session: aiohttp.ClientSession, job: dict[str, Any]) -> dict[str, Any]:
    try:
        async with asyncio.timeout(job.get("timeout", 120)):
            if job["op"] == "latency":
                return await latency(session, job)
            if job["op"] == "throughput":
                return await throughput(session, job)
            if job["op"] == "churn":
                return await churn(session, job)
            if job["op"] in ("http_get", "http_stream"):
                return await http_get(session, job)
            return {"ok": True}
    except TimeoutError:
        return {"error": f"{job['op']} job did not finish within {job.get('timeout', 120)} s"}
    except Exception as exc:  # reported to bench.py, which stops the run
        return {"error": repr(exc)}


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        while line := await reader.readline():
            print(json.dumps(await run_job(session, json.loads(line))), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
