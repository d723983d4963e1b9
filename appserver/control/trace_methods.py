"""The control API's methods of SPEC Part 5: the active suite's trace, read, cleared, exported."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from appserver.control.registry import Registry
from appserver.control.socket import ControlSocket
from appserver.errors import NotTheActiveSuite, UnknownConnection
from appserver.trace.export import har, jsonl
from appserver.trace.record import Trace
from shared.constants import METHOD_CLEAR_TRACE, METHOD_EXPORT_TRACE, METHOD_GET_TRACE
from shared.wire import WireError, require

Method = Callable[..., Awaitable[dict[str, Any]]]
FORMATS = ("jsonl", "har")


def make_trace_methods(registry: Registry) -> dict[str, Method]:
    def trace_of(session: ControlSocket) -> Trace | None:
        scope = registry.scope_of(session)
        if scope.suite.active is not session:
            raise NotTheActiveSuite("only the active test suite has a trace: call startInterception (or "
                                    "openSession) first")  # fmt: skip
        return scope.tracer.current()

    def connection_of(session: ControlSocket, params: dict[str, Any], trace: Trace | None) -> str | None:
        if "connectionID" not in params:
            return None
        connection_id: str = require(params, "connectionID", str)
        known = trace is not None and trace.knows(connection_id)
        connection = registry.connections.get(connection_id)
        if not known and (connection is None or connection.owner is not registry.scope_of(session)):
            raise UnknownConnection(f"no connection or HTTP exchange {connection_id!r} in this suite's trace")
        return connection_id

    async def get_trace(session: ControlSocket, **params: Any) -> dict[str, Any]:
        trace = trace_of(session)
        since = require(params, "since", int) if "since" in params else 0
        limit = require(params, "limit", int) if "limit" in params else None
        connection_id = connection_of(session, params, trace)
        if trace is None:
            return {"events": [], "next": since, "epochUs": 0}
        if since < 0 or since > trace.next_seq:
            raise WireError("since", f"must be a seq from this trace, 0 to {trace.next_seq} (its next)")
        if limit is not None and limit < 1:
            raise WireError("limit", "must be at least 1")
        events, next_seq = trace.events(since, connection_id, limit)
        # the wall clock at t = 0 (µs since the Unix epoch): an event's date is epochUs + t
        return {"events": events, "next": next_seq, "epochUs": round(trace.epoch * 1e6)}

    async def clear_trace(session: ControlSocket, **params: Any) -> dict[str, Any]:
        trace = trace_of(session)
        cleared = 0 if trace is None else len(trace.events()[0])
        if trace is not None:
            trace.clear()
        return {"cleared": cleared}

    async def export_trace(session: ControlSocket, **params: Any) -> dict[str, Any]:
        trace = trace_of(session)
        fmt = require(params, "format", str)
        if fmt not in FORMATS:
            raise WireError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
        connection_id = connection_of(session, params, trace)
        events = [] if trace is None else trace.events(0, connection_id)[0]
        if fmt == "jsonl":
            return {"data": jsonl(events)}
        epoch = trace.epoch if trace is not None else 0.0
        return {"data": jsonl([har(events, epoch)]).rstrip("\n")}

    return {METHOD_GET_TRACE: get_trace, METHOD_CLEAR_TRACE: clear_trace, METHOD_EXPORT_TRACE: export_trace}
