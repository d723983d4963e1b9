"""One pump per direction: the next frame of a leg, its verdict, its delivery; then the leg's End.

Ordering comes from this structure alone: a pump takes one item at a time from
its direction's queue, awaits the decider chain's verdict (verdict.py), applies
it, and only then takes the next. A leg's End is queued behind its frames, so
a close is passed on only after everything before it was delivered or dropped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from appserver.relay.leg import Leg
from appserver.relay.lifecycle import CloseAction, End, Side, close_action
from appserver.verdict import Drop, Replace, Verdict
from shared.wire import Frame

log = logging.getLogger(__name__)

#: The verdict for one frame of this direction.
Decide = Callable[[Frame], Awaitable[Verdict]]
#: Told every frame and its verdict, before it is delivered (the connection's per-frame events).
OnDecided = Callable[[Frame, Verdict], Awaitable[None]]


async def pump(
    queue: asyncio.Queue[Frame | End],
    source: Leg,
    dest: Leg,
    decide: Decide,
    on_decided: OnDecided | None,
    on_end: Callable[[Side, End], None],
) -> None:
    """Deliver the source leg's messages in order, then pass its End on."""
    while True:
        item = await queue.get()
        if isinstance(item, End):
            on_end(source.side, item)
            await pass_on_end(item, dest)
            return
        if not dest.can_send:
            log.debug("discarding a %s message: the %s leg is %s", source.side, dest.side, dest.state.value)
            continue
        verdict = await decide(item)
        if on_decided is not None:
            await on_decided(item, verdict)
        if isinstance(verdict, Drop) or not dest.can_send:
            continue
        try:
            await dest.send(verdict.frame if isinstance(verdict, Replace) else item)
        except ConnectionError:
            log.debug("could not deliver to the %s: transport gone", dest.side)


async def pass_on_end(end: End, dest: Leg) -> None:
    action = close_action(end, dest.state)
    if action is CloseAction.ABORT:
        dest.abort()
    elif action in (CloseAction.ANSWER_CLOSE, CloseAction.SEND_CLOSE):
        await dest.send_close(end.code, end.reason)
