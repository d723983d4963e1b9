"""The trace (SPEC Part 5): per active suite, a bounded, ordered record of what the proxy saw and did.

:class:`Tracer` is a sink on the connection events (relay/events.py) and the
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

import base64
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from appserver.relay.events import (Closed, Decided, Event, HttpAnswered, HttpRequested, Injected, Opened,
                                    Pinged)
from appserver.verdict import Decision, Delay, Drop, Pass, Replace, Verdict, split
from shared import ably
from shared.wire import Frame, MessageType

DEFAULT_LIMIT = 20_000  # --trace-limit: events
DEFAULT_DATA_LIMIT = 1024  # --trace-data-limit: bytes of one frame's (or body's) data

#: kind, connection id, fields (what the reader sees, bar the frame's decoding)
_Entry = tuple[int, int, str, str | None, dict[str, Any]]


def now_us() -> int:
    return time.monotonic_ns() // 1000


class Trace:
    """One suite's events, oldest first, bounded."""

    def __init__(self, limit: int = DEFAULT_LIMIT, data_limit: int = DEFAULT_DATA_LIMIT) -> None:
        if limit < 1 or data_limit < 0:
            raise ValueError("a trace needs a limit of at least one event and a data limit of at least 0 bytes")
        self.limit = limit
        self.data_limit = data_limit
        self._entries: deque[_Entry] = deque(maxlen=limit)
        self.next_seq = 1
        self.dropped = 0
        #: Wall-clock time at t = 0 of the monotonic clock, for exports that need dates (HAR).
        self.epoch = time.time() - time.monotonic()
        self.connections: set[str] = set()

    def add(self, kind: str, connection_id: str | None, fields: dict[str, Any]) -> None:
        if len(self._entries) == self.limit:
            self.dropped += 1
        self._entries.append((self.next_seq, now_us(), kind, connection_id, fields))
        self.next_seq += 1
        if connection_id is not None:
            self.connections.add(connection_id)

    def clear(self) -> None:
        self._entries.clear()
        self.dropped = 0
        self.connections.clear()

    @property
    def first_seq(self) -> int:
        return self._entries[0][0] if self._entries else self.next_seq

    def events(self, since: int = 0, connection_id: str | None = None, limit: int | None = None
               ) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
        """The events from seq ``since`` on (of one connection, if given; at most ``limit``), and the seq to
        ask for next. When some from ``since`` on were dropped for the limit, a ``dropped`` event with their
        count comes first."""
        out: list[dict[str, Any]] = []
        first, start = self.first_seq, max(since, 1)
        if start < first and self.dropped:
            t = self._entries[0][1] if self._entries else now_us()
            out.append({"seq": first - 1, "t": t, "kind": "dropped", "count": min(first - start, self.dropped)})
        next_seq = self.next_seq
        for entry in itertools.islice(self._entries, max(0, start - first), None):
            if limit is not None and len(out) >= limit:
                next_seq = entry[0]
                break
            if connection_id is None or entry[3] == connection_id:
                out.append(self._render(entry))
        return out, max(next_seq, start) if start <= self.next_seq else start

    def _render(self, entry: _Entry) -> dict[str, Any]:
        seq, t, kind, connection_id, fields = entry
        event: dict[str, Any] = {"seq": seq, "t": t, "kind": kind}
        if connection_id is not None:
            event["connectionID"] = connection_id
        for key, value in fields.items():
            if key == "_frame":
                event.update(_frame_fields(value, self.data_limit))
            elif key == "_shown":
                event.update(value)
            elif key == "_body":  # an HTTP body: as text when it is UTF-8 (JSON, text), else Base64
                event.update(_body_fields(_text_or_bytes(value[: self.data_limit]), self.data_limit, len(value)))
            else:
                event[key] = value
        return event


def _frame_fields(frame: Frame, data_limit: int) -> dict[str, Any]:
    """A frame as the trace shows it: its type, size, Ably action and channel, its data up to the limit."""
    data = frame.data
    binary = frame.type is MessageType.BINARY
    raw = data if isinstance(data, bytes) else data.encode("utf-8")
    fields: dict[str, Any] = {"type": frame.type.value, "size": len(raw)}
    try:
        message = ably.decode(data, ably.Format.for_frame(binary))
    except ably.DecodeError:
        message = None
    if message is not None:
        action = message.get("action")
        if isinstance(action, int):
            fields["action"] = ably.action_name(action)
        if isinstance(message.get("channel"), str):
            fields["channel"] = message["channel"]
    fields.update(_body_fields(raw if binary else data, data_limit))
    return fields


def _body_fields(data: str | bytes, data_limit: int, size: int | None = None) -> dict[str, Any]:
    """``data`` (text) or ``dataBase64``, cut to the limit (``truncated`` then says so); ``size``: of the
    whole, when ``data`` was cut already."""
    if isinstance(data, str):
        cut = data.encode("utf-8")[:data_limit].decode("utf-8", "ignore") if len(data) * 4 > data_limit else data
        fields: dict[str, Any] = {"data": cut}
        whole = len(cut) == len(data)
    else:
        fields = {"dataBase64": base64.b64encode(data[:data_limit]).decode("ascii")}
        whole = len(data) <= data_limit
    if not whole or size is not None and size > data_limit:
        fields["truncated"] = True
    return fields


