"""Notifications that never make traffic wait (ruleMatched): batched, and bounded for a slow suite."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from appserver.control import socket as session_module
from appserver.control.socket import ControlSocket


class StuckSocket:
    """A control WebSocket whose peer reads nothing: every send waits until released."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.release = asyncio.Event()

    async def send_str(self, text: str) -> None:
        await self.release.wait()
        self.sent.append(text)


async def test_a_slow_suite_never_grows_memory_beyond_the_bound() -> None:
    """While the suite reads nothing, at most MAX_PENDING_NOTIFICATIONS wait; the oldest are dropped; the
    rest go out, in order, as batches, once it reads again."""
    ws = StuckSocket()
    session = ControlSocket(1, ws, dispatch=None)  # type: ignore[arg-type]
    limit = session_module.MAX_PENDING_NOTIFICATIONS
    for n in range(limit * 2 + 1):
        session.notify_soon("ruleMatched", {"n": n})
    await asyncio.sleep(0)
    assert len(session._outbox) <= limit
    ws.release.set()
    while session._sender is not None:
        await asyncio.sleep(0.01)
    received: list[Any] = []
    for text in ws.sent:
        payload = json.loads(text)
        received += payload if isinstance(payload, list) else [payload]
    numbers = [item["params"]["n"] for item in received]
    assert numbers == list(range(limit + 1, 2 * limit + 1))  # the newest, in order; the oldest were dropped
    assert any(text.startswith("[") for text in ws.sent)  # batched


async def test_large_notifications_are_bounded_by_bytes_too() -> None:
    """Notifications of large frames are bounded by their size as well as their number."""
    ws = StuckSocket()
    session = ControlSocket(1, ws, dispatch=None)  # type: ignore[arg-type]
    big = "x" * 100_000
    for n in range(500):
        session.notify_soon("ruleMatched", {"n": n, "data": big})
    waiting = sum(len(text) for text in session._outbox)
    assert waiting <= session_module.MAX_PENDING_BYTES and len(session._outbox) < 500
    ws.release.set()
    while session._sender is not None:
        await asyncio.sleep(0.01)
