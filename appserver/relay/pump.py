"""One pump per direction: the next frame of a leg, its verdict, its delivery; then the leg's End.

Ordering comes from this structure alone: a pump takes one item at a time from
its direction's queue, awaits the decider chain's verdict (verdict.py), applies
it (a delay holds the whole direction), then its side effects, and only then
takes the next. A leg's End is queued behind its frames, so a close is passed
on only after everything before it was delivered or dropped; a close the
proxy decides (a rule's ``close``) is queued the same way, as a
:class:`ProxyEnd`, behind the frames already waiting for that leg.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from appserver.relay.leg import Controls, Leg
from appserver.relay.lifecycle import CloseAction, End, Side, close_action
from appserver.verdict import PASS, Delay, Drop, Effect, Inject, Replace, Verdict, split
from shared.wire import Frame

log = logging.getLogger(__name__)

#: The verdict for one frame of this direction.
Decide = Callable[[Frame], Awaitable[Verdict]]
#: Told every frame and its verdict, before it is delivered (the connection's per-frame events).
OnDecided = Callable[[Frame, Verdict], None]
#: Applies side effects (inject, close, silence) for the connection.
ApplyEffects = Callable[[tuple[Effect, ...]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ProxyEnd:
    """A close the proxy decided for the destination leg, queued behind what waits for it."""

    end: End


async def pump(
    queue: asyncio.Queue[Any],
    source: Leg,
    dest: Leg,
    decide: Decide,
    on_decided: OnDecided | None,
    on_end: Callable[[Side | None, End], None],
    controls: Controls | None = None,
    apply_effects: ApplyEffects | None = None,
) -> None:
    """Deliver the source leg's messages in order, then pass its End on."""
    while True:
        try:  # frames already waiting are taken without a suspension
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            item = await queue.get()
        if isinstance(item, End):
            if controls is not None and controls.hooks is not None:
                await _closing(item, source, controls, apply_effects)
            on_end(source.side, item)
            await pass_on_end(item, dest)
            return
        if isinstance(item, ProxyEnd):
            on_end(None, item.end)
            await pass_on_end(item.end, dest)
            continue
        if not dest.can_send or (controls is not None and controls.silenced):
            log.debug("discarding a %s message: the %s leg is %s", source.side, dest.side, dest.state.value)
            continue
        verdict = await decide(item)
        if on_decided is not None:
            on_decided(item, verdict)
        if verdict is PASS:  # the common case, first
            try:
                await dest.send(item)
            except ConnectionError:
                log.debug("could not deliver to the %s: transport gone", dest.side)
            continue
        fate, effects = split(verdict)
        if effects and apply_effects is not None and any(isinstance(e, Inject) and e.before for e in effects):
            # uts-proxy's order: what is injected "before" reaches its destination ahead of this frame
            await apply_effects(tuple(e for e in effects if isinstance(e, Inject) and e.before))
            effects = tuple(e for e in effects if not (isinstance(e, Inject) and e.before))
        if isinstance(fate, Delay):
            await asyncio.sleep(fate.ms / 1000)
        if not isinstance(fate, Drop) and dest.can_send and not (controls is not None and controls.silenced):
            try:
                await dest.send(fate.frame if isinstance(fate, Replace) else item)
            except ConnectionError:
                log.debug("could not deliver to the %s: transport gone", dest.side)
        if effects and apply_effects is not None:
            await apply_effects(effects)


async def _closing(end: End, source: Leg, controls: Controls, apply_effects: ApplyEffects | None) -> None:
    """The close event's rules, before the close is passed on: a delay, side effects (an inject)."""
    assert controls.hooks is not None
    verdict = controls.hooks.closing(controls.connection_id, source.side is Side.CLIENT, end.code, end.reason,
                                     end.abrupt)  # fmt: skip
    fate, effects = split(verdict)
    if isinstance(fate, Delay):
        await asyncio.sleep(fate.ms / 1000)
    if effects and apply_effects is not None:
        await apply_effects(effects)


async def pass_on_end(end: End, dest: Leg) -> None:
    action = close_action(end, dest.state)
    if action is CloseAction.ABORT:
        dest.abort()
    elif action in (CloseAction.ANSWER_CLOSE, CloseAction.SEND_CLOSE):
        await dest.send_close(end.code, end.reason)