def _text_or_bytes(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def fate_name(verdict: Verdict) -> tuple[str, list[str]]:
    """What became of a frame ("pass", "drop", "replace", "delay 20 ms"), and its side effects' names."""
    fate, effects = split(verdict)
    if isinstance(fate, Pass):
        name = "pass"
    elif isinstance(fate, Drop):
        name = "drop"
    elif isinstance(fate, Replace):
        name = "replace"
    elif isinstance(fate, Delay):
        name = f"delay {fate.ms} ms"
    else:
        name = type(fate).__name__.lower()
    return name, [type(effect).__name__.lower() for effect in effects]


class Tracer:
    """The sink that records the active suite's trace (one per suite: a new suite starts a new trace)."""

    def __init__(self, owner: Callable[[], object | None], limit: int = DEFAULT_LIMIT,
                 data_limit: int = DEFAULT_DATA_LIMIT, enabled: bool = True) -> None:  # fmt: skip
        self._owner = owner
        self.limit = limit
        self.data_limit = data_limit
        #: Whether the per-frame events come here (False: --no-trace, nothing is recorded).
        self.frames = enabled
        self._trace: Trace | None = None
        self._traced_for: object | None = None

    def current(self) -> Trace | None:
        """The active suite's trace (made on first use), or None when there is no active suite."""
        owner = self._owner()
        if owner is None or not self.frames:
            return None
        if owner is not self._traced_for or self._trace is None:
            self._trace = Trace(self.limit, self.data_limit)
            self._traced_for = owner
        return self._trace

    def forget(self) -> None:
        """The suite went away: so does its trace."""
        self._trace = None
        self._traced_for = None

    def decision(self, connection_id: str | None, **fields: Any) -> None:
        """A decision the rules or the suite made (a connect, an HTTP request, the suite's answer …)."""
        trace = self.current()
        if trace is not None:
            trace.add("decision", connection_id, fields)

    async def publish(self, event: Event) -> None:
        trace = self.current()
        if trace is None:
            return
        if isinstance(event, Decided):
            fate, effects = ("pass", []) if isinstance(event.verdict, Pass) else fate_name(event.verdict)
            fields: dict[str, Any] = {"fromClient": event.from_client, **_kept(event.frame, trace),
                                      "decision": fate}  # fmt: skip
            if event.by is not None:
                fields["by" if event.by == "suite" else "ruleId"] = event.by
            if effects:
                fields["effects"] = effects
            if isinstance(event.verdict, (Replace, Decision)):
                fate_frame = split(event.verdict)[0]
                if isinstance(fate_frame, Replace):
                    fields["replacedBy"] = _frame_fields(fate_frame.frame, trace.data_limit)
            trace.add("frame", event.connection_id, fields)
        elif isinstance(event, Pinged):
            trace.add(event.kind, event.connection_id, {"fromClient": event.from_client, "size": len(event.payload),
                                                        "fate": event.fate})  # fmt: skip
        elif isinstance(event, Injected):
            trace.add("inject", event.connection_id, {"fromClient": event.from_client, **_kept(event.frame, trace)})
        elif isinstance(event, Opened):
            info = event.info
            trace.add("open", info.id, {"url": info.url, "host": info.host, "proto": info.proto, "path": info.path,
                                        "query": info.query, "headers": info.headers, "upstream": event.upstream,
                                        "remote": event.remote})  # fmt: skip
        elif isinstance(event, Closed):
            c = event.closed
            trace.add("close", c.id, {"closedBy": c.closed_by.value, "code": c.code, "reason": c.reason,
                                      "clean": c.clean})  # fmt: skip
        elif isinstance(event, HttpRequested):
            info = event.info
            fields = {"method": event.method, "url": info.url, "host": info.host, "headers": info.headers,
                      "remote": event.remote}  # fmt: skip
            if event.body is not None:
                fields.update(size=len(event.body), _body=event.body[: trace.data_limit + 1])
            trace.add("http_request", info.id, fields)
        elif isinstance(event, HttpAnswered):
            fields = {"status": event.status, "headers": dict(event.headers), "size": event.size,
                      "upstream": event.upstream, "outcome": event.outcome}  # fmt: skip
            if event.head:
                fields["_body"] = event.head[: trace.data_limit + 1]
            trace.add("http_response", event.exchange_id, fields)


def _kept(frame: Frame, trace: Trace) -> dict[str, Any]:
    """A frame's fields as kept: the frame itself when small (rendered when read), else rendered now, so
    that no more than the data limit of it stays in memory."""
    if len(frame.data) <= trace.data_limit:
        return {"_frame": frame}
    return {"_shown": _frame_fields(frame, trace.data_limit)}
