"""Benchmark of sessions (SPEC Part 6, issue 15), run by ``make bench`` after bench.py.

Starts an app server (``python -m appserver``, launching mitmdump for proxy-mode sessions, on free loopback
ports) and the echo upstream (bench_echo.py), each a process of its own, then measures from here:

* opening and closing a session: p50 and p99, direct mode and proxy mode (the first proxy session, which
  starts mitmdump, is reported on its own);
* relay throughput of 16 sessions × 10 connections against 1 session × 160 connections, each session with
  a catch-all ``pass`` rule, 100-byte messages pipelined on every connection; target: 16×10 within 20 %.

Prints a table and a JSON line, like bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import HOST, free_ports  # scripts/bench.py, beside this file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the client library (shared/), as a suite would use it
from shared.client import InterceptionClient  # noqa: E402 - after the path
PASS_ALL = [{"match": {}, "action": {"type": "pass"}}]
TARGET = 0.8  # 16 × 10 connections: at least this share of 1 × 160's throughput


async def timed_sessions(control_url: str, mode: str, count: int, upstream: str) -> dict[str, Any]:
    opens: list[float] = []
    closes: list[float] = []
    async with await InterceptionClient.connect(control_url) as client:
        for _ in range(count):
            started = time.perf_counter()
            await client.open_session(mode, upstream=upstream if mode == "direct" else None)
            opened = time.perf_counter()
            await client.close_session()
            opens.append((opened - started) * 1000)
            closes.append((time.perf_counter() - opened) * 1000)
    return {"open_ms": summary(opens), "close_ms": summary(closes)}


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 2), "p99": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
            "n": len(ordered)}  # fmt: skip


async def throughput(http: aiohttp.ClientSession, control_url: str, upstream: str, sessions: int, per_session: int,
                     messages: int) -> float:  # fmt: skip
    """msgs/s of ``messages`` echoes in all, spread over sessions × per_session connections."""
    async with contextlib.AsyncExitStack() as stack:
        ports = []
        for _ in range(sessions):
            client = await stack.enter_async_context(await InterceptionClient.connect(control_url))
            ports.append((await client.open_session("direct", upstream=upstream)).proxy_port)
            await client.add_rules(*PASS_ALL)
        conns = [await stack.enter_async_context(http.ws_connect(f"ws://{HOST}:{port}/bench?format=json"))
                 for port in ports for _ in range(per_session)]  # fmt: skip
        share = messages // len(conns)
        payload = "x" * 100

        async def one(ws: aiohttp.ClientWebSocketResponse) -> None:
            for _ in range(share):
                await ws.send_str(payload)
            for _ in range(share):
                msg = await ws.receive()
                if msg.data != payload:
                    raise RuntimeError(f"unexpected echo {msg.type.name}")

        started = time.perf_counter()
        await asyncio.gather(*(one(ws) for ws in conns))
        return share * len(conns) / (time.perf_counter() - started)


async def run(args: argparse.Namespace, control_url: str, upstream: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:  # 160 at once
        figures: dict[str, Any] = {"direct": await timed_sessions(control_url, "direct", args.sessions, upstream)}
        started = time.perf_counter()
        first = await timed_sessions(control_url, "proxy", 1, upstream)
        figures["proxy_first_ms"] = round((time.perf_counter() - started) * 1000, 1)
        figures["proxy"] = await timed_sessions(control_url, "proxy", max(10, args.sessions // 4), upstream)
        figures["proxy"]["first_open_ms"] = first["open_ms"]["p50"]
        rates: dict[str, list[float]] = {"1x160": [], "16x10": []}
        for _ in range(args.rounds):  # interleaved
            rates["1x160"].append(await throughput(http, control_url, upstream, 1, 160, args.messages))
            rates["16x10"].append(await throughput(http, control_url, upstream, 16, 10, args.messages))
        figures["throughput"] = {k: round(statistics.median(v)) for k, v in rates.items()}
        figures["ratio"] = round(figures["throughput"]["16x10"] / figures["throughput"]["1x160"], 2)
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer sessions and messages")
    args = p.parse_args(argv)
    args.sessions, args.messages, args.rounds = (50, 16_000, 1) if args.quick else (200, 64_000, 3)
    control, proxy, mitm = free_ports(3)
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp, contextlib.ExitStack() as stack:
        echo = subprocess.Popen([py, str(ROOT / "scripts" / "bench_echo.py")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        stack.callback(lambda: (echo.stdin and echo.stdin.close(), echo.wait(10)))
        echo_port = json.loads(echo.stdout.readline())["port"]  # type: ignore[union-attr]
        log = open(Path(tmp) / "appserver.log", "w")
        server = subprocess.Popen([py, "-m", "appserver", "--control-port", str(control), "--proxy-port", str(proxy),
                                   "--mitmproxy-port", str(mitm), "--mitmproxy-confdir", str(Path(tmp) / "conf"),
                                   "--log-level", "WARNING"], stdout=log, stderr=log, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        stack.callback(lambda: (server.terminate(), server.wait(30)))
        deadline = time.monotonic() + 20
        while socket.socket().connect_ex((HOST, control)) != 0:
            if time.monotonic() > deadline or server.poll() is not None:
                print(f"the app server did not start:\n{(Path(tmp) / 'appserver.log').read_text()}")
                return 1
            time.sleep(0.05)
        figures = asyncio.run(run(args, f"ws://{HOST}:{control}/", f"ws://{HOST}:{echo_port}/"))
    d, x, t = figures["direct"], figures["proxy"], figures["throughput"]
    print(f"sessions ({'quick' if args.quick else 'full'}): open / close, ms (p50, p99)")
    print(f"  direct mode   open {d['open_ms']['p50']:8.2f} {d['open_ms']['p99']:8.2f}   close "
          f"{d['close_ms']['p50']:8.2f} {d['close_ms']['p99']:8.2f}   ({d['open_ms']['n']} sessions)")
    print(f"  proxy mode    open {x['open_ms']['p50']:8.2f} {x['open_ms']['p99']:8.2f}   close "
          f"{x['close_ms']['p50']:8.2f} {x['close_ms']['p99']:8.2f}   ({x['open_ms']['n']} sessions; the first, "
          f"which starts mitmdump: {figures['proxy_first_ms']:.0f} ms)")
    print(f"relay throughput, catch-all pass rule: 1 session x 160 conns {t['1x160']:,} msgs/s, "
          f"16 sessions x 10 conns {t['16x10']:,} msgs/s: {figures['ratio']:.2f}x")
    met = figures["ratio"] >= TARGET
    print(f"target (issue 15): {'met' if met else 'MISSED'}  16 x 10 within 20 % of 1 x 160: "
          f"{figures['ratio']:.2f}x >= {TARGET}x")
    print(json.dumps({"bench": "sessions", **figures, "target_met": met}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
