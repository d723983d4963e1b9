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
        transport.write = self._record  # type: ignore[method-assign]

    def _record(self, data: Any) -> None:
        self.calls.append(bytes(data))
        self._write(data)


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
    try:
        cork.write(b"first")
        assert sends.calls == [b"first"]  # not delayed: a lone request leaves as it is written
        cork.write(b"second")
        cork.write(b"third")
        assert sends.calls == [b"first"]  # the rest of the turn waits for the turn's end
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert sends.calls == [b"first", b"secondthird"]
        cork.write(b"next turn")
        assert sends.calls[-1] == b"next turn"
        assert await received(peer, 25) == b"firstsecondthirdnext turn"
    finally:
        transport.close()
        peer.close()


async def test_the_control_cork_neither_holds_back_nor_copies_a_large_write_and_keeps_the_order() -> None:
    transport, peer = await pair()
    sends = Sends(transport)
    cork = TurnCork(transport)
    big = b"y" * (TurnCork.LARGE + 1)
    try:
        cork.write(b"head")
        cork.write(b"small")
        cork.write(big)
        assert sends.calls == [b"head", b"small", big]  # what was buffered first, then the large write at once
        assert await received(peer, 9 + len(big)) == b"headsmall" + big
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
        assert sends.calls == [b"onetwo", b"three", big]
        cork.whole_turns = False  # back to a window of 1: a lone write leaves at once again
        await asyncio.sleep(0)
        cork.write(b"four")
        assert sends.calls[-1] == b"four"
        assert await received(peer, 15 + len(big)) == b"onetwothree" + big + b"four"
    finally:
        transport.close()
        peer.close()
