"""A client's handshake accepted with no upstream at all: the proxy plays the server.

A connect rule's ``inject`` and ``close`` (``[{inject …ERROR…}, {close …}]``: a
server that says one thing and hangs up) are applied here, in order; the
upstream is never dialled. Frames from the client go nowhere; the connection
ends when it is closed, by the rule or by the client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import WSMsgType, web

from appserver.events import Closed, Injected, Opened, Sink, publish, tell
from appserver.relay.leg import Leg
from appserver.relay.lifecycle import End, LegEvent, LegState, Side, code_from_wire
from appserver.relay.pump import pass_on_end
from appserver.verdict import CloseLegs, Effect, Inject
from shared.connections import ClosedBy, ConnectionClosed, ConnectionOpened

log = logging.getLogger(__name__)


async def serve_alone(
    request: web.Request, info: ConnectionOpened, effects: tuple[Effect, ...], sinks: Sequence[Sink],
    close_timeout: float,
) -> web.StreamResponse:  # fmt: skip
    ws = web.WebSocketResponse(autoclose=False, autoping=False, max_msg_size=0)
    await ws.prepare(request)
    assert request.transport is not None
    leg = Leg(Side.CLIENT, ws, request.transport, close_timeout)
    await publish(sinks, Opened(info, request.remote))
    first: tuple[ClosedBy, End] | None = None
    try:
        for effect in effects:
            if isinstance(effect, Inject):
                try:
                    if not effect.from_client and leg.can_send:
                        await leg.send_written(effect.frame)
                        tell([s for s in sinks if s.frames], Injected(info.id, False, effect.frame))
                finally:
                    if effect.done is not None:
                        effect.done()
            elif isinstance(effect, CloseLegs) and "client" in effect.sides:
                end = End.drop() if effect.abrupt else End.close(effect.code, effect.reason)
                first = first or (ClosedBy.PROXY, end)
                await pass_on_end(end, leg)
        first = await _until_closed(ws, leg, first)
    finally:
        if leg.state is not LegState.CLOSED:
            leg.abort()
    closed_by, end = first or (ClosedBy.PROXY, End.drop())
    closed = ConnectionClosed(info.id, closed_by, None if end.abrupt else end.code, end.reason, not end.abrupt)
    await publish(sinks, Closed(closed, info.url))
    return ws


async def _until_closed(ws: web.WebSocketResponse, leg: Leg, first: tuple[ClosedBy, End] | None
                        ) -> tuple[ClosedBy, End] | None:  # fmt: skip
    """Read (and discard) until the client's close or drop; a close is answered as lifecycle.py says."""
    while leg.state is not LegState.CLOSED:
        msg = await ws.receive()
        if msg.type is WSMsgType.CLOSE:
            end = End.close(code_from_wire(msg.data), msg.extra or "")
            leg.apply(LegEvent.RECEIVED_CLOSE)
            first = first or (ClosedBy.CLIENT, end)
            await pass_on_end(end, leg)
        elif msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
            leg.apply(LegEvent.TRANSPORT_LOST)
            first = first or (ClosedBy.CLIENT, End.drop())
    return first
