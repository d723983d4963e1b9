"""Moving frames between the two legs of a proxied WebSocket connection.

One reader task per leg puts what arrives into that direction's queue; one
pump task per direction takes the next item, asks the test suite about it,
and delivers it. Ordering comes from this structure alone. What a leg's state
allows is asked of lifecycle.py; this module only moves frames and awaits.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Awaitable, Callable, Protocol

from aiohttp import WSMsgType

from appserver.lifecycle import (
    CloseAction,
    Delivery,
    DELIVERY,
    End,
    LegEvent,
    LegState,
    Side,
    awaits_close_answer,
    close_action,
    close_payload,
    code_from_wire,
    transition,
)
from shared.wire import Frame, MessageType

log = logging.getLogger(__name__)

_message_ids = itertools.count(1)


def next_message_id() -> str:
    """Ids unique per message for this app server's lifetime (transforms and injects)."""
    return str(next(_message_ids))


class WebSocketLike(Protocol):
    """What aiohttp's server and client WebSocket objects have in common."""

    async def receive(self, timeout: float | None = None) -> object: ...
    async def send_frame(self, message: bytes, opcode: WSMsgType, compress: int | None = None) -> None: ...


class Leg:
    """One side's WebSocket: its state machine and the frames we write to it."""

    def __init__(self, side: Side, ws: WebSocketLike, transport: asyncio.Transport, close_timeout: float) -> None:
        self.side = side
        self.ws = ws
        self.transport = transport
        self.close_timeout = close_timeout
        self.state = LegState.OPEN
        self._close_timer: asyncio.TimerHandle | None = None

    def apply(self, event: LegEvent) -> None:
        self.state = transition(self.state, event)
        if awaits_close_answer(self.state):
            self._close_timer = asyncio.get_running_loop().call_later(self.close_timeout, self._no_close_answer)
        elif self.state is LegState.CLOSED:
            self.transport.close()
            if self._close_timer is not None:
                self._close_timer.cancel()

    def _no_close_answer(self) -> None:
        """The peer has close_timeout seconds to answer our close frame before we drop it."""
        if awaits_close_answer(self.state):
            log.info("the %s did not answer our close within %.1fs: dropping it", self.side, self.close_timeout)
            self.abort()

    @property
    def can_send(self) -> bool:
        return DELIVERY[self.state] is Delivery.NOW

    async def send(self, frame: Frame) -> None:
        if isinstance(frame.data, str):
            await self.ws.send_frame(frame.data.encode("utf-8"), WSMsgType.TEXT)
        else:
            await self.ws.send_frame(frame.data, WSMsgType.BINARY)

    async def send_control(self, opcode: WSMsgType, payload: bytes) -> None:
        if self.can_send:
            await self.ws.send_frame(payload, opcode)

    async def send_close(self, code: int | None, reason: str) -> None:
        """Write a close frame ourselves: aiohttp's close() cannot send one without a code."""
        try:
            await self.ws.send_frame(close_payload(code, reason), WSMsgType.CLOSE)
        except (ConnectionError, RuntimeError):
            self.abort()
            return
        self.apply(LegEvent.SENT_CLOSE)

    def abort(self) -> None:
        """Drop TCP without a close frame, so the peer sees an abnormal closure."""
        self.transport.abort()
        self.apply(LegEvent.TRANSPORT_LOST)


async def read_leg(leg: Leg, other: Leg, queue: asyncio.Queue[Frame | End]) -> None:
    """Queue the leg's data frames; relay pings and pongs at once; queue its End last.

    A full queue stops this reader, so TCP pushes back on the peer instead of
    memory growing without bound while the suite is slow.
    """
    warned = False
    while True:
        msg = await leg.ws.receive()
        kind = msg.type  # type: ignore[attr-defined]
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            frame = Frame(MessageType.TEXT if kind is WSMsgType.TEXT else MessageType.BINARY, msg.data)  # type: ignore[attr-defined]
            if queue.full() and not warned:
                warned = True  # once per leg: under sustained load this would repeat for every message
                log.warning("%s messages from the %s are queued: reading paused until the suite catches up",
                            queue.maxsize, leg.side)  # fmt: skip
            await queue.put(frame)
        elif kind in (WSMsgType.PING, WSMsgType.PONG):
            # Pings are the peers' business: relayed end to end, never answered here.
            await _relay_control(other, kind, msg.data)  # type: ignore[attr-defined]
        elif kind is WSMsgType.CLOSE:
            leg.apply(LegEvent.RECEIVED_CLOSE)
            await queue.put(End.close(code_from_wire(msg.data), msg.extra or ""))  # type: ignore[attr-defined]
            return
        else:  # CLOSED, CLOSING or ERROR: the transport is gone without a close frame
            leg.apply(LegEvent.TRANSPORT_LOST)
            await queue.put(End.drop())
            return


async def _relay_control(other: Leg, kind: WSMsgType, payload: bytes) -> None:
    try:
        await other.send_control(kind, payload)
    except ConnectionError:
        log.debug("could not relay %s to the %s: transport gone", kind.name, other.side)


async def pump(
    queue: asyncio.Queue[Frame | End],
    source: Leg,
    dest: Leg,
    decide: Callable[[Frame], Awaitable[Frame | None]],
    on_end: Callable[[Side, End], None],
) -> None:
    """Deliver the source leg's messages in order, then pass its End on."""
    while True:
        item = await queue.get()
        if isinstance(item, End):
            on_end(source.side, item)
            await pass_on_end(item, dest)
            return
        if not dest.can_send:
            log.debug("discarding a %s message: the %s leg is %s", source.side, dest.side, dest.state.value)
            continue
        frame = await decide(item)
        if frame is None or not dest.can_send:
            continue
        try:
            await dest.send(frame)
        except ConnectionError:
            log.debug("could not deliver to the %s: transport gone", dest.side)


async def pass_on_end(end: End, dest: Leg) -> None:
    action = close_action(end, dest.state)
    if action is CloseAction.ABORT:
        dest.abort()
    elif action in (CloseAction.ANSWER_CLOSE, CloseAction.SEND_CLOSE):
        await dest.send_close(end.code, end.reason)
