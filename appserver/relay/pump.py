"""One pump per direction: the next frame of a leg, its verdict, its delivery; then the leg's End.

Ordering comes from this structure alone: a pump takes one item at a time from
its direction's queue, asks the decider chain (verdict.py) in order until one
has an opinion, tells the frame sinks (events.py) what was decided, applies it
(a delay holds the whole direction), then its side effects, and only then
takes the next. A leg's End is queued behind its frames, so a close is passed
on only after everything before it was delivered or dropped; a close the
proxy decides (a rule's ``close``) is queued the same way, as a
:class:`ProxyEnd`, behind the frames already waiting for that leg.

Everything a frame meets between the two legs is in this one function, in
the order it meets it: a decider answers at once (a verdict) or with an
awaitable (the suite's answer, which takes a round trip), so a rule's verdict
costs no coroutine; the frame is written to the destination's socket here,
through its :class:`CorkedTransport`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, cast

from aiohttp import WSMsgType

from appserver.events import Sink
from appserver.relay.leg import Controls, Decided, Lane, Leg, forget
from appserver.relay.lifecycle import PassOn, End, Side, close_action
from appserver.verdict import PASS, VERDICTS, Chain, Decider, Decision, Delay, Drop, Effect, Inject, Replace, Verdict

log = logging.getLogger(__name__)

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
    chain: Chain,
    sinks: Sequence[Sink],
    controls: Controls,
    apply_effects: ApplyEffects,
    on_end: Callable[[Side | None, End], None],
    lane: Lane | None = None,
) -> None:
    """Deliver the source leg's messages in order, then pass its End on. With a ``lane``, the reader delivers
    what it can itself while this waits with nothing to do."""
    from_client = source.side is Side.CLIENT
    connection_id = controls.connection_id
    cork = dest.transport if isinstance(dest.transport, CorkedTransport) else None
    send_frame = dest.ws.send_frame
    while True:
        try:  # frames already waiting are taken without a suspension, and written out together
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            if cork is not None:
                cork.release()
            if lane is None:
                item = await queue.get()
            else:
                lane.idle = True
                try:
                    item = await queue.get()
                finally:
                    lane.idle = False
        if cork is not None:
            cork.held = True
        if isinstance(item, End):
            if cork is not None:
                cork.release()
            if controls.hooks is not None:
                await _closing(item, source, controls, apply_effects)
            on_end(source.side, item)
            await pass_on_end(item, dest)
            return
        if isinstance(item, ProxyEnd):
            if cork is not None:
                cork.release()
            on_end(None, item.end)
            await pass_on_end(item.end, dest)
            continue
        if not dest.can_send or controls.silenced:
            log.debug("discarding a %s message: the %s leg is %s", source.side, dest.side, dest.state.value)
            forget(item)
            continue
        verdict: Any = PASS
        by = None
        decided = item if type(item) is Decided else None
        if decided is not None:  # its reader asked the chain already, while this was idle (Lane.offer)
            item = decided.frame
        # In order; the first opinion decides, none (or no decider at all): pass.
        for decider in chain.deciders if decided is None else (decided.decider,):
            found = decider.decide(connection_id, item, from_client) if decided is None else decided.answer
            if found is None:
                continue
            if not isinstance(found, VERDICTS):  # the decider waits for someone (the suite): write what is done
                if cork is not None:
                    cork.release()
                if decider.window > 1:  # several may be with the suite at once: from here on, in a window
                    await _windowed(queue, source, dest, chain, sinks, controls, apply_effects, on_end,
                                    (item, asyncio.ensure_future(_with_by(found, decider)), None))  # fmt: skip
                    return
                found = await found
                if cork is not None:
                    cork.held = True
                by = decider.decided_by  # read with no suspension since the verdict was given
            else:
                by = decider.decided_by if decided is None else decided.by
            verdict = found
            break
        if decided is None or not isinstance(decided.answer, VERDICTS):  # (a reader's verdict: told already)
            for sink in sinks:
                sink.frame(connection_id, from_client, item, verdict, by)
        if verdict is PASS:  # the common case, first
            try:
                data = item.data
                if type(data) is str:
                    await send_frame(data.encode("utf-8"), WSMsgType.TEXT)
                else:
                    await send_frame(data, WSMsgType.BINARY)
            except ConnectionError:
                log.debug("could not deliver to the %s: transport gone", dest.side)
            continue
        if cork is not None:
            cork.release()
        await _apply(verdict, item, dest, controls, apply_effects)


async def _apply(verdict: Any, item: Any, dest: Leg, controls: Controls, apply_effects: ApplyEffects) -> None:
    """A verdict other than a plain pass: what is injected before, a delay, the frame (or its replacement)
    unless dropped, then the side effects."""
    fate, effects = (verdict.fate, verdict.effects) if isinstance(verdict, Decision) else (verdict, ())
    if effects and any(isinstance(e, Inject) and e.before for e in effects):
        # uts-proxy's order: what is injected "before" reaches its destination ahead of this frame
        await apply_effects(tuple(e for e in effects if isinstance(e, Inject) and e.before))
        effects = tuple(e for e in effects if not (isinstance(e, Inject) and e.before))
    if isinstance(fate, Delay):
        await asyncio.sleep(fate.ms / 1000)
    if not isinstance(fate, Drop) and dest.can_send and not controls.silenced:
        frame = fate.frame if isinstance(fate, Replace) else item
        try:
            if isinstance(frame.data, str):
                await dest.ws.send_frame(frame.data.encode("utf-8"), WSMsgType.TEXT)
            else:
                await dest.ws.send_frame(frame.data, WSMsgType.BINARY)
        except ConnectionError:
            log.debug("could not deliver to the %s: transport gone", dest.side)
    if effects:
        await apply_effects(effects)


#: A frame in the window: the frame, its verdict and who decided, or the task that will give both.
_Pending = tuple[Any, Any, "str | None"]


async def _windowed(
    queue: asyncio.Queue[Any], source: Leg, dest: Leg, chain: Chain, sinks: Sequence[Sink],
    controls: Controls, apply_effects: ApplyEffects, on_end: Callable[[Side | None, End], None], first: _Pending,
) -> None:  # fmt: skip
    """The pump's loop once a decider allows several of its answers to be awaited at once (SPEC Part 10,
    ``window: N``): up to N frames are taken from the queue and asked about before the first is delivered;
    they are delivered strictly in their order, each once, an answer that comes early waiting for the earlier
    ones. An End (or a close the proxy decided) waits behind every frame taken before it."""
    from_client = source.side is Side.CLIENT
    connection_id = controls.connection_id
    pending: collections.deque[_Pending] = collections.deque([first])
    getter: asyncio.Future[Any] | None = None
    ended: Any = None  # the End or ProxyEnd taken from the queue, passed on once everything before it is
    try:
        while True:
            window = max((d.window for d in chain.members), default=1)
            while ended is None and len(pending) < window:  # fill the window from what is waiting
                if getter is not None:
                    if not getter.done():
                        break
                    item, getter = getter.result(), None
                else:
                    try:
                        item = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                if isinstance(item, (End, ProxyEnd)):
                    ended = item
                    break
                pending.append(_asked(chain, connection_id, item, from_client))
            if pending:
                head = pending[0][1]
                if isinstance(head, asyncio.Future) and not head.done():
                    waits: set[asyncio.Future[Any]] = {head}
                    if ended is None and len(pending) < window:
                        if getter is None:
                            getter = asyncio.ensure_future(queue.get())
                        waits.add(getter)
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    continue
                item, decided, by = pending.popleft()
                if isinstance(decided, asyncio.Future):
                    verdict, by = decided.result()
                else:
                    verdict = decided
                if not dest.can_send or controls.silenced:
                    log.debug("discarding a %s message: the %s leg is %s", source.side, dest.side, dest.state.value)
                    continue
                for sink in sinks:
                    sink.frame(connection_id, from_client, item, verdict, by)
                await _apply(verdict, item, dest, controls, apply_effects)
                continue
            if ended is None:  # nothing in the window: wait for the next frame
                if getter is None:
                    getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter})
                continue
            if isinstance(ended, ProxyEnd):
                on_end(None, ended.end)
                await pass_on_end(ended.end, dest)
                ended = None
                continue
            if controls.hooks is not None:
                await _closing(ended, source, controls, apply_effects)
            on_end(source.side, ended)
            await pass_on_end(ended, dest)
            return
    finally:
        if getter is not None and not getter.done():
            getter.cancel()
        for _, decided, _ in pending:  # the pump was cancelled: the suite's answers are no longer awaited
            if isinstance(decided, asyncio.Future):
                decided.cancel()


def _asked(chain: Chain, connection_id: str, item: Any, from_client: bool) -> _Pending:
    """A frame's verdict from the chain, or (someone must be asked) the task that will give it."""
    for decider in chain.deciders:
        found = decider.decide(connection_id, item, from_client)
        if found is None:
            continue
        if isinstance(found, VERDICTS):
            return item, found, decider.decided_by
        return item, asyncio.ensure_future(_with_by(found, decider)), None
    return item, PASS, None


