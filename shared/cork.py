"""A cork for a control connection's socket, on either end: what one turn of the event loop writes leaves in
one system call, not one each.

Both ends of the control API write one WebSocket frame per JSON-RPC message:
the app server a ``transformInterceptedMessage`` for every frame one read of a
leg brought, the suite an answer to each. On loopback every ``send()`` is the
largest single cost of a message, and, on a machine with few cores, the wake-up
it causes hands the CPU to the other end before the rest of the turn is
written. :class:`TurnCork` sits under aiohttp's frame writer (:func:`cork_writer`):

* by default the first write of a turn leaves at once, as unbuffered (a lone
  request or answer is not delayed), and what follows it in the same turn
  leaves together at the turn's end;
* with ``whole_turns`` (a window of more than one message, SPEC Part 10: many
  requests and answers are written in one turn) the first waits for the
  turn's end too, so that all of them leave in one ``send()``;
* a frame's bare header announcing a large payload is held even when it is the
  turn's first write: aiohttp writes a frame over 16 KiB as its header, then its
  payload; sent alone, the header would wake the other end for ten bytes, and
  the payload follow in a second round of wake-ups;
* a write of 16 KiB or more, and a close frame, are never held back: each
  leaves at once, with what is buffered before it in the same system call
  (writelines), the large one not copied. aiohttp closes the socket itself,
  not through this cork, right after a close frame it writes on a protocol
  error: a close frame held for the turn's end would be lost. A close or an
  abort through the cork writes what is buffered first.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

_CLOSE = 0x8  # a close frame's opcode


class TurnCork:
    """A transport whose small writes within one turn of the loop leave together (see the module)."""

    LARGE = 16 * 1024

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._buffer: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._in_turn = False
        #: Hold the turn's first write as well (a window > 1: many messages are written in one turn).
        self.whole_turns = False
        # Asked for every frame by aiohttp's writer: the transport's own methods, no Python call in between.
        self.is_closing = transport.is_closing
        self.get_write_buffer_size = transport.get_write_buffer_size

    def write(self, data: bytes) -> None:
        if len(data) >= self.LARGE or (data and data[0] & 0x0F == _CLOSE):  # now, after what is buffered
            buffered, self._buffer = self._buffer, []
            if not self._transport.is_closing():
                if buffered:
                    buffered.append(data)
                    self._transport.writelines(buffered)
                else:
                    self._transport.write(data)
            return
        if not self._in_turn:
            self._in_turn = True
            self._loop.call_soon(self._turn_ended)
            if not self.whole_turns and not _large_frames_header(data):
                if not self._transport.is_closing():
                    self._transport.write(data)
                return
        self._buffer.append(data)

    def _turn_ended(self) -> None:
        self._in_turn = False
        self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self.flush()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _large_frames_header(data: bytes) -> bool:
    """Whether ``data`` is exactly an unmasked frame header with a 16- or 64-bit payload length (the payload
    follows it in the next write)."""
    n = len(data)
    return (n == 4 and data[1] & 0x7F == 126) or (n == 10 and data[1] & 0x7F == 127)


def cork_writer(ws: Any, transport: asyncio.Transport | None = None) -> TurnCork:
    """Put a TurnCork under an aiohttp WebSocket's frame writer (server or client side; its private ``_writer``)
    over ``transport``, by default the one the writer has."""
    writer = ws._writer  # noqa: SLF001
    cork = TurnCork(cast(asyncio.Transport, transport if transport is not None else writer.transport))
    writer.transport = cork
    return cork
