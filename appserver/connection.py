"""One proxied WebSocket connection: two legs, two queues, four tasks.

The connection owns its tasks (a TaskGroup) and, whatever happens, leaves
both transports closed when :meth:`Connection.run` returns.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from appserver.errors import LegClosed
from appserver.lifecycle import End, LegState, Side, check_sendable
from appserver.relay import Leg, pass_on_end, pump, read_leg
from shared import ably
from shared.wire import ClosedBy, ConnectionClosed, ConnectionOpened, Frame

log = logging.getLogger(__name__)

#: Asks the active suite about one message: (connection id, frame, from_client) → frame or None.
Transform = Callable[[str, Frame, bool], Awaitable[Frame | None]]
#: Sends a notification to the active suite, if any.
Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


class Connection:
    def __init__(
        self,
        info: ConnectionOpened,
        client: Leg,
        upstream: Leg,
        transform: Transform,
        max_queued: int = 0,
    ) -> None:
        self.info = info
        self._max_queued = max_queued
        self.id = info.id
        self.legs = {Side.CLIENT: client, Side.SERVER: upstream}
        self._transform = transform
        self.first_end: tuple[ClosedBy, End] | None = None

    async def run(self) -> None:
        """Relay until both legs are closed."""
        client, upstream = self.legs[Side.CLIENT], self.legs[Side.SERVER]
        queues: dict[Side, asyncio.Queue[Frame | End]] = {side: asyncio.Queue(self._max_queued) for side in Side}
        try:
            async with asyncio.TaskGroup() as tasks:
                for source, dest in ((client, upstream), (upstream, client)):
                    queue = queues[source.side]
                    tasks.create_task(read_leg(source, dest, queue))
                    tasks.create_task(
                        pump(queue, source, dest, self._decider(source.side), self._on_end)
                    )
        finally:
            for leg in self.legs.values():
                if leg.state is not LegState.CLOSED:
                    leg.abort()

    def _decider(self, source: Side) -> Callable[[Frame], Awaitable[Frame | None]]:
        from_client = source is Side.CLIENT
        arrow = ">" if from_client else "<"

        async def decide(frame: Frame) -> Frame | None:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("connection %s %s %s", self.id, arrow, ably.describe(frame.data))
            return await self._transform(self.id, frame, from_client)

        return decide

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
