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
from typing import Any, Callable

from aiohttp import WSMsgType

from appserver.errors import LegClosed
from appserver.events import Closed, Injected, Opened, Sink, publish, tell
from appserver.relay.leg import Controls, Lane, Leg, forget, read_leg
from appserver.relay.lifecycle import End, LegState, Side, check_sendable
from appserver.relay.pump import ProxyEnd, pass_on_end, pump
from appserver.verdict import CloseLegs, Chain, ConnectionHooks, Effect, Inject
from shared.connections import ClosedBy, ConnectionClosed, ConnectionOpened
from shared.wire import Frame

log = logging.getLogger(__name__)


class Connection:
    def __init__(
        self,
        info: ConnectionOpened,
        client: Leg,
        upstream: Leg,
        chain: Chain,
        sinks: Sequence[Sink] = (),
        max_queued: int = 0,
        remote: str | None = None,
        hooks: ConnectionHooks | None = None,
        effects: tuple[Effect, ...] = (),
        upstream_url: str | None = None,
        owner: object | None = None,
    ) -> None:
        self.info = info
        self.id = info.id
        self.legs = {Side.CLIENT: client, Side.SERVER: upstream}
        self._chain = chain
        self._sinks = tuple(sinks)
        self._frame_sinks = tuple(s for s in sinks if s.frames)
        self._max_queued = max_queued
        self._remote = remote
        self.controls = Controls(info.id, hooks, sinks=self._frame_sinks)
        self._upstream_url = upstream_url
        #: Whose connection this is (a suite's scope: SPEC Part 6); the control methods check it.
        self.owner = owner
        self._initial_effects = effects  # decided on connect (e.g. silence)
        self._queues: dict[Side, asyncio.Queue[Any]] = {}
        self.first_end: tuple[ClosedBy, End] | None = None

    async def run(self) -> None:
        """Publish Opened, relay until both legs are closed, publish Closed."""
        await publish(self._sinks, Opened(self.info, self._remote, self._upstream_url))
        client, upstream = self.legs[Side.CLIENT], self.legs[Side.SERVER]
        self._queues = {side: asyncio.Queue(self._max_queued) for side in Side}
        timers: set[asyncio.Task[None]] = set()
        try:
            if self._initial_effects:
                await self.apply(self._initial_effects)
            if self.controls.hooks is not None:
                timers = {asyncio.ensure_future(self._timer(delay, fire))
                          for delay, fire in self.controls.hooks.timers(self.info)}  # fmt: skip
            async with asyncio.TaskGroup() as tasks:
                for source, dest in ((client, upstream), (upstream, client)):
                    queue = self._queues[source.side]
                    lane = Lane(queue, source, dest, self._chain, self._frame_sinks, self.controls)
                    if source.watch is not None:  # from here on, frames may go on below aiohttp (frames.py)
                        source.watch.lane = lane
                    tasks.create_task(read_leg(source, dest, queue, self.controls, lane.offer))
                    tasks.create_task(pump(queue, source, dest, self._chain, self._frame_sinks, self.controls,
                                           self.apply, self._on_end, lane))  # fmt: skip
        finally:
            for queue in self._queues.values():  # what no pump will deliver now
                while not queue.empty():
                    forget(queue.get_nowait())
            for task in (*timers, *self.controls.delayed):
                task.cancel()
            await asyncio.gather(*timers, *self.controls.delayed, return_exceptions=True)
            for leg in self.legs.values():
                if leg.state is not LegState.CLOSED:
                    leg.abort()
        await publish(self._sinks, Closed(self.closed_event(), self.info.url))

    async def _timer(self, delay: float, fire: Callable[[], tuple[Effect, ...]]) -> None:
        await asyncio.sleep(delay)
        effects = fire()
        if effects:
            await self.apply(effects)

    async def apply(self, effects: tuple[Effect, ...]) -> None:
        """Side effects of a rule, in order: inject, close (behind what is queued for that leg), silence."""
        for effect in effects:
            if isinstance(effect, Inject):
                try:
                    await self.inject(effect.frame, effect.from_client)
                except LegClosed as exc:
                    log.debug("connection %s: a rule's injection was not sent: %s", self.id, exc)
                finally:
                    if effect.done is not None:
                        effect.done()
            elif isinstance(effect, CloseLegs):
                end = End.drop() if effect.abrupt else End.close(effect.code, effect.reason)
                for side in (Side(name) for name in effect.sides):
                    self._close_behind(side, end)
            else:
                self.controls.silenced = True

    def _close_behind(self, side: Side, end: End) -> None:
        """Close that leg once the frames queued for it are delivered (they come from the other leg)."""
        queue = self._queues.get(side.other)
        try:
            if queue is None:
                raise asyncio.QueueFull
            queue.put_nowait(ProxyEnd(end))
        except asyncio.QueueFull:  # a full queue (or none yet): close now rather than never
            if self.first_end is None:
                self.first_end = (ClosedBy.PROXY, end)
            task = asyncio.ensure_future(pass_on_end(end, self.legs[side]))
            self.controls.delayed.add(task)
            task.add_done_callback(self.controls.delayed.discard)

    async def send_ping(self, side: Side, payload: bytes) -> None:
        """The suite's own ping on one leg; its pong ends here (a pong event, not relayed)."""
        leg = self.legs[side]
        if not leg.can_send:
            raise LegClosed(f"the {side} leg of connection {self.id} is {leg.state.value}")
        self.controls.own_pings[side].add(payload)
        await leg.send_control(WSMsgType.PING, payload)

    def _on_end(self, side: Side | None, end: End) -> None:
        """Who ended the connection first: a leg, or (side None) the proxy's own close."""
        if self.first_end is None:
            self.first_end = (ClosedBy.PROXY if side is None else ClosedBy(side.value), end)

    async def inject(self, frame: Frame, from_client: bool) -> None:
        """Send at once on the leg named (from_client → towards the server); return once it is written."""
        leg = self.legs[Side.SERVER if from_client else Side.CLIENT]
        if not leg.can_send:
            raise LegClosed(f"the {leg.side} leg of connection {self.id} is {leg.state.value}")
        try:
            await leg.send_written(frame)
        except ConnectionError as exc:
            raise LegClosed(f"the {leg.side} leg of connection {self.id} is gone") from exc
        tell(self._frame_sinks, Injected(self.id, from_client, frame))

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
