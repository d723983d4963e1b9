"""The trace (SPEC Part 5): per active suite, a bounded, ordered record of what the proxy saw and did.

:class:`Tracer` is a sink on the connection events (appserver/events.py) and the
place the rules and the suite report their decisions; it keeps one
:class:`Trace` for the suite that is active now and starts a new one when
another suite takes over. A trace holds at most ``limit`` events (the oldest
go first; how many went is told by a ``dropped`` event at the head of what
``events`` returns) and at most ``data_limit`` bytes of any frame or body.

Recording is cheap on purpose (one tuple per event, the frame's data cut to
the limit); what a reader sees (the Ably action and channel, Base64 for
binary data) is worked out when the events are read.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any

from appserver.events import (Closed, Event, Failed, HttpAnswered, HttpRequested, Injected, Opened, Pinged,
                                    Seen)
from appserver.trace.render import (body_fields, changes, fate_name, frame_fields, plain, shown, text_or_bytes,
                                    who_decided)
from appserver.verdict import PASS, Replace, Verdict, split
from shared.wire import Frame, MessageType

DEFAULT_LIMIT = 10_000  # --trace-limit: events
DEFAULT_DATA_LIMIT = 1024  # --trace-data-limit: bytes of one frame's (or body's) data

#: t (monotonic ns), kind, connection id, and either the fields (what the reader sees, bar decoding) or, for
#: a frame, its parts (see Trace.add_frame): a flat tuple of atoms, which the GC stops scanning. An entry's
#: seq is its place: the first kept has ``next_seq - len(entries)``.
_Entry = tuple[Any, ...]


_clock = time.monotonic_ns
_BINARY = MessageType.BINARY


def now_us() -> int:
    return _clock() // 1000


class Trace:
    """One suite's events, oldest first, bounded."""

    def __init__(self, limit: int = DEFAULT_LIMIT, data_limit: int = DEFAULT_DATA_LIMIT) -> None:
        if limit < 1 or data_limit < 0:
            raise ValueError("a trace needs a limit of at least one event and a data limit of at least 0 bytes")
        self.limit = limit
        self.data_limit = data_limit
        self._entries: deque[_Entry] = deque(maxlen=limit)
        self.next_seq = 1
        self._since_clear = 1  # the seq of the first event after the last clear
        #: Wall-clock time at t = 0 of the monotonic clock, for exports that need dates (HAR).
        self.epoch = time.time() - time.monotonic()

    @property
    def dropped(self) -> int:
        """Events dropped for the limit since the last clear."""
        return self.next_seq - self._since_clear - len(self._entries)

    @property
    def first_seq(self) -> int:
        return self.next_seq - len(self._entries)

    @property
    def last_us(self) -> int | None:
        """When the newest event was recorded (monotonic µs), or None when there is none."""
        return self._entries[-1][0] // 1000 if self._entries else None

    def knows(self, connection_id: str) -> bool:
        return any(entry[2] == connection_id for entry in self._entries)

    def add(self, kind: str, connection_id: str | None, fields: dict[str, Any]) -> None:
        self._entries.append((_clock(), kind, connection_id, fields))
        self.next_seq += 1

    def add_frame(self, connection_id: str, from_client: bool, frame: Frame, fate: str, by: str | None) -> None:
        """A frame relayed and what was decided for it (the common case, kept as one flat tuple)."""
        data = frame.data
        if len(data) > self.data_limit:  # its action and channel are read now: only the limit of it stays
            self._entries.append((_clock(), "frame", connection_id,
                                  {"fromClient": from_client, "decision": fate, **who_decided(by),
                                   "_kept": frame_fields(frame, self.data_limit, kept=True)}))  # fmt: skip
        else:  # one flat tuple of atoms
            self._entries.append((_clock(), "frame", connection_id, from_client, frame.type is MessageType.BINARY,
                                  data, fate, by))  # fmt: skip
        self.next_seq += 1

    def clear(self) -> None:
        self._entries.clear()
        self._since_clear = self.next_seq

    def events(self, since: int = 0, connection_id: str | None = None, limit: int | None = None
               ) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
        """The events from seq ``since`` on (of one connection, if given; at most ``limit``), and the seq to
        ask for next. When some from ``since`` on were dropped for the limit, a ``dropped`` event with their
        count comes first."""
        out: list[dict[str, Any]] = []
        first, start = self.first_seq, max(since, 1)
        if start < first and self.dropped:
            t = self._entries[0][0] // 1000 if self._entries else now_us()
            out.append({"seq": first - 1, "t": t, "kind": "dropped", "count": min(first - start, self.dropped)})
        next_seq = self.next_seq
        skip = max(0, start - first)
        for index, entry in enumerate(itertools.islice(self._entries, skip, None), first + skip):
            if limit is not None and len(out) >= limit:
                next_seq = index
                break
            if connection_id is None or entry[2] == connection_id:
                out.append(self._render(index, entry))
        return out, max(next_seq, start) if start <= self.next_seq else start

    def _render(self, seq: int, entry: _Entry) -> dict[str, Any]:
        t_ns, kind, connection_id, fields = entry[:4]
        event: dict[str, Any] = {"seq": seq, "t": t_ns // 1000, "kind": kind}
        if connection_id is not None:
            event["connectionID"] = connection_id
        if len(entry) > 4:  # a frame kept by add_frame
            from_client, binary, data, fate, by = entry[3:]
            frame = Frame(MessageType.BINARY if binary else MessageType.TEXT, data)
            event.update(fromClient=from_client, decision=fate, **who_decided(by),
                         **frame_fields(frame, self.data_limit))
            return event
        for key, value in fields.items():
            if key == "_frame":
                event.update(frame_fields(value, self.data_limit))
            elif key == "_replacedBy":  # a replaced frame's replacement, and (both kept whole) what it changed
                event["replacedBy"] = frame_fields(value, self.data_limit)
                changed = changes(fields["_frame"], value)
                if changed:
                    event["changed"] = changed
            elif key == "_kept":
                event.update(shown(value, self.data_limit))
            elif key == "_replacedKept":
                event["replacedBy"] = shown(value, self.data_limit)
            elif key == "_headers":  # as they came (rendered when read: plain str names)
                event["headers"] = plain(value)
            elif key == "_body":  # an HTTP body: as text when it is UTF-8 (JSON, text), else Base64
                event.update(body_fields(text_or_bytes(value[: self.data_limit]), self.data_limit, len(value)))
            else:
                event[key] = value
        return event


class Tracer:
    """The sink that records the active suite's trace: :meth:`start` when a suite becomes active (a new, empty
    trace), :meth:`forget` when it goes (its trace goes with it); nothing is recorded in between."""

    def __init__(self, limit: int = DEFAULT_LIMIT, data_limit: int = DEFAULT_DATA_LIMIT, enabled: bool = True) -> None:
        self.limit = limit
        self.data_limit = data_limit
        #: Whether the per-frame events come here (False: --no-trace, nothing is recorded).
        self.frames = enabled
        self._trace: Trace | None = None

    def start(self) -> None:
        if self.frames:
            self._trace = Trace(self.limit, self.data_limit)

    def forget(self) -> None:
        self._trace = None

    def current(self) -> Trace | None:
        """The active suite's trace, or None when there is no active suite (or no tracing)."""
        return self._trace

    def decision(self, connection_id: str | None, **fields: Any) -> None:
        """A decision the rules or the suite made (a connect, an HTTP request, the suite's answer …)."""
        trace = self.current()
        if trace is not None:
            trace.add("decision", connection_id, fields)

    async def publish(self, event: Event) -> None:
        trace = self.current()
        if trace is None:
            return
        if isinstance(event, Opened):
            info = event.info
            trace.add("open", info.id, {"url": info.url, "host": info.host, "proto": info.proto, "path": info.path,
                                        "query": info.query, "headers": info.headers, "upstream": event.upstream,
                                        "remote": event.remote,
                                        "outcome": "accepted" if event.upstream else "served"})  # fmt: skip
        elif isinstance(event, Failed):
            info = event.info
            trace.add("open", info.id, {"url": info.url, "host": info.host, "proto": info.proto, "path": info.path,
                                        "query": info.query, "headers": info.headers, "upstream": event.upstream,
                                        "remote": event.remote, "outcome": event.outcome, "status": event.status,
                                        "reason": event.reason})  # fmt: skip
        elif isinstance(event, Closed):
            c = event.closed
            trace.add("close", c.id, {"closedBy": c.closed_by.value, "code": c.code, "reason": c.reason,
                                      "clean": c.clean})  # fmt: skip

    def frame(self, connection_id: str, from_client: bool, frame: Frame, verdict: Verdict, by: str | None) -> None:
        trace = self._trace
        if trace is None:
            return
        data = frame.data
        if verdict is PASS and len(data) <= trace.data_limit:  # the common case, as add_frame keeps it, inline
            trace._entries.append((_clock(), "frame", connection_id, from_client, frame.type is _BINARY, data, "pass",
                                   by))  # fmt: skip
            trace.next_seq += 1
            return
        if verdict is PASS:
            trace.add_frame(connection_id, from_client, frame, "pass", by)
            return
        fate, effects = fate_name(verdict)
        fields: dict[str, Any] = {"fromClient": from_client, **_kept(frame, trace), "decision": fate, **who_decided(by)}
        if effects:
            fields["effects"] = effects
        fate_frame = split(verdict)[0]
        if isinstance(fate_frame, Replace):
            replacement = fate_frame.frame
            if "_frame" in fields and len(replacement.data) <= trace.data_limit:
                fields["_replacedBy"] = replacement  # both kept whole: what changed is worked out when read
            elif "_kept" in fields and replacement.type is frame.type and replacement.data == data:
                fields["_replacedKept"] = fields["_kept"]  # the same message again: shown alike, nothing changed
            else:
                fields["replacedBy"] = frame_fields(replacement, trace.data_limit)
                changed = changes(frame, replacement)
                if changed:
                    fields["changed"] = changed
        trace.add("frame", connection_id, fields)

    def records_http(self) -> bool:
        return self._trace is not None

    def seen(self, event: Seen) -> None:
        trace = self._trace
        if trace is None:
            return
        if isinstance(event, Pinged):
            trace.add(event.kind, event.connection_id, {"fromClient": event.from_client, "size": len(event.payload),
                                                        "fate": event.fate})  # fmt: skip
        elif isinstance(event, Injected):
            trace.add("inject", event.connection_id, {"fromClient": event.from_client, **_kept(event.frame, trace)})
        elif isinstance(event, HttpRequested):
            info = event.info
            fields: dict[str, Any] = {"method": event.method, "url": info.url, "host": info.host,
                                      "_headers": info.headers, "remote": event.remote}  # fmt: skip
            if event.body is not None:
                fields.update(size=len(event.body), _body=event.body[: trace.data_limit + 1])
            trace.add("http_request", info.id, fields)
        elif isinstance(event, HttpAnswered):
            fields = {"status": event.status, "_headers": event.headers, "size": event.size,
                      "upstream": event.upstream, "outcome": event.outcome}  # fmt: skip
            if event.head:
                fields["_body"] = event.head[: trace.data_limit + 1]
            trace.add("http_response", event.exchange_id, fields)


def _kept(frame: Frame, trace: Trace) -> dict[str, Any]:
    """A frame's fields as kept: the frame itself when small (rendered when read), else rendered now, so
    that no more than the data limit of it stays in memory."""
    if len(frame.data) <= trace.data_limit:
        return {"_frame": frame}
    return {"_kept": frame_fields(frame, trace.data_limit, kept=True)}
