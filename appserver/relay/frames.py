"""A leg's frames read below aiohttp: a frame that passes goes on as the bytes it came in.

Every byte a leg's socket delivers after the handshake passes through a
:class:`Watch` on its way to aiohttp's protocol. The watch finds the frames'
boundaries as the bytes go by. While aiohttp holds nothing of this leg's that
``read_leg`` has not dealt with, a whole, final, uncompressed text or binary
frame, masked as its side must mask, is the connection's
:class:`~appserver.relay.leg.Lane`'s at once (``Lane.forward``): when the
direction's pump waits with nothing queued and the destination can take a
frame now, the chain is asked there and then, the frame sinks are told, and a
frame that passes is written to the other leg's cork as the bytes it came in
(a client's frame keeps its mask: it is still a valid client frame upstream; a
server's frame is unmasked, as a client must get it); a frame with any other
verdict becomes the pump's, decided; and while the pump is busy the frame is
put on its queue, as ``read_leg`` would have put it.

Anything else is handed to aiohttp's protocol, whose parser, reader and our
``read_leg`` then deal with it as they would without the watch: control
frames, fragments, compressed or very large frames, text that is not UTF-8, a
frame that arrives while the pump's queue is full. Every message handed on is
counted until ``read_leg`` has dealt with it (:meth:`Watch.read`), and while
the count is not zero nothing goes around aiohttp, so no frame overtakes another.
After a close frame (or anything not understood) everything is aiohttp's.

Installing the watch needs the stream at a frame boundary with nothing
buffered in aiohttp yet: on the client's leg it is put in front of aiohttp's
protocol before the 101 is sent (:func:`watch_client`); on the upstream's
leg aiohttp's client protocol is ours (:class:`WatchedHandler`, made by the
session's connector), and it starts watching when aiohttp sets its WebSocket
parser, before the bytes that came with the 101 are parsed. aiohttp's private
parts used here: its client protocol's ``set_parser``, the connector's protocol
factory, the server protocol's ``_message_tail`` (when any is not as expected,
there is no watch and the leg is aiohttp's alone, as before), and its mask
function.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp._websocket.helpers import websocket_mask as websocket_mask  # C, in place: Lane.forward unmasks with it
from aiohttp.client_proto import ResponseHandler

if TYPE_CHECKING:
    from appserver.relay.leg import Lane

log = logging.getLogger(__name__)

#: The largest frame a watch forwards itself; a larger one is aiohttp's to read (it is kept whole until then).
LARGEST = 1 << 20

_TEXT, _BINARY, _CLOSE, _PONG = 1, 2, 8, 10


class Watch:
    """The frame boundaries of one leg's incoming bytes, and the frames that go on without aiohttp."""

    __slots__ = ("_hand", "_masked", "lane", "pending", "off", "_parts", "_have", "_need", "_given", "_skip",
                 "_fragment")  # fmt: skip

    def __init__(self, hand: Callable[[bytes], Any], masked: bool) -> None:
        self._hand = hand  # gives bytes to aiohttp's protocol
        self._masked = masked  # frames from this side are masked (the client's)
        #: The connection's lane for this direction, once it relays (before: everything is handed on).
        self.lane: Lane | None = None
        #: Messages handed to aiohttp that read_leg has not dealt with yet.
        self.pending = 0
        #: Everything is aiohttp's from here on (a close came, or something this does not follow).
        self.off = False
        self._parts: list[bytes] = []  # carried over: a frame's start (not handed) or a header's (see _given)
        self._have = 0
        self._need = 0  # how many bytes the carried frame has in all (0: its header is not whole yet)
        self._given = 0  # how many of the carried bytes aiohttp already has (a handed frame's partial header)
        self._skip = 0  # bytes of a handed frame still to come (handed as they come)
        self._fragment = False  # inside a fragmented message (its frames are aiohttp's)

    def read(self) -> None:
        """read_leg has dealt with one message aiohttp gave it."""
        self.pending -= 1
        if self.pending < 0:  # not one this counted: never guess again
            log.debug("a message came from aiohttp that the watch did not count: everything is aiohttp's now")
            self.stop()

    def stop(self) -> None:
        """Everything from here on is aiohttp's (what is carried over too)."""
        self.off = True
        self.release()

    def release(self) -> None:
        """Hand on what is carried over, not given yet (before EOF or loss reaches aiohttp: it must see the
        same bytes it would have)."""
        if self._parts:
            data = b"".join(self._parts)[self._given:]
            self._parts, self._have, self._need, self._given = [], 0, 0, 0
            if data:
                self._hand(data)

    def feed(self, data: bytes) -> None:
        if self.off:
            self._hand(data)
            return
        given = 0
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:  # the frame kept is not whole yet
                return
            buf = b"".join(self._parts)
            given = self._given
            self._parts, self._have, self._need, self._given = [], 0, 0, 0
        else:
            buf = data
        n = len(buf)
        pos = 0
        hand_from = 0 if given else -1  # where handing on begins; from there, all of this chunk is aiohttp's
        if self._skip:
            pos = min(self._skip, n)
            self._skip -= pos
            hand_from = 0
        lane = self.lane
        while pos < n:
            if n - pos < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 127
            head = pos + 2
            if length >= 126:
                if length == 126:
                    if n - head < 2:
                        break
                    length = int.from_bytes(buf[head:head + 2])
                    head += 2
                else:
                    if n - head < 8:
                        break
                    length = int.from_bytes(buf[head:head + 8])
                    head += 8
            masked = b1 & 128
            if masked:
                head += 4
            if head > n:
                break
            end = head + length
            opcode = b0 & 15
            if hand_from < 0 and lane is not None and not self.pending and not self._fragment and \
                    (b0 & 0xF0) == 0x80 and (opcode == _TEXT or opcode == _BINARY) and \
                    bool(masked) is self._masked and length <= LARGEST:  # fmt: skip
                if end > n:  # kept until it is whole
                    self._parts, self._have, self._need = [buf[pos:]], n - pos, end - pos
                    return
                if lane.forward(buf, pos, head, end, opcode == _TEXT, masked):
                    pos = end
                    continue
            if hand_from < 0:
                hand_from = pos
            if opcode >= _CLOSE:
                if opcode > _PONG or opcode == _CLOSE:  # after a close (or an unknown opcode) all is aiohttp's
                    self.off = True
                    break
                self.pending += 1  # a ping or a pong: a message of its own
            elif opcode == 0:
                if b0 & 0x80:
                    self._fragment = False  # the message was counted at its first frame
            elif opcode == _TEXT or opcode == _BINARY:
                self.pending += 1
                if not b0 & 0x80:
                    self._fragment = True
            else:
                self.off = True
                break
            if end > n:
                self._skip = end - n
                pos = n
                break
            pos = end
        if pos < n and not self.off and not self._skip:  # a header not whole yet: carried over to parse
            self._parts, self._have, self._need = [buf[pos:]], n - pos, 0
            if hand_from >= 0:
                self._given = n - pos  # and aiohttp gets it now, with the rest of what is handed
        if hand_from >= 0:
            start = max(hand_from, given)
            if start < n:
                self._hand(buf[start:] if start else buf)


