"""Lane.offer, the reader's delivery of a frame while its pump waits with nothing to do: it does exactly what the
pump would do next (ask the chain, tell the frame sinks, write), and only then; anything else is queued."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSMsgType

from appserver.relay.leg import Controls, Decided, Lane, Leg, forget
from appserver.relay.lifecycle import Side
from appserver.verdict import DROP, PASS, Chain, Verdict
from shared.wire import Frame

FRAME = Frame.text('{"action":15}')


class FakeWebSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, WSMsgType]] = []

    async def receive(self, timeout: float | None = None) -> object:
        raise AssertionError("not read here")

    async def send_frame(self, message: bytes, opcode: WSMsgType, compress: int | None = None) -> None:
        self.sent.append((message, opcode))


class FakeTransport:
    buffered = 0

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.written.append(data)


class Decider:
    """Says ``answer`` (None: no opinion) and counts how often it was asked."""

    window = 1
    engaged = True
    decided_by = "r"

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.asked = 0

    def decide(self, connection_id: str, frame: Frame, from_client: bool) -> Any:
        self.asked += 1
        return self.answer


class Sink:
    frames = True

    def __init__(self) -> None:
        self.told: list[tuple[Verdict, str | None]] = []

    def frame(self, connection_id: str, from_client: bool, frame: Frame, verdict: Verdict, by: str | None) -> None:
        self.told.append((verdict, by))


def lane_with(*deciders: Decider) -> tuple[Lane, asyncio.Queue[Any], FakeWebSocket, FakeTransport, Sink]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    ws, transport, sink = FakeWebSocket(), FakeTransport(), Sink()
    client = Leg(Side.CLIENT, FakeWebSocket(), FakeTransport(), 1.0)  # type: ignore[arg-type]
    upstream = Leg(Side.SERVER, ws, transport, 1.0)  # type: ignore[arg-type]
    lane = Lane(queue, client, upstream, Chain(deciders), (sink,), Controls("c1"))  # type: ignore[arg-type]
    lane.idle = True
    return lane, queue, ws, transport, sink


async def test_an_idle_pump_s_frame_is_delivered_by_the_reader_with_the_sinks_told() -> None:
    lane, queue, ws, _, sink = lane_with()
    await lane.offer(FRAME)
    assert ws.sent == [(FRAME.data.encode(), WSMsgType.TEXT)] and queue.empty()
    assert sink.told == [(PASS, None)]


async def test_a_pass_from_the_chain_is_delivered_and_said_by_whom() -> None:
    rule = Decider(PASS)
    lane, queue, ws, _, sink = lane_with(Decider(None), rule)
    await lane.offer(FRAME)
    assert len(ws.sent) == 1 and queue.empty() and sink.told == [(PASS, "r")] and rule.asked == 1


async def test_another_verdict_goes_to_the_pump_decided_and_told_once() -> None:
    rule = Decider(DROP)
    lane, queue, ws, _, sink = lane_with(rule)
    await lane.offer(FRAME)
    item = queue.get_nowait()
    assert isinstance(item, Decided) and item.answer is DROP and item.by == "r" and item.frame is FRAME
    assert ws.sent == [] and sink.told == [(DROP, "r")] and rule.asked == 1


async def test_someone_to_ask_goes_to_the_pump_untold() -> None:
    async def later() -> Verdict:
        return PASS

    asking = Decider(None)
    waiting = later()
    asking.answer = waiting
    lane, queue, ws, _, sink = lane_with(asking)
    await lane.offer(FRAME)
    item = queue.get_nowait()
    assert isinstance(item, Decided) and item.answer is waiting and item.by is None
    assert ws.sent == [] and sink.told == []
    assert await waiting is PASS


async def test_anything_in_the_way_queues_the_frame_unasked() -> None:
    """A busy pump, a frame already waiting, a destination with unsent bytes or that cannot take frames, a
    silenced network: the frame is queued as it came, and the chain is not asked (the pump will)."""
    for obstacle in ("busy", "waiting", "buffered", "closing", "silenced"):
        rule = Decider(PASS)
        lane, queue, ws, transport, sink = lane_with(rule)
        if obstacle == "busy":
            lane.idle = False
        elif obstacle == "waiting":
            queue.put_nowait(Frame.text("first"))
        elif obstacle == "buffered":
            transport.buffered = 10
        elif obstacle == "closing":
            lane.dest.can_send = False
        else:
            lane.controls.silenced = True
        await lane.offer(FRAME)
        assert list(queue._queue)[-1] is FRAME, obstacle  # type: ignore[attr-defined]
        assert ws.sent == [] and sink.told == [] and rule.asked == 0, obstacle


def test_a_decided_call_nobody_will_deliver_is_closed_unstarted() -> None:
    started = []

    async def ask() -> Verdict:
        started.append(True)
        return PASS

    call = ask()
    forget(Decided(FRAME, call, Decider(None)))
    assert call.cr_frame is None and started == []  # closed: never runs, and nothing warns it was never awaited
    forget(Decided(FRAME, DROP, Decider(None), "r"))  # a verdict: nothing to close
    forget(FRAME)


# Lane.forward: a whole frame a Watch (relay/frames.py) read below aiohttp.

MASK = b"\x01\x02\x03\x04"


def on_the_wire(payload: bytes, opcode: int = 1, mask: bytes | None = MASK) -> tuple[bytes, int]:
    """A short frame as it came (with a byte before it, as in a read that held more), and where its payload is."""
    head = bytes([0x80 | opcode, (0x80 if mask else 0) | len(payload)]) + (mask or b"")
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if mask else payload
    return b"\x00" + head + body, 1 + len(head)


async def test_forward_decides_now_and_writes_the_frame_as_it_came() -> None:
    rule = Decider(PASS)
    lane, queue, ws, transport, sink = lane_with(rule)
    buf, payload = on_the_wire(FRAME.data.encode())
    assert lane.forward(buf, 1, payload, len(buf), True, 0x80)
    assert transport.written == [buf[1:]] and ws.sent == [] and queue.empty()
    assert sink.told == [(PASS, "r")] and rule.asked == 1


async def test_forward_gives_the_pump_another_verdict_decided_with_the_frame_unmasked() -> None:
    lane, queue, _, transport, sink = lane_with(Decider(DROP))
    buf, payload = on_the_wire(b"\x00\xffbinary", opcode=2)
    assert lane.forward(buf, 1, payload, len(buf), False, 0x80)
    item = queue.get_nowait()
    assert isinstance(item, Decided) and item.frame == Frame.binary(b"\x00\xffbinary") and transport.written == []
    assert sink.told == [(DROP, "r")]


async def test_forward_queues_the_frame_as_it_came_while_the_pump_is_busy_and_not_when_the_queue_is_full() -> None:
    rule = Decider(PASS)
    lane, queue, _, transport, sink = lane_with(rule)
    lane.idle = False
    buf, payload = on_the_wire(b"from the server", mask=None)
    assert lane.forward(buf, 1, payload, len(buf), True, 0)
    assert queue.get_nowait() == Frame.text("from the server") and rule.asked == 0 and sink.told == []
    full: asyncio.Queue[Any] = asyncio.Queue(1)
    full.put_nowait(Frame.text("first"))
    lane.queue = full
    assert not lane.forward(buf, 1, payload, len(buf), True, 0)  # aiohttp's: its reader waits for room
    assert full.qsize() == 1 and transport.written == []


async def test_forward_leaves_text_that_is_not_utf8_to_aiohttp() -> None:
    lane, queue, _, transport, sink = lane_with()
    buf, payload = on_the_wire(b"\xff\xfe")
    assert not lane.forward(buf, 1, payload, len(buf), True, 0x80)
    assert queue.empty() and transport.written == [] and sink.told == []
