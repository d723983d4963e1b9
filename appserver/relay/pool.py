"""Kept-alive HTTP/1.1 connections to upstreams, for the plain-HTTP relay below aiohttp (relay/front.py).

One :class:`UpstreamConnection` carries one exchange at a time: it is handed a request's head (and body bytes
as the client sends them), parses the response with httptools and tells its :class:`Receiver` the head, each
body piece and the end, as they arrive: nothing is buffered here. A connection whose response ended cleanly and
that may be kept goes back to the :class:`Pool` (idle ones close after ``IDLE_SECONDS``); any other is closed.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Callable
from typing import Protocol, cast

import httptools

#: How long an idle upstream connection is kept (aiohttp's client keeps one 15 s too).
IDLE_SECONDS = 15.0


class Receiver(Protocol):
    """Who is told of one exchange's response (relay/front.py's exchange)."""

    def head(self, status: int, reason: str, headers: list[tuple[bytes, bytes]]) -> None: ...

    def body(self, data: bytes) -> None: ...

    def flush(self) -> None:
        """What the head and body pieces of one read made goes to the client, in one write."""
        ...

    def done(self) -> None: ...

    def failed(self, exc: BaseException | None, answered: bool) -> None:
        """The connection went before the response ended (``answered``: after its head came)."""
        ...

    def paused(self, paused: bool) -> None:
        """The upstream's send buffer filled (True) or drained (False): stop or go on reading the client."""
        ...


class UpstreamConnection(asyncio.Protocol):
    """One connection to an upstream, one exchange at a time."""

    def __init__(self, pool: Pool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.receiver: Receiver | None = None
        #: Whether it has carried an exchange before (a kept one the upstream may have closed meanwhile).
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._interim = False
        self._answered = False  # the current response's head has come
        self._seen = False  # any byte of the current response has come
        self._close_delimited = False
        self._idle: asyncio.TimerHandle | None = None
        self.lost = False

    # -- the pool's side ------------------------------------------------------------------------------------

    def start(self, receiver: Receiver, data: bytes) -> None:
        """Begin an exchange: ``data`` is the request's head (and what of its body has come)."""
        assert self.transport is not None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.receiver = receiver
        self._answered = self._seen = False
        self.transport.write(data)

    def send(self, data: bytes) -> None:
        """More of the request's body."""
        if self.transport is not None:
            self.transport.write(data)

    def abandon(self) -> None:
        """The exchange ends early (the client went): the connection goes, and the upstream sees it go."""
        self.receiver = None
        if self.transport is not None:
            self.transport.abort()

    def _finished(self) -> None:
        receiver, self.receiver = self.receiver, None
        keep = self._parser.should_keep_alive() and not self._close_delimited
        if keep and not self.lost and self.transport is not None and not self.transport.is_closing():
            self.reused = True
            self.pool.put(self)  # first: the client's next request (told below) may take it at once
        elif self.transport is not None:
            self.transport.close()
        if receiver is not None:
            receiver.done()

    def idle_for(self, seconds: float) -> None:
        self._idle = asyncio.get_running_loop().call_later(seconds, self.close)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.receiver is None:  # bytes while idle, or after an abandoned exchange: not a connection to keep
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()
            return
        self._seen = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:  # 101 to a request of no upgrade
            self._fail(exc)
            return
        if self.receiver is not None:
            self.receiver.flush()

    def eof_received(self) -> bool | None:
        return None  # closes the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._idle is not None:
            self._idle.cancel()
        self.pool.forget(self)
        if self.receiver is None:
            return
        if exc is None and self._answered and self._close_delimited:
            self._finished()  # a body without a length ends with the connection
        else:
            self._fail(exc)

    def _fail(self, exc: BaseException | None) -> None:
        receiver, self.receiver = self.receiver, None
        if self.transport is not None:
            self.transport.abort()
        if receiver is not None:
            receiver.failed(exc, self._answered)

    def pause_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.paused(True)

    def resume_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.paused(False)

    # -- httptools' callbacks -------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = []
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._interim = status < 200
        if self._interim:  # 100 Continue, 103 Early Hints: not relayed; the final response follows
            return
        self._answered = True
        framed = False
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
                framed = True
        self._close_delimited = not framed and status not in (204, 304)
        if self.receiver is not None:
            self.receiver.head(status, self._reason.decode("utf-8", "surrogateescape"), self._headers)

    def on_body(self, body: bytes) -> None:
        if self.receiver is not None:
            self.receiver.body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._finished()


class Pool:
    """Idle upstream connections by (scheme, host, port), and the dialling of new ones."""

    def __init__(self, ssl: ssl_module.SSLContext | bool, connect_timeout: float) -> None:
        self._idle: dict[tuple[str, str, int], list[UpstreamConnection]] = {}
        self._ssl = ssl
        self._contexts: dict[bool, ssl_module.SSLContext] = {}
        self.connect_timeout = connect_timeout
        self.closed = False

    def send(self, key: tuple[str, str, int], receiver: Receiver, data: bytes) -> UpstreamConnection | None:
        """Begin an exchange on a kept connection to ``key``, and say which; None when none is idle (then
        :meth:`dial` one)."""
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.lost and connection.transport is not None and not connection.transport.is_closing():
                connection.start(receiver, data)
                return connection
        return None

    async def dial(self, key: tuple[str, str, int]) -> UpstreamConnection:
        """A new connection to ``key`` (OSError, TimeoutError or ssl.SSLError when there is none)."""
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        factory: Callable[[], UpstreamConnection] = lambda: UpstreamConnection(self, key)  # noqa: E731
        secure = self._context() if scheme == "https" else None
        async with asyncio.timeout(self.connect_timeout):
            _, connection = await loop.create_connection(factory, host, port, ssl=secure,
                                                         server_hostname=host if secure else None)  # fmt: skip
        return connection

    def _context(self) -> ssl_module.SSLContext:
        if isinstance(self._ssl, ssl_module.SSLContext):
            return self._ssl
        verify = bool(self._ssl)
        context = self._contexts.get(verify)
        if context is None:
            context = ssl_module.create_default_context()
            if not verify:  # --insecure-upstream: as aiohttp's ssl=False
                context.check_hostname = False
                context.verify_mode = ssl_module.CERT_NONE
            self._contexts[verify] = context
        return context

    def put(self, connection: UpstreamConnection) -> None:
        if self.closed:
            connection.close()
            return
        self._idle.setdefault(connection.key, []).append(connection)
        connection.idle_for(IDLE_SECONDS)

    def forget(self, connection: UpstreamConnection) -> None:
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> None:
        self.closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
