"""The corks under aiohttp's frame writers (relay/pump.py, shared/cork.py): what a turn of the loop writes leaves together, and
nothing is reordered, held back for long or lost on close. Real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from appserver.relay.pump import CorkedTransport
from shared.cork import TurnCork


class Sends:
    """A transport's writes, as the socket got them (one entry per write call)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.calls: list[bytes] = []
        self._transport = transport
        self._write = transport.write
        self._writelines = transport.writelines
        transport.write = self._record  # type: ignore[method-assign]
        transport.writelines = self._record_lines  # type: ignore[method-assign]

    def _record(self, data: Any) -> None:
        self.calls.append(bytes(data))
        self._write(data)

    def _record_lines(self, pieces: Any) -> None:
        pieces = list(pieces)
        self.calls.append(b"".join(pieces))  # one system call (writev)
        self._writelines(pieces)


async def pair() -> tuple[asyncio.Transport, socket.socket]:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    theirs.setblocking(False)
    return transport, theirs


async def received(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        data += await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5)
    return data


async def test_the_control_cork_sends_a_lone_write_at_once_and_what_follows_in_its_turn_together() -> None:
    transport, peer = await pair()
    sends = Sends(transport)
    cork = TurnCork(transport)
    first, then = b"a first message, alone", b"and the next one of its turn"
    try:
        cork.write(first)
        assert sends.calls == [first]  # not delayed: a lone request leaves as it is written
        cork.write(then)
        cork.write(b"third")
        assert sends.calls == [first]  # the rest of the turn waits for the turn's end
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert sends.calls == [first, then + b"third"]
        cork.write(b"the next turn's first")
        assert sends.calls[-1] == b"the next turn's first"
        assert await received(peer, 76) == first + then + b"third" + b"the next turn's first"
    finally:
        transport.close()
        peer.close()


async def test_the_control_cork_neither_holds_back_nor_copies_a_large_write_and_keeps_the_order() -> None:
    transport, peer = await pair()
    sends = Sends(transport)
    cork = TurnCork(transport)
    big = b"y" * (TurnCork.LARGE + 1)
    head = b"the turn's first write"
    try:
        cork.write(head)
        cork.write(b"small")
        cork.write(big)
        assert sends.calls == [head, b"small" + big]  # what was buffered goes with the large write, at once
        assert await received(peer, len(head) + 5 + len(big)) == head + b"small" + big
    finally:
        transport.close()
        peer.close()


async def test_a_cork_flushes_before_it_closes() -> None:
    for kind in (CorkedTransport, TurnCork):
        transport, peer = await pair()
        cork = kind(transport)
        cork.write(b"a")
        cork.write(b"b")
        cork.close()
        assert await received(peer, 2) == b"ab", kind
        peer.close()


async def test_with_whole_turns_the_first_write_of_a_turn_waits_for_its_end_too() -> None:
    """A window > 1 (SPEC Part 10): the requests (or answers) a turn writes leave in one send, the first included;
    a large one still is neither held back nor copied, and what was buffered goes before it."""
    transport, peer = await pair()
    sends = Sends(transport)
    cork = TurnCork(transport)
    cork.whole_turns = True
    big = b"z" * TurnCork.LARGE
    try:
        cork.write(b"one")
        cork.write(b"two")
        assert sends.calls == []
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert sends.calls == [b"onetwo"]
        cork.write(b"three")
        cork.write(big)
        assert sends.calls == [b"onetwo", b"three" + big]
        cork.whole_turns = False  # back to a window of 1: a lone write leaves at once again
        await asyncio.sleep(0)
        cork.write(b"four, and longer")
        assert sends.calls[-1] == b"four, and longer"
        assert await received(peer, 27 + len(big)) == b"onetwothree" + big + b"four, and longer"
    finally:
        transport.close()
        peer.close()


async def test_a_large_frames_header_waits_for_its_payload_and_leaves_with_it() -> None:
    """aiohttp writes a frame over 16 KiB as its header, then its payload: the header, though the turn's first
    write, is not sent alone (the other end would wake for ten bytes); it leaves with the payload, in one writev."""
    transport, peer = await pair()
    sends = Sends(transport)
    cork = TurnCork(transport)
    header, payload = b"\x82\x7f" + (65536).to_bytes(8), b"p" * 65536
    try:
        cork.write(header)
        assert sends.calls == []
        cork.write(payload)
        assert sends.calls == [header + payload]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        cork.write(b"\x82\x02ok")  # a small frame's four bytes, as the turn's first write: at once
        assert sends.calls == [header + payload, b"\x82\x02ok"]
        assert await received(peer, 10 + 65536 + 4) == header + payload + b"\x82\x02ok"
    finally:
        transport.close()
        peer.close()


async def test_a_close_frame_leaves_at_once_even_in_whole_turns_and_before_the_socket_closes() -> None:
    """aiohttp closes the socket itself (not through the cork) right after the close frame it writes on a
    protocol error (1009, a frame over the size limit): held for the turn's end, the frame would be lost. It
    leaves at once, with what was buffered before it."""
    for whole_turns in (False, True):
        transport, peer = await pair()
        sends = Sends(transport)
        cork = TurnCork(transport)
        cork.whole_turns = whole_turns
        close = b"\x88\x02\x03\xf1"  # 1009, no reason
        cork.write(b"\x81\x05hello")
        cork.write(close)
        transport.close()  # as aiohttp does, in the same turn
        assert b"".join(sends.calls) == b"\x81\x05hello" + close, whole_turns
        assert await received(peer, 11) == b"\x81\x05hello" + close, whole_turns
        peer.close()
