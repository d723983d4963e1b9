"""Soak: many connections, many messages each way, a suite that randomly drops,
replaces, delays and injects. The exact expected stream per connection and
direction is computed and checked: nothing lost, reordered or duplicated.

`make test` runs a small size; `make soak` (SOAK=full) runs 100 connections ×
1,000 messages each way. The seed is printed; SOAK_SEED=… replays one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from typing import Any

import aiohttp
import pytest

from appserver.app import AppServer
from shared.client import Intercepted, InterceptionClient
from shared.wire import Frame
from tests.peers import Router, UpstreamServer, close_cleanly, connect_client, receive_data

FULL = os.environ.get("SOAK") == "full"
CONNECTIONS, MESSAGES = (100, 1000) if FULL else (10, 150)
SEED = int(os.environ.get("SOAK_SEED", random.randrange(2**32)))


def decision(seed: int, data: str) -> str:
    """The suite's fate for a message, a pure function of the seed and the message."""
    digest = hashlib.blake2b(f"{seed}:{data}".encode(), digest_size=2).digest()
    roll = int.from_bytes(digest) % 100
    return "drop" if roll < 10 else "replace" if roll < 30 else "delay" if roll < 40 else "inject" if roll < 45 else "pass"


def expected_stream(seed: int, sent: list[str]) -> list[str]:
    out: list[str] = []
    for data in sent:
        fate = decision(seed, data)
        if fate == "drop":
            continue
        if fate == "replace":
            out.append(data + "~")
        elif fate == "inject":
            out += ["inj-" + data, data]
        else:
            out.append(data)
    return out


def check_windowed(seed: int, sent: list[str], got: list[str], where: str) -> None:
    """With a window (SPEC Part 10) an injection may overtake frames not yet delivered, so it is checked apart:
    the relayed frames are exactly the computed stream, in order, each once; each injection arrives exactly
    once, before the frame whose answer made it."""
    relayed = [data for data in got if not data.startswith("inj-")]
    assert relayed == [data for data in expected_stream(seed, sent) if not data.startswith("inj-")], where
    injected = [data for data in got if data.startswith("inj-")]
    wanted = ["inj-" + data for data in sent if decision(seed, data) == "inject"]
    assert sorted(injected) == sorted(wanted), where
    for injection in injected:
        assert got.index(injection) < got.index(injection[len("inj-"):]), where


@pytest.mark.parametrize("window, encoding", [(1, "json"), (16, "json"), (16, "msgpack")])
async def test_soak_exact_streams(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, window: int, encoding: str
) -> None:
    """Under a randomly dropping/replacing/delaying/injecting suite, every connection's streams arrive exactly as
    computed, with one message at a time with the suite and with 16 at once, over JSON and msgpack."""
    print(f"soak: {CONNECTIONS} connections x {MESSAGES} messages each way, window {window}, {encoding}, seed {SEED} "
          f"(replay: SOAK_SEED={SEED})")  # fmt: skip
    rng = random.Random(SEED)
    client = await InterceptionClient.connect(f"ws://127.0.0.1:{app_server.control_port}/", encoding=encoding)
    try:
        await client.start_interception("proxy", window=window)
        async with client.intercept() as ctx:

            async def suite(item: Intercepted) -> Any:
                assert isinstance(item.frame.data, str)
                fate = decision(SEED, item.frame.data)
                if fate == "drop":
                    return None
                if fate == "replace":
                    return Frame.text(item.frame.data + "~")
                if fate == "delay":
                    await asyncio.sleep(rng.random() * 0.002)
                if fate == "inject":
                    await ctx.inject_message(item.connection_id, Frame.text("inj-" + item.frame.data),
                                             from_client=item.from_client)  # fmt: skip
                return item.frame

            ctx.transform_client_message = suite
            ctx.transform_server_message = suite
            router = Router(upstream)
            try:
                await asyncio.gather(*(one_connection(http, app_server, router, i, window) for i in range(CONNECTIONS)))
            finally:
                await router.close()
    finally:
        await client.close()


async def one_connection(http: aiohttp.ClientSession, app_server: AppServer, router: Router, n: int,
                         window: int = 1) -> None:  # fmt: skip
    sdk = await connect_client(http, app_server.proxy_port, router.host, f"/c{n}")
    server = await router.socket_for(f"/c{n}")
    up = [f"c{n}>{i}" for i in range(MESSAGES)]
    down = [f"c{n}<{i}" for i in range(MESSAGES)]

    async def send(ws: Any, items: list[str]) -> None:
        for item in items:
            await ws.send_str(item)

    want_up, want_down = expected_stream(SEED, up), expected_stream(SEED, down)
    results = await asyncio.gather(
        send(sdk, up), send(server, down),
        receive_data(server, len(want_up), timeout=300), receive_data(sdk, len(want_down), timeout=300),
    )  # fmt: skip
    if window == 1:
        assert results[2] == want_up, f"connection {n}, client→server differs (seed {SEED})"
        assert results[3] == want_down, f"connection {n}, server→client differs (seed {SEED})"
    else:
        check_windowed(SEED, up, results[2], f"connection {n}, client→server differs (seed {SEED})")
        check_windowed(SEED, down, results[3], f"connection {n}, server→client differs (seed {SEED})")
    await close_cleanly(sdk, server)
