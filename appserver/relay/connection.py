"""One proxied WebSocket connection: two legs, two queues, four tasks.

The connection owns its tasks (a TaskGroup) and, whatever happens, leaves
both transports closed when :meth:`Connection.run` returns. It asks its
decider chain about every frame and tells its sinks what happened
(events.py); it knows neither the suite nor any other observer by name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Awaitable, Callable

from appserver.errors import LegClosed
from appserver.relay.events import Closed, Decided, Injected, Opened, Sink, publish
from appserver.relay.leg import Leg, read_leg
from appserver.relay.lifecycle import End, LegState, Side, check_sendable
from appserver.relay.pump import OnDecided, pass_on_end, pump
from appserver.verdict import Decider, Verdict, decide
from shared.wire import ClosedBy, ConnectionClosed, ConnectionOpened, Frame

log = logging.getLogger(__name__)


class Connection:
    def __init__(
        self,
        info: ConnectionOpened,
        client: Leg,
        upstream: Leg,
        chain: Sequence[Decider],
        sinks: Sequence[Sink] = (),
        max_queued: int = 0,
        remote: str | None = None,
    ) -> None:
        self.info = info
        self.id = info.id
        self.legs = {Side.CLIENT: client, Side.SERVER: upstream}
        self._chain = tuple(chain)
        self._sinks = tuple(sinks)
        self._frame_sinks = tuple(s for s in sinks if s.frames)
        self._max_queued = max_queued
        self._remote = remote
        self.first_end: tuple[ClosedBy, End] | None = None

    async def run(self) -> None:
        """Publish Opened, relay until both legs are closed, publish Closed."""
        await publish(self._sinks, Opened(self.info, self._remote))
        client, upstream = self.legs[Side.CLIENT], self.legs[Side.SERVER]
        queues: dict[Side, asyncio.Queue[Frame | End]] = {side: asyncio.Queue(self._max_queued) for side in Side}
        try:
            async with asyncio.TaskGroup() as tasks:
                for source, dest in ((client, upstream), (upstream, client)):
                    queue = queues[source.side]
                    tasks.create_task(read_leg(source, dest, queue))
                    tasks.create_task(pump(queue, source, dest, self._decider(source.side),
                                           self._on_decided(source.side), self._on_end))  # fmt: skip
        finally:
            for leg in self.legs.values():
                if leg.state is not LegState.CLOSED:
                    leg.abort()
        await publish(self._sinks, Closed(self.closed_event(), self.info.url))

    def _decider(self, source: Side) -> Callable[[Frame], Awaitable[Verdict]]:
        from_client = source is Side.CLIENT

        async def verdict(frame: Frame) -> Verdict:
            return await decide(self._chain, self.id, frame, from_client)

        return verdict

    def _on_decided(self, source: Side) -> OnDecided | None:
        if not self._frame_sinks:
            return None
        from_client = source is Side.CLIENT

        async def decided(frame: Frame, verdict: Verdict) -> None:
            await publish(self._frame_sinks, Decided(self.id, from_client, frame, verdict))

        return decided

    def _on_end(self, side: Side, end: End) -> None:
        if self.first_end is None:
            self.first_end = (ClosedBy(side.value), end)

    async def inject(self, frame: Frame, from_client: bool) -> None:
        """Send at once on the leg named: from_client → towards the server."""
        leg = self.legs[Side.SERVER if from_client else Side.CLIENT]
        if not leg.can_send:
            raise LegClosed(f"the {leg.side} leg of connection {self.id} is {leg.state.value}")
        try:
            await leg.send(frame)
        except ConnectionError as exc:
            raise LegClosed(f"the {leg.side} leg of connection {self.id} is gone") from exc
        await publish(self._frame_sinks, Injected(self.id, from_client, frame))

    async def close(self, sides: tuple[Side, ...], code: int | None, reason: str, abrupt: bool) -> None:
        """Close legs on the proxy's own initiative (closeConnection, shutdown)."""
        check_sendable(code, reason)
        end = End.drop() if abrupt else End.close(code, reason)
        if self.first_end is None:
            self.first_end = (ClosedBy.PROXY, end)
        for side in sides:
            await pass_on_end(end, self.legs[side])

    def closed_event(self) -> ConnectionClosed:
        """What interceptedConnectionClosed says: who closed first, and how."""
        closed_by, end = self.first_end or (ClosedBy.PROXY, End.drop())
        return ConnectionClosed(self.id, closed_by, None if end.abrupt else end.code, end.reason, not end.abrupt)
