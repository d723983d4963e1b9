"""One leg of a proxied WebSocket connection, and the task that reads it.

A leg is one side's WebSocket (the client's, where we are the server; the
upstream's, where we are the client) with its state machine. Its reader puts
each data frame, and finally the leg's End, on the queue of its direction
(pump.py takes them from there), or, while the pump waits with nothing to do,
delivers a frame the chain lets pass itself (:class:`Lane`); pings and pongs are
relayed at once. What a leg's state allows is asked of lifecycle.py; this
module only moves frames.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from aiohttp import WSMsgType

from appserver.relay.lifecycle import (
    DELIVERY,
    Delivery,
    End,
    LegEvent,
    LegState,
    Side,
    awaits_close_answer,
    close_payload,
    code_from_wire,
    transition,
)
from appserver.verdict import PASS, VERDICTS, Chain, ConnectionHooks, Decider, Delay, Drop, split
from appserver.events import Pinged, Sink, tell
from appserver.relay.frames import websocket_mask
from appserver.relay.upstream import write_uncompressed

if TYPE_CHECKING:
    from appserver.relay.frames import Watch
from shared.wire import Frame, MessageType

log = logging.getLogger(__name__)

#: How long send_written waits for a peer that does not read before it returns anyway (seconds).
WRITTEN_WAIT = 5.0

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
        #: Whether a frame may be written now (DELIVERY of the state): an attribute, read for every frame.
        self.can_send = True
        self._close_timer: asyncio.TimerHandle | None = None
        #: What reads this leg's frames below aiohttp (frames.py), when there is one.
        self.watch: Watch | None = None

    def apply(self, event: LegEvent) -> None:
        self.state = transition(self.state, event)
        self.can_send = DELIVERY[self.state] is Delivery.NOW
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

    async def send_written(self, frame: Frame) -> None:
        """Send, and return only once the frame has left for the socket: uncompressed (so the peer has
        nothing to inflate later), out of the cork (which would write it at the end of this turn) and out
        of the transport's own buffer (a peer that reads slowly holds it there; we wait up to
        WRITTEN_WAIT seconds for it). What the suite learns after an injection (its answer, a rule's
        match) must not overtake the frame (SPEC Part 9)."""
        data, opcode = (frame.data.encode("utf-8"), WSMsgType.TEXT) if isinstance(frame.data, str) else (
            frame.data, WSMsgType.BINARY)  # fmt: skip
        if not write_uncompressed(self.ws, data, opcode):
            await self.ws.send_frame(data, opcode)
        flush = getattr(self.transport, "flush", None)
        if flush is not None:
            flush()
        pause, waited = 0.0005, 0.0
        while self.transport.get_write_buffer_size() > 0 and not self.transport.is_closing():
            if waited >= WRITTEN_WAIT:
                log.debug("the %s has not read an injected frame in %.0f s: answering anyway", self.side, waited)
                return
            await asyncio.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.05)

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


@dataclass
class Controls:
    """What a connection's readers and pumps share besides the frames: its rules on pings, pongs and
    closes, whether the network is silenced, and the pings the suite sent itself (their pongs stop here)."""

    connection_id: str
    hooks: ConnectionHooks | None = None
    silenced: bool = False
    own_pings: dict[Side, set[bytes]] = field(default_factory=lambda: {Side.CLIENT: set(), Side.SERVER: set()})
    delayed: set[asyncio.Task[None]] = field(default_factory=set)
    #: The connection's per-frame sinks: told of every ping and pong and its fate.
    sinks: Sequence[Sink] = ()

    def seen(self, kind: str, from_client: bool, payload: bytes, fate: str) -> None:
        if self.sinks:
            tell(self.sinks, Pinged(self.connection_id, from_client, kind, payload, fate))


@dataclass(frozen=True, slots=True)
class Decided:
    """A frame its reader already asked the chain about (the pump was idle, see :class:`Lane`), with what the
    decider answered: a verdict (the frame sinks were told of it then, as the pump would have) with who gave
    it, or an awaitable of one. It is the first item in the queue, and the pump takes it in its plain loop (a
    window is entered from there, never with a Decided waiting behind)."""

    frame: Frame
    answer: Any
    decider: Decider
    by: str | None = None


class Lane:
    """One direction of a connection as its reader and its pump share it. While the pump waits on an empty
    queue (``idle``), the frame the reader takes next is the very next one the pump would take: the reader
    then does the pump's work for it at once (:meth:`offer`), and a frame the chain lets pass goes to the other
    leg with no task switch. Anything else is queued, and the pump does it as before."""

    __slots__ = ("queue", "dest", "chain", "sinks", "controls", "from_client", "idle")

    def __init__(self, queue: asyncio.Queue[Any], source: Leg, dest: Leg, chain: Chain, sinks: Sequence[Sink],
                 controls: Controls) -> None:  # fmt: skip
        self.queue = queue
        self.dest = dest
        self.chain = chain
        self.sinks = sinks
        self.controls = controls
        self.from_client = source.side is Side.CLIENT
        #: The pump waits on the queue with nothing to do (set and cleared by the pump alone).
        self.idle = False

    def ready(self) -> bool:
        """Whether a frame its reader took now may be decided and delivered at once: the pump waits with nothing
        queued, and the destination can take it now (unsilenced, nothing unsent in its socket's buffer)."""
        dest = self.dest
        return self.idle and not self.queue.qsize() and dest.can_send and not self.controls.silenced and \
            not dest.transport.get_write_buffer_size()  # fmt: skip

    def decide(self, frame: Frame) -> bool:
        """Ask the chain about a frame now (the lane :meth:`ready`), as the pump would: True when it passes (the
        frame sinks are told; the caller writes it at once); False when it is the pump's, first in its queue
        (decided: a fate to apply, or the call that will give one)."""
        connection_id, from_client = self.controls.connection_id, self.from_client
        by = None
        for decider in self.chain.deciders:
            found = decider.decide(connection_id, frame, from_client)
            if found is None:
                continue
            if found is not PASS:
                if isinstance(found, VERDICTS):
                    by = decider.decided_by
                    for sink in self.sinks:  # now, in the order frames are decided, as the pump tells them
                        sink.frame(connection_id, from_client, frame, found, by)
                self.queue.put_nowait(Decided(frame, found, decider, by))
                return False
            by = decider.decided_by
            break
        for sink in self.sinks:
            sink.frame(connection_id, from_client, frame, PASS, by)
        return True

    def forward(self, buf: bytes, start: int, payload: int, end: int, text: bool, masked: int) -> bool:
        """A whole frame a :class:`~appserver.relay.frames.Watch` read below aiohttp (``buf[start:end]``, its
        payload from ``payload``, masked with the four bytes before it if ``masked``; aiohttp holds nothing
        unread of this leg). If the lane is ready it is decided now and, when it passes, goes on as the bytes it
        came in; otherwise it is queued for the pump as ``read_leg`` would have queued it. True when it is dealt
        with so; False when aiohttp must read it (the queue is full: its reader then waits, and TCP pushes back;
        text that is not UTF-8, which aiohttp answers as it would)."""
        ready = self.ready()
        if not ready and self.queue.full():
            return False
        if masked:
            data = bytearray(buf[payload:end])
            websocket_mask(buf[payload - 4:payload], data)
        else:
            data = buf[payload:end]  # type: ignore[assignment]
        if text:
            try:
                frame = Frame(MessageType.TEXT, data.decode("utf-8"))
            except UnicodeDecodeError:
                return False
        else:
            frame = Frame(MessageType.BINARY, bytes(data))
        if not ready:
            self.queue.put_nowait(frame)
        elif self.decide(frame):
            self.dest.transport.write(buf[start:end] if start or end < len(buf) else buf)
        return True

    async def offer(self, frame: Frame) -> None:
        """A frame its reader took: delivered now if the lane is ready and the chain says pass, otherwise queued
        for the pump (decided, when the chain was asked)."""
        if not self.ready():
            await self.queue.put(frame)
            return
        if not self.decide(frame):
            return
        dest = self.dest
        try:
            data = frame.data
            if isinstance(data, str):
                await dest.ws.send_frame(data.encode("utf-8"), WSMsgType.TEXT)
            else:
                await dest.ws.send_frame(data, WSMsgType.BINARY)
        except ConnectionError:
            log.debug("could not deliver to the %s: transport gone", dest.side)


def forget(item: Any) -> None:
    """A queued item nobody will deliver (its leg cannot take it, or the connection is over): a frame decided by
    its reader whose answer is a call not yet started is closed, so that the suite is never asked about it,
    as it would not have been had the pump asked."""
    if type(item) is Decided and inspect.iscoroutine(item.answer):
        item.answer.close()


async def read_leg(leg: Leg, other: Leg, queue: asyncio.Queue[Any], controls: Controls | None = None,
                   offer: Callable[[Frame], Awaitable[None]] | None = None) -> None:  # fmt: skip
    """Queue the leg's data frames (or ``offer`` them: the pump's lane, which delivers a frame at once while
    the pump has nothing else to do); relay pings and pongs at once; queue its End last.

    A full queue stops this reader, so TCP pushes back on the peer instead of
    memory growing without bound while the suite is slow.
    """
    warned = False
    watch = leg.watch
    while True:
        msg = await leg.ws.receive()
        kind = msg.type  # type: ignore[attr-defined]
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            frame = Frame(MessageType.TEXT if kind is WSMsgType.TEXT else MessageType.BINARY, msg.data)  # type: ignore[attr-defined]
            if queue.full() and not warned:
                warned = True  # once per leg: under sustained load this would repeat for every message
                log.warning("%s messages from the %s are queued: reading paused until the suite catches up",
                            queue.maxsize, leg.side)  # fmt: skip
            if offer is None:
                await queue.put(frame)
            else:
                await offer(frame)
            if watch is not None:  # dealt with: frames after it may go on without aiohttp again
                watch.read()
        elif kind in (WSMsgType.PING, WSMsgType.PONG):
            # Pings are the peers' business: relayed end to end, never answered here (unless a rule says).
            if controls is None:
                await _relay_control(other, kind, msg.data)  # type: ignore[attr-defined]
            else:
                await _controlled(leg, other, kind, msg.data, controls)  # type: ignore[attr-defined]
            if watch is not None:
                watch.read()
        elif kind is WSMsgType.CLOSE:
            if watch is not None:
                watch.stop()
            leg.apply(LegEvent.RECEIVED_CLOSE)
            await queue.put(End.close(code_from_wire(msg.data), msg.extra or ""))  # type: ignore[attr-defined]
            return
        else:  # CLOSED, CLOSING or ERROR: the transport is gone without a close frame
            if watch is not None:
                watch.stop()
            leg.apply(LegEvent.TRANSPORT_LOST)
            await queue.put(End.drop())
            return


async def _controlled(leg: Leg, other: Leg, kind: WSMsgType, payload: bytes, controls: Controls) -> None:
    """A ping or pong under rules: silenced, the answer to the suite's own ping, dropped, delayed, relayed."""
    payload = bytes(payload)
    event = "ping" if kind is WSMsgType.PING else "pong"
    from_client = leg.side is Side.CLIENT
    if controls.silenced:
        controls.seen(event, from_client, payload, "silenced")
        return
    if kind is WSMsgType.PONG and payload in controls.own_pings[leg.side]:
        controls.own_pings[leg.side].discard(payload)  # the answer to sendPing: a pong event, not relayed
        if controls.hooks is not None:
            controls.hooks.control(event, controls.connection_id, from_client, payload)
        controls.seen(event, from_client, payload, "answered")
        return
    verdict = PASS if controls.hooks is None else controls.hooks.control(event, controls.connection_id,
                                                                          from_client, payload)  # fmt: skip
    fate, _ = split(verdict)
    if isinstance(fate, Drop):
        controls.seen(event, from_client, payload, "dropped")
        return
    if isinstance(fate, Delay):
        controls.seen(event, from_client, payload, f"delayed {fate.ms} ms")
        task = asyncio.ensure_future(_later(fate.ms, other, kind, payload))
        controls.delayed.add(task)
        task.add_done_callback(controls.delayed.discard)
        return
    controls.seen(event, from_client, payload, "relayed")
    await _relay_control(other, kind, payload)


async def _later(ms: int, other: Leg, kind: WSMsgType, payload: bytes) -> None:
    await asyncio.sleep(ms / 1000)
    await _relay_control(other, kind, payload)


async def _relay_control(other: Leg, kind: WSMsgType, payload: bytes) -> None:
    try:
        await other.send_control(kind, payload)
    except ConnectionError:
        log.debug("could not relay %s to the %s: transport gone", kind.name, other.side)
