"""Sessions (SPEC Part 6): many suites at once, each with its own port or listener, rules, trace and events.

``openSession`` makes the calling control connection the suite of a new
session; ``closeSession`` (or that connection closing) ends it: its port or
listener stops accepting first, then its connections are released (passed
through unchanged, nobody's) or closed with 1001, and its rules and trace go.
Where a session's traffic comes in is the :class:`Listeners`' business (the
app: a port of its own in direct mode, a mitmproxy listener in proxy mode, the
captured pids in local mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from yarl import URL

from appserver.control.registry import Registry
from appserver.control.scope import Scope
from appserver.control.socket import ControlSocket
from appserver.errors import SessionConflict
from appserver.relay.lifecycle import Side
from shared.constants import METHOD_ATTACH_SESSION, METHOD_CLOSE_SESSION, METHOD_OPEN_SESSION
from shared.wire import WireError, require, window_of

log = logging.getLogger(__name__)

MODES = ("direct", "proxy", "local")
GOING_AWAY = 1001
CLOSE_WAIT = 12.0  # seconds: more than a peer has to answer a close (--close-timeout's default, 10 s)
Method = Callable[..., Awaitable[dict[str, Any]]]


@dataclass
class Session:
    id: str
    mode: str
    scope: Scope
    control: ControlSocket
    upstream: URL | None = None
    pids: tuple[int, ...] = ()
    #: Where its traffic comes in: the proxy-endpoint port (direct), mitmproxy's listener port (proxy).
    proxy_port: int | None = None
    mitmproxy_port: int | None = None
    requested_port: int = 0
    closed: bool = field(default=False)
    #: Where plain HTTP goes, when not to ``upstream`` (a uts-proxy session's restHost).
    http_upstream: URL | None = None
    #: A JSON-RPC control connection that attached to it (attachSession), answering its dialogue meanwhile.
    attached: ControlSocket | None = None

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sessionID": self.id}
        if self.proxy_port is not None:
            out["proxyPort"] = self.proxy_port
        if self.mitmproxy_port is not None:
            out["mitmproxyPort"] = self.mitmproxy_port
        return out


class Listeners(Protocol):
    """Opens and closes where a session's traffic arrives (appserver/app.py)."""

    async def open(self, session: Session) -> None:
        """Set the session's ports, or raise a ProxyError (nothing left half-open)."""
        ...

    async def close(self, session: Session) -> None:
        """Stop accepting for it, at once."""
        ...


def parse_open(params: dict[str, Any], default_upstream: URL | None) -> dict[str, Any]:
    mode = require(params, "mode", str)
    if mode not in MODES:
        raise WireError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    out: dict[str, Any] = {"mode": mode, "pids": (), "upstream": None, "port": 0,
                           "decoded": require(params, "decoded", bool) if "decoded" in params else False,
                           "window": window_of(params)}
    if "pid" in params and "pids" in params:
        raise WireError("pids", "give 'pid' or 'pids', not both")
    if "pid" in params:
        out["pids"] = (require(params, "pid", int),)
    elif "pids" in params:
        pids = require(params, "pids", list)
        if not pids or not all(isinstance(p, int) and not isinstance(p, bool) for p in pids):
            raise WireError("pids", "must be a non-empty list of integers")
        out["pids"] = tuple(pids)
    if mode == "local" and not out["pids"]:
        raise WireError("pid", "local mode needs the pid (or pids) of the processes to capture")
    if mode != "local" and out["pids"]:
        raise WireError("pid", f"only local mode captures processes, not {mode} mode")
    if "upstream" in params:
        text = require(params, "upstream", str)
        url = URL(text)
        if url.scheme not in ("ws", "wss", "http", "https") or not url.host:
            raise WireError("upstream", f"must be a ws://, wss://, http:// or https:// URL, got {text!r}")
        out["upstream"] = url
    if mode == "direct":
        out["upstream"] = out["upstream"] or default_upstream
        if out["upstream"] is None:
            raise WireError("upstream", "direct mode needs an upstream (or the app server's --default-upstream)")
    if "port" in params:
        port = require(params, "port", int)
        if not 0 <= port <= 65535:
            raise WireError("port", f"must be 0 (any) or a port number, got {port}")
        out["port"] = port
    return out


def _free(registry: Registry, control: ControlSocket) -> None:
    if control in registry.session_of:
        raise SessionConflict(f"this control connection holds session {registry.session_of[control].id} "
                              "already: one session per control connection")  # fmt: skip
    if registry.suite.active is control:
        raise SessionConflict("this control connection is the classic suite (startInterception): open "
                              "sessions on another connection")  # fmt: skip