class _Interposed(asyncio.Protocol):
    """In front of aiohttp's server protocol on a client's transport: its bytes through the watch."""

    def __init__(self, inner: asyncio.Protocol, watch: Watch) -> None:
        self._inner = inner
        self._watch = watch
        self.data_received = watch.feed  # type: ignore[method-assign]  # the transport calls it for every read

    def eof_received(self) -> bool | None:
        self._watch.release()
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._watch.release()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def watch_client(transport: asyncio.Transport, protocol: Any) -> Watch | None:
    """Put a watch in front of aiohttp's protocol on the client's transport, before the 101 is sent; None when
    aiohttp already holds bytes that came after the upgrade request (a client that did not wait for the 101:
    that leg stays aiohttp's alone)."""
    if getattr(protocol, "_message_tail", None) != b"" or transport.is_closing():
        return None
    watch = Watch(protocol.data_received, masked=True)
    transport.set_protocol(_Interposed(protocol, watch))
    return watch


class WatchedHandler(ResponseHandler):
    """aiohttp's client protocol, with a watch from the moment aiohttp sets its WebSocket parser (an upgrade's
    101 read: whatever came with it, and everything after, goes through the watch)."""

    watch: Watch | None = None

    def set_parser(self, parser: Any, payload: Any, data_received_cb: Callable[[], None] | None = None) -> None:
        watch = self.watch = Watch(functools.partial(ResponseHandler.data_received, self), masked=False)
        # The transport (and aiohttp's own tail drain) call the instance's data_received: the watch's, from here
        # on; until then (an HTTP exchange, an upgrade's response head) aiohttp's own, with nothing in between.
        self.data_received = watch.feed  # type: ignore[method-assign]
        super().set_parser(parser, payload, data_received_cb)

    def eof_received(self) -> None:
        if self.watch is not None:
            self.watch.release()
        super().eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.watch is not None:
            self.watch.release()
        super().connection_lost(exc)


def watch_upgrades(connector: Any) -> None:
    """Make the connector's connections with :class:`WatchedHandler` (aiohttp's private protocol factory);
    left as it is when it is not what this expects."""
    factory = getattr(connector, "_factory", None)
    if isinstance(factory, functools.partial) and factory.func is ResponseHandler:
        connector._factory = functools.partial(WatchedHandler, *factory.args, **factory.keywords)  # noqa: SLF001


def watch_of(ws: Any) -> Watch | None:
    """The watch on an upstream WebSocket's connection, if its protocol is a WatchedHandler."""
    protocol = getattr(getattr(ws, "_writer", None), "protocol", None)
    return protocol.watch if isinstance(protocol, WatchedHandler) else None
