"""What a connection publishes about itself, and the sinks that watch it.

A connection hands every event to each of its sinks in order: opened, each
frame with its verdict, each ping and pong, each injection, closed; a plain
HTTP exchange hands over its request and its response. The relay never calls
an observer by name: the suite's JSON-RPC notifications are one sink
(control/suite.py), the INFO/DEBUG log is another (:class:`LogSink`), the
trace a third (appserver/trace). A sink whose ``frames`` is False is given
only opens and closes, so watching those costs a frame nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from appserver.verdict import Drop, Replace, Verdict
from shared import ably
from shared.connections import ConnectionClosed, ConnectionOpened
from shared.wire import Frame

log = logging.getLogger("appserver.connection")


@dataclass(frozen=True, slots=True)
class Opened:
    """The connection is open both ways (the upstream accepted); nothing has been relayed yet."""

    info: ConnectionOpened
    remote: str | None  # the client's address, as the proxy endpoint saw it
    upstream: str | None = None  # the URL dialled (after routes); None: answered by the proxy alone


@dataclass(frozen=True, slots=True)
class Failed:
    """A client's handshake that did not become a connection: refused by a rule (``refused``), by the
    upstream (``upstream-refused``), the upstream unreachable (``unreachable``), or the client gone during a
    connect delay (``abandoned``). The trace counts it as an attempt; nobody else is told."""

    info: ConnectionOpened
    remote: str | None
    outcome: str
    status: int
    reason: str = ""
    upstream: str | None = None


@dataclass(frozen=True, slots=True)
class Pinged:
    """A ping or pong from one leg, and what became of it (``relayed``, ``dropped``, ``delayed``, ``silenced``,
    or ``answered``: the pong to the suite's own ping, which ends here)."""

    connection_id: str
    from_client: bool
    kind: str  # "ping" | "pong"
    payload: bytes
    fate: str


@dataclass(frozen=True, slots=True)
class Injected:
    """A frame the suite had sent on one leg (``from_client``: towards the server)."""

    connection_id: str
    from_client: bool
    frame: Frame


@dataclass(frozen=True, slots=True)
class Closed:
    """Both legs are closed: who closed first, and how."""

    closed: ConnectionClosed
    url: str


@dataclass(frozen=True, slots=True)
class HttpRequested:
    """A plain HTTP request has arrived (``info.id`` names the exchange); its body when it was read whole."""

    info: ConnectionOpened
    method: str
    body: bytes | None
    remote: str | None


@dataclass(frozen=True, slots=True)
class HttpAnswered:
    """What the client got: the status and headers, how many body bytes and the first of them, where it came
    from (``upstream`` URL, or None: made by the proxy), and how it ended (``complete``, ``dropped``,
    ``upstream failed``, ``client gone``)."""

    exchange_id: str
    status: int | None
    headers: tuple[tuple[str, str], ...]
    size: int
    head: bytes
    upstream: str | None
    outcome: str = "complete"


#: A connection opening or closing: told to every sink, which may take its time (a notification).
Event = Opened | Closed | Failed
#: Everything else, told only to sinks whose ``frames`` is True, synchronously: a sink must not block.
Seen = Pinged | Injected | HttpRequested | HttpAnswered


class Sink(Protocol):
    #: Whether this sink wants the per-frame events (:meth:`frame` and :data:`Seen`).
    frames: bool

    async def publish(self, event: Event) -> None: ...

    def frame(self, connection_id: str, from_client: bool, frame: Frame, verdict: Verdict, by: str | None) -> None:
        """A data frame from one leg and what was decided for it, before it is delivered; ``by``: the rule that
        decided (its id), "suite", or None (nobody had an opinion). Its parts, not an event object: this is
        called for every frame."""
        ...

    def seen(self, event: Seen) -> None: ...

    def records_http(self) -> bool:
        """Whether an HTTP exchange beginning now would be kept (:class:`HttpRequested`, :class:`HttpAnswered`):
        the relay below aiohttp (relay/front.py) describes an exchange only when a sink would."""
        ...


async def publish(sinks: Sequence[Sink], event: Event) -> None:
    for sink in sinks:
        await sink.publish(event)


def tell(sinks: Sequence[Sink], event: Seen) -> None:
    """A per-frame event to the frame sinks (the caller passes only those)."""
    for sink in sinks:
        sink.seen(event)


class LogSink:
    """One INFO line per connection opened and closed; each frame at DEBUG, by Ably action name."""

    def __init__(self) -> None:
        self.frames = log.isEnabledFor(logging.DEBUG)

    async def publish(self, event: Event) -> None:
        if isinstance(event, Opened):
            info = event.info
            upstream = event.upstream
            via = f" → {upstream}" if upstream and upstream != info.url else ""
            log.info("connection %s opened: %s%s (from %s)", info.id, info.url, via, event.remote)
        elif isinstance(event, Closed):
            c = event.closed
            log.info("connection %s closed by %s: code=%s reason=%r clean=%s (%s)",
                     c.id, c.closed_by, c.code, c.reason, c.clean, event.url)  # fmt: skip

    def frame(self, connection_id: str, from_client: bool, frame: Frame, verdict: Verdict, by: str | None) -> None:
        fate = " [dropped]" if isinstance(verdict, Drop) else " [replaced]" if isinstance(verdict, Replace) else ""
        log.debug("connection %s %s %s%s", connection_id, ">" if from_client else "<", ably.describe(frame.data),
                  fate)  # fmt: skip

    def records_http(self) -> bool:
        return False  # HTTP exchanges are not logged here (relay/http.py and relay/front.py log their own)

    def seen(self, event: Seen) -> None:
        if isinstance(event, Injected):
            log.debug("connection %s %s injected %s", event.connection_id, ">" if event.from_client else "<",
                      ably.describe(event.frame.data))  # fmt: skip
        elif isinstance(event, Pinged):
            log.debug("connection %s %s %s (%s)", event.connection_id, ">" if event.from_client else "<",
                      event.kind, event.fate)  # fmt: skip
