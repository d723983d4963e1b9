"""uts-proxy's REST control API (SPEC Part 8) over our sessions, rules and trace.

Every uts-proxy session is a Part 6 direct-mode session underneath: a loopback port of its own relaying to
``target`` (``--route`` applies), its rules our rules (rules.py translates), its log read off its trace
(log.py). Its holder is a stand-in that answers no dialogue, so traffic no rule decides passes through
unchanged, as uts-proxy's does; ``attachSession`` on a JSON-RPC control connection lets a suite answer for
it meanwhile. A session ends on ``DELETE`` (its connections closed with 1001, its port freed, before the
answer) or after ``timeoutMs`` without a call on it or any traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from yarl import URL

from appserver.control.registry import Registry
from appserver.control.sessions import CLOSE_WAIT, Listeners, Session, begin_session, end_session
from appserver.errors import InterceptionFailed, LegClosed
from appserver.relay.connection import Connection
from appserver.relay.lifecycle import Side, check_sendable
from appserver.rules.compile import add_rules
from appserver.rules.schema import RuleError
from appserver.uts import rules as uts
from appserver.uts.log import LogReader
from shared.jsonrpc import JSON, PeerGone
from shared.wire import WireError, message_frame

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 30_000
#: Bytes of each frame a uts session's trace keeps: enough to log whole Ably messages, decoded.
DATA_LIMIT = 64 * 1024
MAX_BODY = 1024 * 1024  # bytes of a request body
NO_CONNECTION = "no active WebSocket connection"
IMPERATIVE = ("disconnect", "close", "inject_to_client", "inject_to_client_and_close")


class Holder:
    """Holds a uts-proxy session in place of a control connection: it answers no dialogue and hears no
    notification (uts-proxy has neither)."""

    answers = False
    encoding = JSON
    cork = None  # it writes nothing

    def __init__(self, number: int) -> None:
        self.id = -number  # never a control connection's number

    def notify_soon(self, method: str, params: dict[str, Any]) -> None:
        pass

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        pass

    async def call(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        raise PeerGone("a uts-proxy session answers no dialogue")


@dataclass
class UtsSession:
    session: Session
    target: uts.Target
    timeout_s: float
    #: Our rule id → its label in the log (the comment, else rule-N).
    labels: dict[str, str] = field(default_factory=dict)
    #: Rules that can never match (an unknown match type or action name), still counted in ruleCount.
    inert: int = 0
    added: int = 0
    last_call: float = field(default_factory=time.monotonic)
    watcher: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.session.id

    def rule_count(self) -> int:
        return len(self.session.scope.rules.ruleset.rules) + self.inert

    def last_activity(self) -> float:
        trace = self.session.scope.tracer.current()
        last = trace.last_us if trace is not None else None
        return max(self.last_call, last / 1e6 if last is not None else 0.0)

    def read_log(self) -> list[dict[str, Any]]:
        trace = self.session.scope.tracer.current()
        if trace is None:
            return []
        events, _ = trace.events()
        return LogReader(trace.epoch, self.labels).events(events)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class UtsApi:
    def __init__(self, registry: Registry, listeners: Callable[[], Listeners]) -> None:
        self._registry = registry
        self._listeners = listeners
        self._numbers = itertools.count(1)
        self.sessions: dict[str, UtsSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[_errors])
        app.router.add_get("/health", self._health)
        app.router.add_post("/sessions", self._create)
        app.router.add_get("/sessions/{id}", self._get)
        app.router.add_post("/sessions/{id}/rules", self._add_rules)
        app.router.add_post("/sessions/{id}/actions", self._action)
        app.router.add_get("/sessions/{id}/log", self._log)
        app.router.add_delete("/sessions/{id}", self._delete)
        return app

    async def stop(self) -> None:
        """End every uts session (the app server is stopping)."""
        for session in list(self.sessions.values()):
            await self._end(session)
        for task in list(self._tasks):
            task.cancel()

    # -- the routes --------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _create(self, request: web.Request) -> web.Response:
        body: uts.CreateSession = uts.parse(await _json(request), uts.CreateSession)
        if not 0 <= body.port <= 65535:
            raise ApiError(400, "port must be non-negative (0 for auto-assign) and at most 65535")
        target = body.target
        if not target.realtimeHost and not target.restHost:
            raise ApiError(400, "target must have at least one of realtimeHost or restHost")
        translated = _translate(body.rules or [], 0)
        realtime = _upstream("ws" if target.insecure else "wss", target.realtimeHost or target.restHost, "realtimeHost")
        rest = _upstream("http" if target.insecure else "https", target.restHost or target.realtimeHost, "restHost")
        holder = Holder(next(self._numbers))
        parsed = {"mode": "direct", "pids": (), "upstream": realtime, "port": body.port, "decoded": False,
                  "window": 1}
        try:
            session = await begin_session(self._registry, self._listeners(), holder, parsed,  # type: ignore[arg-type]
                                          http_upstream=rest, trace_data_limit=DATA_LIMIT)  # fmt: skip
        except (InterceptionFailed, WireError) as exc:
            raise ApiError(409, str(exc)) from exc
        timeout_ms = body.timeoutMs if body.timeoutMs > 0 else DEFAULT_TIMEOUT_MS
        entry = UtsSession(session, target, timeout_ms / 1000)
        try:
            self._add(entry, translated, prepend=False)
        except ApiError:
            await end_session(self._registry, self._listeners(), session, close=True)
            raise
        self.sessions[entry.id] = entry
        entry.watcher = asyncio.ensure_future(self._watch(entry))
        log.info("uts-proxy session %s on port %d → %s (timeout %d ms, %d rules)", entry.id, session.proxy_port,
                 realtime, timeout_ms, len(translated))  # fmt: skip
        return web.json_response({"sessionId": entry.id,
                                  "proxy": {"host": f"localhost:{session.proxy_port}", "port": session.proxy_port}},
                                 status=201)  # fmt: skip

    async def _get(self, request: web.Request) -> web.Response:
        entry = self._session(request)
        target = {k: v for k, v in (("realtimeHost", entry.target.realtimeHost), ("restHost", entry.target.restHost),
                                    ("insecure", entry.target.insecure)) if v}  # fmt: skip
        return web.json_response({"sessionId": entry.id, "port": entry.session.proxy_port, "target": target,
                                  "ruleCount": entry.rule_count()})  # fmt: skip

    async def _add_rules(self, request: web.Request) -> web.Response:
        entry = self._session(request)
        body: uts.AddRules = uts.parse(await _json(request), uts.AddRules)
        prepend = body.position.lower() == "prepend"
        if not prepend and body.position.lower() != "append":
            raise ApiError(400, f"position must be 'append' or 'prepend', got {body.position!r}")
        start = 0 if prepend else entry.rule_count()
        self._add(entry, _translate(body.rules, start), prepend)
        return web.json_response({"ruleCount": entry.rule_count()})

    async def _action(self, request: web.Request) -> web.Response:
        entry = self._session(request)
        raw = await _json(request)
        action: uts.ImperativeAction = uts.parse(raw, uts.ImperativeAction)
        trace = entry.session.scope.tracer.current()
        if trace is not None:
            trace.add("uts_action", None, {"message": raw})
        if action.type not in IMPERATIVE:
            raise ApiError(400, f"unknown action type: {action.type} (valid: {', '.join(IMPERATIVE)})")
        connection = self._active(entry)
        if connection is None:
            raise ApiError(409, NO_CONNECTION)
        code = action.closeCode if action.closeCode > 0 else uts.NORMAL_CLOSURE
        try:
            check_sendable(code, "")
        except ValueError as exc:
            raise ApiError(400, f"closeCode: {exc}") from None
        if action.type == "disconnect":
            self._soon(connection.close((Side.CLIENT, Side.SERVER), None, "", True))
        elif action.type == "close":
            self._soon(connection.close((Side.CLIENT, Side.SERVER), code, "", False))
        else:
            if action.message is None:
                raise ApiError(400, f"message: is required for {action.type}")
            try:
                frame = message_frame(action.message, connection.info.format, "message")
                await connection.inject(frame, False)  # answered once it is written
            except WireError as exc:
                raise ApiError(400, str(exc)) from exc
            except LegClosed as exc:
                raise ApiError(409, str(exc)) from exc
            if action.type == "inject_to_client_and_close":
                self._soon(connection.close((Side.CLIENT, Side.SERVER), code, "", False))
        return web.json_response({"ok": True})

    async def _log(self, request: web.Request) -> web.Response:
        return web.json_response({"events": self._session(request).read_log()})

    async def _delete(self, request: web.Request) -> web.Response:
        entry = self._session(request)
        return web.json_response({"events": await self._end(entry)})

    # -- the parts -----------------------------------------------------------------------------

    def _session(self, request: web.Request) -> UtsSession:
        entry = self.sessions.get(request.match_info["id"])
        if entry is None:
            raise ApiError(404, "session not found")
        entry.last_call = time.monotonic()
        return entry

    def _add(self, entry: UtsSession, translated: list[uts.Translated], prepend: bool) -> None:
        """All or nothing, like addRules."""
        ruleset = entry.session.scope.rules.ruleset
        live = [t for t in translated if t.rule is not None]
        try:
            ids = add_rules(ruleset, {"rules": [t.rule for t in live], "position": "prepend" if prepend else "append"})
        except RuleError as exc:
            raise ApiError(400, f"invalid rules: {exc}") from exc
        for rule_id, t in zip(ids, live):
            ruleset.get(rule_id).goes_when_spent = t.goes_when_spent
            entry.labels[rule_id] = t.label
        entry.inert += len(translated) - len(live)

    def _active(self, entry: UtsSession) -> Connection | None:
        """The session's newest connection that is still open (uts-proxy acts on that one)."""
        scope = entry.session.scope
        mine = [c for c in self._registry.connections.values() if c.owner is scope]
        return mine[-1] if mine else None

    def _soon(self, closing: Awaitable[None]) -> None:
        """Carried out after the answer (uts-proxy answers a close before it is done)."""

        async def run() -> None:
            await asyncio.sleep(0)
            with contextlib.suppress(ConnectionError, LegClosed):
                await closing

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end(self, entry: UtsSession) -> list[dict[str, Any]]:
        self.sessions.pop(entry.id, None)
        if entry.watcher is not None and entry.watcher is not asyncio.current_task():
            entry.watcher.cancel()
        trace = entry.session.scope.tracer.current()
        await end_session(self._registry, self._listeners(), entry.session, close=True, close_wait=CLOSE_WAIT)
        if trace is None:
            return []
        events, _ = trace.events()
        log.info("uts-proxy session %s deleted", entry.id)
        return LogReader(trace.epoch, entry.labels).events(events)

    async def _watch(self, entry: UtsSession) -> None:
        """Ends the session timeout_s after the last call on it or the last of its traffic."""
        while entry.id in self.sessions:
            idle = time.monotonic() - entry.last_activity()
            if idle >= entry.timeout_s:
                log.info("uts-proxy session %s timed out after %.0f ms without a call or traffic", entry.id,
                         entry.timeout_s * 1000)  # fmt: skip
                await self._end(entry)
                return
            await asyncio.sleep(min(entry.timeout_s - idle + 0.01, 1.0))


def _translate(given: list[uts.UtsRule], start: int) -> list[uts.Translated]:
    out = []
    for index, rule in enumerate(given):
        try:
            out.append(uts.translate(rule, start + index))
        except uts.UtsError as exc:
            raise ApiError(400, f"invalid rules: rules[{index}].{exc}") from exc
    return out


def _upstream(scheme: str, host: str, name: str) -> URL:
    try:
        url = URL(f"{scheme}://{host}")
        if not url.host or any(c.isspace() for c in host) or url.path not in ("", "/") or url.query_string:
            raise ValueError("not a host[:port]")
        _ = url.port
    except ValueError as exc:
        raise ApiError(400, f"target.{name}: {host!r} is not a host[:port] ({exc})") from None
    return url


async def _json(request: web.Request) -> Any:
    try:
        text = await request.text()
    except UnicodeDecodeError:
        raise ApiError(400, "invalid JSON: the body is not UTF-8") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as uts-proxy writes them: ``{"error": "..."}`` with the status."""
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    except uts.UtsError as exc:
        return web.json_response({"error": f"invalid request: {exc}"}, status=400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason if exc.text is None else exc.text.strip()}, status=exc.status)
