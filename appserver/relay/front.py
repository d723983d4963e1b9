"""Plain HTTP below aiohttp: the proxy endpoint's connections are read here first, and a request nobody has a say
on is relayed by this module alone, in callbacks, without aiohttp's server or client.

A request qualifies when it is HTTP/1.1 and plain (GET, POST, PUT, DELETE, PATCH or OPTIONS; a body framed by
Content-Length or none; no Upgrade, Transfer-Encoding or Expect), it says where it goes (relay/headers.py's
``outbound``, as relay/http.py reads it) and no rule may change it (its scope's HTTP gate is ``quiet``). Its
head goes to a kept-alive upstream connection (relay/pool.py) with the same headers http.py would send, its body
as it comes; the response comes back as it arrives — status, reason and end-to-end headers as the upstream sent
them, the body with its Content-Length or chunked — and the trace is told of both as http.py tells it.

The first request on a connection that does not qualify (an upgrade, a rule to apply, a request to refuse) hands
the connection to aiohttp for the rest of its life, with every byte not yet read: from there on it is served as
it would be without this module (relay/endpoint.py, relay/http.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from typing import cast
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate

from aiohttp.http import SERVER_SOFTWARE
from aiohttp.tcp_helpers import tcp_keepalive
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from appserver.events import HttpAnswered, HttpRequested, Sink
from appserver.relay.headers import HOP_BY_HOP, BadTarget, outbound
from appserver.relay.http import HEAD, HttpSettings, with_cors
from appserver.relay.pool import Pool, UpstreamConnection
from shared import headers as shared_headers
from shared.connections import ConnectionOpened

log = logging.getLogger(__name__)

#: The methods relayed here (HEAD, CONNECT, TRACE and the rest go to aiohttp): _REQUEST_LINE names them.
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
#: Methods sent again on a new connection when a kept one turns out closed before any answer (as aiohttp's
#: client does): only when the request has no body.
IDEMPOTENT = frozenset(("GET", "PUT", "DELETE", "OPTIONS"))
#: aiohttp's client sends a POST, PUT, PATCH or DELETE without a body with Content-Length: 0.
SAYS_EMPTY = frozenset(("POST", "PUT", "PATCH", "DELETE"))
#: A head longer than this is aiohttp's to judge (its limits are relay/headers.py's HEAD_LIMITS).
LARGEST_HEAD = 64 * 1024
#: Bytes of a pipelined request read ahead while one is relayed, before reading the client pauses.
READ_AHEAD = 256 * 1024
#: An idle client connection is closed after this long (aiohttp's server's keep-alive timeout).
IDLE_SECONDS = 3630.0
#: Request headers whose presence sends the request to aiohttp.
_NOT_HERE = frozenset((b"upgrade", b"transfer-encoding", b"expect"))
_EMPTY_BODY = frozenset((204, 304))


class Head:
    """A request's head as outbound() and the handlers' lookup read it (what they use of aiohttp's request)."""

    __slots__ = ("method", "raw_path", "headers", "host", "keep_alive", "length")

    def __init__(self, method: str, raw_path: str, headers: CIMultiDictProxy[str], host: str, keep_alive: bool,
                 length: int) -> None:  # fmt: skip
        self.method = method
        self.raw_path = raw_path
        self.headers = headers
        self.host = host
        self.keep_alive = keep_alive
        self.length = length


#: The request line of a request relayed here: a method of METHODS, an origin-form target of visible ASCII
#: (no fragment), HTTP/1.1. Anything else (other methods, other versions, absolute or authority form, spaces or
#: control characters) is aiohttp's, which accepts or refuses it as it would.
_REQUEST_LINE = re.compile(rb"(GET|POST|PUT|DELETE|PATCH|OPTIONS) (/[\x21\x22\x24-\x7e]*) HTTP/1\.1")
#: The header lines, each an RFC 9110 token, a colon and a value of visible characters, spaces, tabs and obs-text
#: (no control characters; no obs-fold: a line that starts with a space does not match), then the blank line.
_FIELDS = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*\r\n")
#: More header lines than aiohttp's server takes (relay/headers.py's HEAD_LIMITS): aiohttp's to refuse.
MOST_FIELDS = 1024


def parse_head(data: bytes) -> Head | None:
    """The head (ending in its blank line) of a request this module may relay; None when it is aiohttp's: not
    plain (see METHODS, _NOT_HERE), or not strictly well formed (aiohttp answers that as it would)."""
    first = data.find(b"\r\n")
    request = _REQUEST_LINE.fullmatch(data, 0, first)
    if request is None or _FIELDS.fullmatch(data, first + 2) is None:
        return None
    lines = data[first + 2 : -4].split(b"\r\n") if len(data) > first + 4 else []
    if len(lines) > MOST_FIELDS:
        return None
    length = 0
    framed = False
    host = None
    keep_alive = True  # HTTP/1.1's default
    pairs = []
    for line in lines:
        name, _, value = line.partition(b":")
        value = value.strip(b" \t")
        lower = name.lower()
        if lower in _NOT_HERE:
            return None
        if lower == b"content-length":
            if framed or not value.isdigit():
                return None
            framed, length = True, int(value)
        elif lower == b"host":
            if host is not None:
                return None
            host = value
        elif lower == b"connection" and b"close" in value.lower():
            keep_alive = keep_alive and "close" not in shared_headers.connection_tokens([value.decode("latin-1")])
        pairs.append((name.decode("ascii"), value.decode("utf-8", "surrogateescape")))
    if host is None:
        return None
    method, target = request.groups()
    return Head(method.decode(), target.decode(), CIMultiDictProxy(CIMultiDict(pairs)),
                host.decode("utf-8", "surrogateescape"), keep_alive, length)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    """What a qualifying request does (relay/endpoint.py's ``plan`` says): where it goes, the headers that go
    with it, who is told."""

    head: Head
    meant: URL
    target: URL
    headers: CIMultiDict[str]
    info: ConnectionOpened | None
    sinks: Sequence[Sink]


def request_bytes(method: str, target: URL, headers: CIMultiDict[str], length: int, had_length: bool) -> bytes:
    """The head a request goes upstream with, as relay/http.py's aiohttp client sends it: Host first (without a
    default port), the end-to-end headers, and its body's Content-Length (0 for a POST, PUT, PATCH or DELETE
    without one)."""
    lines = [f"{method} {target.raw_path_qs} HTTP/1.1\r\nHost: {target.host_port_subcomponent}\r\n"]
    for name, value in headers.items():
        lines.append(f"{name}: {value}\r\n")
    if had_length or length:
        lines.append(f"Content-Length: {length}\r\n")
    elif method in SAYS_EMPTY:
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


class PlainRelay:
    """The proxy endpoint's listening side: makes a :class:`Front` per accepted connection; ``plan`` says what
    a request does (None: aiohttp's), ``fallback`` makes aiohttp's protocol for a connection handed over."""

    def __init__(self, plan: Callable[[Head], Plan | None], fallback: Callable[[], asyncio.Protocol], pool: Pool,
                 handed_over: Callable[[asyncio.Transport], None] | None = None) -> None:  # fmt: skip
        """``handed_over``: told of a connection handed to aiohttp after it carried a request here (a session's
        listener keeps such a connection with its session)."""
        self.plan = plan
        self.fallback = fallback
        self.pool = pool
        self.handed_over = handed_over
        self.fronts: set[Front] = set()
        self.servers: list[asyncio.Server] = []
        self.stopping = False
        #: No new connections (a session's listener whose session ended): a connection that has carried no
        #: request yet is aiohttp's (which says the session has ended); one that has goes on as it was.
        self.ended = False

    def __call__(self) -> Front:
        return Front(self)

    async def listen(self, host: str, port: int) -> int:
        server = await asyncio.get_running_loop().create_server(self, host, port, backlog=128)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def stop_listening(self) -> None:
        """No new connections; the accepted ones go on."""
        self.ended = True
        for server in self.servers:
            server.close()

    async def stop(self, timeout: float) -> None:
        """Stop listening; idle connections close now, busy ones once their exchange ends (aborted after
        ``timeout``). Its pool is its owner's to close."""
        self.stopping = True
        for server in self.servers:
            server.close()
        for front in list(self.fronts):
            front.close_when_idle()
        try:
            async with asyncio.timeout(timeout):
                while self.fronts:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            for front in list(self.fronts):
                front.abort()

    async def closed(self) -> None:
        """Once every connection it accepted is closed (those handed to aiohttp are closed by aiohttp's
        runner: call this after its cleanup)."""
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()


class Front(asyncio.Protocol):
    """One client connection while its requests are relayed here."""

    def __init__(self, relay: PlainRelay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self.buffer = bytearray()
        self.exchange: Exchange | None = None
        self.eof = False
        self.served = 0  # requests relayed here
        self._read_paused = False
        self._closing = False
        self._idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        tcp_keepalive(transport)
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self.relay.fronts.add(self)
        loop = asyncio.get_running_loop()
        self._idle_since = loop.time()
        self._timer = loop.call_later(IDLE_SECONDS, self._look_idle)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.body_left:
            part = data[: exchange.body_left]
            exchange.client_body(part)
            data = data[len(part):]
            if not data:
                return
        self.buffer += data
        if exchange is None:
            self._serve()
        elif len(self.buffer) > READ_AHEAD and self.transport is not None and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()

    def _serve(self) -> None:
        """Relay the next request in the buffer, or hand the connection over; nothing while one is relayed."""
        buffer = self.buffer
        while self.exchange is None and buffer and self.transport is not None and not self._closing:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > LARGEST_HEAD or b"\n\n" in buffer or buffer.startswith(b"\r\n"):
                    self._hand_over()
                return
            size = end + 4
            head = parse_head(bytes(buffer[:size]))
            relay = self.relay
            taken = head is not None and not buffer.startswith(b"\r\n") and (self.served or not relay.ended)
            plan = relay.plan(head) if taken and head is not None else None
            if plan is None or head is None:
                self._hand_over()
                return
            del buffer[:size]
            body = bytes(buffer[: head.length])
            del buffer[: head.length]
            self.exchange = Exchange(self, plan, head.length - len(body))
            self.exchange.begin(body)
        if self._read_paused and self.exchange is None and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    def finished(self, keep_alive: bool) -> None:
        """The exchange is over (its response written, or given up): the next request, or the end."""
        self.exchange = None
        self.served += 1
        if self.transport is None:
            return
        if not keep_alive or self._closing or self.eof:
            self.transport.close()
            return
        self._idle_since = asyncio.get_running_loop().time()
        self._serve()

    def _hand_over(self) -> None:
        """aiohttp serves this connection from here on, from the first byte not yet read."""
        transport = self.transport
        assert transport is not None
        self.relay.fronts.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self.transport = None
        if self.served and self.relay.handed_over is not None:
            self.relay.handed_over(transport)
        protocol = self.relay.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._read_paused:
            transport.resume_reading()
        if self.buffer:
            data, self.buffer = bytes(self.buffer), bytearray()
            protocol.data_received(data)
        if self.eof and not transport.is_closing():
            if not protocol.eof_received():
                transport.close()

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.exchange is not None:
            return None  # gone, as aiohttp takes it: the transport closes, and the exchange is abandoned
        if self.buffer and not self._closing:
            self._hand_over()  # a partial head: aiohttp says what it says of one
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.fronts.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self.transport = None
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.client_gone()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client_paused(False)

    def _look_idle(self) -> None:
        loop = asyncio.get_running_loop()
        due = self._idle_since + IDLE_SECONDS
        if self.exchange is None and not self.buffer and loop.time() >= due and self.transport is not None:
            self.transport.close()
        else:
            self._timer = loop.call_at(max(due, loop.time() + 1), self._look_idle)

    def close_when_idle(self) -> None:
        self._closing = True
        if self.exchange is None and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Exchange:
    """One request relayed: the upstream connection's :class:`~appserver.relay.pool.Receiver`."""

    __slots__ = ("front", "plan", "key", "data", "body_left", "connection", "pending", "retried", "out", "chunked",
                 "status", "headers", "size", "first", "dialling", "ended")  # fmt: skip

    def __init__(self, front: Front, plan: Plan, body_left: int) -> None:
        self.front = front
        self.plan = plan
        target, head = plan.target, plan.head
        self.key = (target.scheme, target.host or "", target.port or (443 if target.scheme == "https" else 80))
        self.data = request_bytes(head.method, target, plan.headers, head.length, "Content-Length" in head.headers)
        self.body_left = body_left
        self.connection: UpstreamConnection | None = None
        self.pending: list[bytes] = []
        self.retried = False
        self.out: list[bytes] = []
        self.chunked = False
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.size = 0
        self.first = b""
        self.dialling: asyncio.Task[None] | None = None
        self.ended = False

    # -- the request -----------------------------------------------------------------------------------------

    def begin(self, body: bytes) -> None:
        plan = self.plan
        if plan.sinks and plan.info is not None:
            requested = HttpRequested(plan.info, plan.head.method, None, self.front.remote)
            for sink in plan.sinks:
                sink.seen(requested)
        self.connection = self.front.relay.pool.send(self.key, self, self.data + body)
        if self.connection is None:
            if body:
                self.pending.append(body)
            self._dial()

    def _dial(self) -> None:
        self.dialling = asyncio.get_running_loop().create_task(self._dialled())

    async def _dialled(self) -> None:
        try:
            connection = await self.front.relay.pool.dial(self.key)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.dialling = None
            self._unreachable(exc)
            return
        self.dialling = None
        if self.ended:
            connection.close()
            return
        self._attach(connection)

    def _attach(self, connection: UpstreamConnection) -> None:
        self.connection = connection
        data = self.data
        if self.pending:  # body bytes that came while the connection was dialled
            data += b"".join(self.pending)
            self.pending = []
        connection.start(self, data)

    def client_body(self, data: bytes) -> None:
        self.body_left -= len(data)
        if self.connection is not None:
            self.connection.send(data)
        else:
            self.pending.append(data)

    def client_paused(self, paused: bool) -> None:
        """The client's send buffer is full: stop reading the upstream until it drains."""
        connection = self.connection
        if connection is not None and connection.transport is not None and not connection.transport.is_closing():
            if paused:
                connection.transport.pause_reading()
            else:
                connection.transport.resume_reading()

    # -- the response (pool.Receiver) --------------------------------------------------------------------------

    def head(self, status: int, reason: str, raw: list[tuple[bytes, bytes]]) -> None:
        connection_named: frozenset[str] = frozenset()
        pairs = []
        length = None
        chunked = False
        for name_b, value_b in raw:
            name = name_b.decode("utf-8", "surrogateescape")
            value = value_b.decode("utf-8", "surrogateescape")
            pairs.append((name, value))
            lower = name.lower()
            if lower == "content-length":
                length = value.strip()
            elif lower == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif lower == "connection":
                connection_named = connection_named.union(shared_headers.connection_tokens([value]))
        dropped = HOP_BY_HOP | connection_named
        headers = [(name, value) for name, value in pairs if name.lower() not in dropped]
        empty = status in _EMPTY_BODY or status < 200
        if length is not None and not chunked and not (status == 204):
            headers.append(("Content-Length", length))
        elif not empty:
            headers.append(("Transfer-Encoding", "chunked"))
            self.chunked = True
        if not self.plan.head.keep_alive:
            headers.append(("Connection", "close"))
        self.status = status
        self.headers = headers
        lines = [f"HTTP/1.1 {status} {reason}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        lines.append("\r\n")
        self.out.append("".join(lines).encode("utf-8", "surrogateescape"))

    def body(self, data: bytes) -> None:
        if not self.size:
            self.first = data[:HEAD]
        self.size += len(data)
        if self.chunked:
            self.out.append(b"%x\r\n" % len(data))
            self.out.append(data)
            self.out.append(b"\r\n")
        else:
            self.out.append(data)

    def flush(self) -> None:
        transport = self.front.transport
        if self.out and transport is not None:
            if len(self.out) == 1:
                transport.write(self.out[0])
            else:
                transport.writelines(self.out)  # one system call, no copy of the body into a new bytes
        self.out.clear()

    def done(self) -> None:
        if self.chunked:
            self.out.append(b"0\r\n\r\n")
        self.flush()
        self._end("complete", self.plan.head.keep_alive)
        log.debug("relayed %s %s → %s", self.plan.head.method, self.plan.target, self.status)

    def failed(self, exc: BaseException | None, answered: bool) -> None:
        plan = self.plan
        if answered:
            self.flush()
            log.info("upstream %s failed mid-body: %r; dropping the client's connection", plan.target, exc)
            self.front.abort()
            self._end("upstream failed", False)
            return
        connection, self.connection = self.connection, None
        if (connection is not None and connection.reused and not self.retried and not plan.head.length
                and plan.head.method in IDEMPOTENT):  # fmt: skip
            self.retried = True  # a kept connection the upstream had closed: once more, on a new one
            self._dial()
            return
        self._unreachable(exc or ConnectionResetError("the upstream closed the connection without an answer"))

    def paused(self, paused: bool) -> None:
        transport = self.front.transport
        if transport is not None and not transport.is_closing():
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # -- endings ---------------------------------------------------------------------------------------------

    def _unreachable(self, exc: BaseException) -> None:
        """502, as relay/http.py answers one (its CORS headers for a browser; aiohttp's Date and Server)."""
        plan = self.plan
        log.info("could not relay %s %s: %r", plan.head.method, plan.target, exc)
        text = f"upstream {plan.target} could not be reached: {exc!r}\n".encode()
        headers: CIMultiDict[str] = CIMultiDict()
        headers["Content-Type"] = "text/plain; charset=utf-8"
        with_cors(headers, plan.head.headers.get("Origin"))
        headers["Content-Length"] = str(len(text))
        headers["Date"] = formatdate(usegmt=True)
        headers["Server"] = SERVER_SOFTWARE
        if not plan.head.keep_alive:
            headers["Connection"] = "close"
        self.status = 502
        self.headers = list(headers.items())
        self.size, self.first = len(text), text[:HEAD]
        lines = ["HTTP/1.1 502 Bad Gateway\r\n", *(f"{name}: {value}\r\n" for name, value in headers.items()), "\r\n"]
        self.out.append("".join(lines).encode())
        self.out.append(text)
        self.flush()
        self._end("complete", plan.head.keep_alive, upstream=False)

    def client_gone(self) -> None:
        if self.ended:
            return
        log.info("the client of %s %s went away mid-body: the upstream request is abandoned",
                 self.plan.head.method, self.plan.target)  # fmt: skip
        if self.dialling is not None:
            self.dialling.cancel()
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.abandon()
        self._end("client gone", False, tell_front=False)

    def _end(self, outcome: str, keep_alive: bool, upstream: bool = True, tell_front: bool = True) -> None:
        self.ended = True
        self.connection = None
        keep_alive = keep_alive and not self.body_left  # what is left of its body must not be read as a request
        plan = self.plan
        if plan.sinks and plan.info is not None:
            answered = HttpAnswered(plan.info.id, self.status, tuple(self.headers), self.size, self.first,
                                    str(plan.target) if upstream else None, outcome)  # fmt: skip
            for sink in plan.sinks:
                sink.seen(answered)
        if tell_front:
            self.front.finished(keep_alive)