async def begin_session(registry: Registry, listeners: Listeners, control: ControlSocket, parsed: dict[str, Any],
                        http_upstream: URL | None = None, trace_data_limit: int | None = None) -> Session:  # fmt: skip
    """A new session held by ``control`` (parsed as :func:`parse_open` gives it), listening; raises, with
    nothing left open, when it cannot."""
    session_id = f"s{next(registry.session_ids)}"
    scope = registry.new_scope(session_id=session_id, trace_data_limit=trace_data_limit)
    session = Session(session_id, parsed["mode"], scope, control, parsed["upstream"], parsed["pids"],
                      requested_port=parsed["port"], http_upstream=http_upstream)  # fmt: skip
    registry.session_of[control] = session  # at once: a second openSession meanwhile is -32006
    try:
        await listeners.open(session)  # raises, with nothing left open, when it cannot
    except BaseException:
        registry.session_of.pop(control, None)
        raise
    if session.closed:  # the control connection went away while it opened: undo what open did
        await listeners.close(session)
        raise SessionConflict(f"session {session_id} ended while it opened (its control connection closed)")
    scope.suite.claim(control)
    scope.suite.decoded = parsed["decoded"]  # the decoded message in the dialogue (SPEC Part 9)
    scope.suite.set_window(parsed["window"])  # how many messages may be with the suite at once (SPEC Part 10)
    registry.sessions[session_id] = session
    log.info("session %s opened (%s mode%s) for control connection %d", session_id, session.mode,
             _where(session), control.id)  # fmt: skip
    return session


def make_session_methods(registry: Registry, listeners: Callable[[], Listeners],
                         default_upstream: URL | None) -> dict[str, Method]:  # fmt: skip
    async def open_session(control: ControlSocket, **params: Any) -> dict[str, Any]:
        _free(registry, control)
        parsed = parse_open(params, default_upstream)
        return (await begin_session(registry, listeners(), control, parsed)).result()

    async def close_session(control: ControlSocket, **params: Any) -> dict[str, Any]:
        session = registry.session_of.get(control)
        if session is None:
            raise SessionConflict("this control connection holds no session: nothing to close")
        close = require(params, "closeConnections", bool) if "closeConnections" in params else False
        await end_session(registry, listeners(), session, close)
        return {}

    async def attach_session(control: ControlSocket, **params: Any) -> dict[str, Any]:
        _free(registry, control)
        session_id = require(params, "sessionID", str)
        decoded = require(params, "decoded", bool) if "decoded" in params else False
        window = window_of(params)
        session = registry.sessions.get(session_id)
        if session is None:
            raise WireError("sessionID", f"no session {session_id!r}")
        if session.control.answers:
            raise SessionConflict(f"session {session_id} is held by control connection {session.control.id}: only a "
                                  "session opened through uts-proxy's API can be attached to")  # fmt: skip
        if session.attached is not None:
            raise SessionConflict(f"control connection {session.attached.id} is attached to session {session_id} "
                                  "already")  # fmt: skip
        session.attached = control
        registry.session_of[control] = session
        session.scope.suite.hand_over(control)
        session.scope.suite.decoded = decoded
        session.scope.suite.set_window(window)
        log.info("control connection %d attached to session %s", control.id, session_id)
        return session.result()

    return {METHOD_OPEN_SESSION: open_session, METHOD_CLOSE_SESSION: close_session,
            METHOD_ATTACH_SESSION: attach_session}  # fmt: skip


def detach(registry: Registry, session: Session) -> None:
    """The attached control connection went: the session goes on, answered by its own holder again."""
    attached, session.attached = session.attached, None
    if attached is not None:
        registry.session_of.pop(attached, None)
        session.scope.suite.hand_over(session.control)
        session.scope.suite.decoded = False
        session.scope.suite.set_window(1)
        log.info("control connection %d detached from session %s", attached.id, session.id)


async def end_session(registry: Registry, listeners: Listeners, session: Session, close: bool = False,
                      close_wait: float = 0.0) -> None:  # fmt: skip
    """Stop accepting, then close with 1001 (``close``; and wait up to ``close_wait`` seconds for them to end,
    as a uts-proxy DELETE does) or release its connections; its rules and trace go."""
    if session.closed:
        return
    session.closed = True
    await listeners.close(session)
    registry.sessions.pop(session.id, None)
    registry.session_of.pop(session.control, None)
    if session.attached is not None:
        registry.session_of.pop(session.attached, None)
    mine = [c for c in registry.connections.values() if c.owner is session.scope]
    if close:  # before the release: the trace (read by a uts DELETE) and the rules still see the closes
        await asyncio.gather(*(c.close((Side.CLIENT, Side.SERVER), GOING_AWAY, "the test session ended", False)
                               for c in mine), return_exceptions=True)  # fmt: skip
        if close_wait > 0:  # each peer answers its close, or is dropped at close_timeout
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(close_wait):
                    while any(c.id in registry.connections for c in mine):
                        await asyncio.sleep(0.02)
    session.scope.suite.hand_over(session.control)
    session.scope.suite.release(session.control)
    log.info("session %s closed: %d connection(s) %s", session.id, len(mine),
             "closed with 1001" if close else "released to pass through unchanged")  # fmt: skip


def _where(session: Session) -> str:
    if session.proxy_port is not None:
        return f", proxy endpoint port {session.proxy_port} → {session.upstream}"
    if session.mitmproxy_port is not None:
        return f", mitmproxy listener port {session.mitmproxy_port}"
    return f", pids {', '.join(map(str, session.pids))}"

