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
* a write of at most 14 bytes is held to the turn's end even when it is the
  first: that is a WebSocket frame's bare header, which aiohttp writes apart
  from a payload over 16 KiB; sent alone, it would wake the other end for a
  header, and the payload would follow in a second round of wake-ups;
* a write of 16 KiB or more is neither held back nor copied: it leaves at
  once, with what is buffered before it in the same system call (writelines);
  a close or an abort writes what is buffered first.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast


class TurnCork:
    """A transport whose small writes within one turn of the loop leave together (see the module)."""

    LARGE = 16 * 1024
    #: A frame's header at most (2 bytes, 8 of length, 4 of mask): held for the payload that follows it.
    HEADER = 14

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
        if not self._in_turn:
            self._in_turn = True
            self._loop.call_soon(self._turn_ended)
            if not self.whole_turns and len(data) > self.HEADER:
                if not self._transport.is_closing():
                    self._transport.write(data)
                return
        if len(data) >= self.LARGE:
            buffered, self._buffer = self._buffer, []
            if not self._transport.is_closing():
                if buffered:
                    buffered.append(data)
                    self._transport.writelines(buffered)
                else:
                    self._transport.write(data)
        else:
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


def cork_writer(ws: Any, transport: asyncio.Transport | None = None) -> TurnCork:
    """Put a TurnCork under an aiohttp WebSocket's frame writer (server or client side; its private ``_writer``)
    over ``transport``, by default the one the writer has."""
    writer = ws._writer  # noqa: SLF001
    cork = TurnCork(cast(asyncio.Transport, transport if transport is not None else writer.transport))
    writer.transport = cork
    return cork