async def _with_by(answer: Awaitable[Any], decider: Decider) -> tuple[Any, str | None]:
    """The verdict to come, and who gave it: read as soon as it is given, with no suspension in between."""
    verdict = await answer
    return verdict, decider.decided_by


async def _closing(end: End, source: Leg, controls: Controls, apply_effects: ApplyEffects) -> None:
    """The close event's rules, before the close is passed on: a delay, side effects (an inject)."""
    assert controls.hooks is not None
    verdict = controls.hooks.closing(controls.connection_id, source.side is Side.CLIENT, end.code, end.reason,
                                     end.abrupt)  # fmt: skip
    fate, effects = (verdict.fate, verdict.effects) if isinstance(verdict, Decision) else (verdict, ())
    if isinstance(fate, Delay):
        await asyncio.sleep(fate.ms / 1000)
    if effects:
        await apply_effects(effects)


async def pass_on_end(end: End, dest: Leg) -> None:
    action = close_action(end, dest.state)
    if action is PassOn.ABORT:
        dest.abort()
    elif action in (PassOn.ANSWER_CLOSE, PassOn.SEND_CLOSE):
        await dest.send_close(end.code, end.reason)


class CorkedTransport:
    """A transport whose writes within one turn of the event loop leave in one system call.

    A pump that finds several frames waiting writes them all before it yields;
    each write would otherwise be its own send(). While the pump runs it holds
    the cork (``held``) and releases it, writing everything out, before it
    waits for anything; any other write (a relayed ping, a close) is flushed at
    the end of its turn (call_soon). A close and an abort flush first, so what
    was delivered before an abrupt drop still leaves, as it did unbuffered.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._buffer: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        #: A pump is writing: it flushes itself before it waits (release()).
        self.held = False
        # Asked for every frame (aiohttp's writer, Lane.offer): the transport's own methods, no Python call.
        self.is_closing = transport.is_closing
        self.get_write_buffer_size = transport.get_write_buffer_size

    def write(self, data: bytes) -> None:
        if not self._buffer and not self.held:
            self._loop.call_soon(self.flush)
        self._buffer.append(data)

    def release(self) -> None:
        self.held = False
        if self._buffer:
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


def corked(ws: Any, transport: asyncio.Transport) -> asyncio.Transport:
    """Put a CorkedTransport under ws's frame writer (aiohttp's private ``_writer``, as shared/cork.py does for a
    control connection); the same one for the leg to close or abort."""
    cork = CorkedTransport(transport)
    ws._writer.transport = cork  # noqa: SLF001
    return cast(asyncio.Transport, cork)  # it is one, to its users: everything else is delegated
