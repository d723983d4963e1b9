"""The control API's methods: plain async functions of (session, **params) returning the result.

They raise ProxyError (with its JSON-RPC code) or WireError (-32602 naming the
field); rpc.py maps both and is the only module that knows jsonrpcserver.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Protocol

from appserver.capture.launcher import LaunchError
from appserver.capture.spec import CaptureSpec, ProxyMode
from appserver.control.registry import Registry
from appserver.control.rule_methods import make_rule_methods
from appserver.control.trace_methods import make_trace_methods
from appserver.control.socket import ControlSocket
from appserver.errors import InterceptionFailed, SessionConflict
from appserver.relay.lifecycle import Side
from shared.constants import (
    METHOD_CLOSE_CONNECTION,
    METHOD_INJECT,
    METHOD_MITMPROXY_READY,
    METHOD_START_INTERCEPTION,
)
from shared.wire import InjectRequest, WireError, require, window_of

log = logging.getLogger(__name__)


class Launcher(Protocol):
    """Starts mitmproxy with the redirector (capture/launcher.py); the seam startInterception uses."""

    async def ensure(self, mode: ProxyMode, pid: int | None = None, uid: int | None = None) -> None: ...
    def would_restart(self, mode: ProxyMode, pid: int | None = None, uid: int | None = None) -> bool: ...
    @property
    def running_mode(self) -> tuple[ProxyMode, int | None] | None: ...
    def notify_ready(self) -> None: ...
    async def stop(self) -> None: ...


Method = Callable[..., Awaitable[dict[str, Any]]]
SIDES = {"client": (Side.CLIENT,), "server": (Side.SERVER,), "both": (Side.CLIENT, Side.SERVER)}


def make_methods(registry: Registry, launcher_of: Callable[[], Launcher | None]) -> dict[str, Method]:
    """The methods by name, bound to this app server's registry and (once it listens) launcher."""

    async def start_interception(session: ControlSocket, **params: Any) -> dict[str, Any]:
        launcher = launcher_of()
        spec = CaptureSpec.from_params(params, can_launch=launcher is not None)
        decoded = require(params, "decoded", bool) if "decoded" in params else False
        window = window_of(params)
        if session in registry.session_of:
            raise SessionConflict(f"this control connection holds session {registry.session_of[session].id}: "
                                  "startInterception is for a connection without one (the classic suite)")
        if spec is not None and launcher is not None and launcher.running_mode is not None \
                and launcher.would_restart(spec.mode, spec.pid, spec.uid) \
                and any(s.mode in ("proxy", "local") for s in registry.sessions.values()):  # fmt: skip
            raise InterceptionFailed(f"{spec.mode.value} mode would restart mitmdump, which proxy or local "
                                     "sessions are using (their connections would be cut): close them first")  # fmt: skip
        was_active = registry.suite.active is session
        registry.suite.claim(session)
        registry.suite.decoded = decoded
        registry.suite.set_window(window)
        if launcher is not None and spec is not None:
            try:
                await launcher.ensure(spec.mode, spec.pid)
            except LaunchError as exc:
                if not was_active:
                    registry.suite.release(session)
                raise InterceptionFailed(f"could not start mitmproxy in {spec.mode.value} mode: {exc}") from exc
        return {}

    async def inject_message(session: ControlSocket, **params: Any) -> dict[str, Any]:
        request = InjectRequest.from_json(params)
        connection = registry.connection_of(registry.scope_of(session), request.connection_id)
        await connection.inject(request.frame_in(connection.info.format), request.from_client)
        return {"id": registry.next_message_id()}

    async def close_connection(session: ControlSocket, **params: Any) -> dict[str, Any]:
        connection = registry.connection_of(registry.scope_of(session), require(params, "connectionID", str))
        side = params.get("side", "both")
        if side not in SIDES:
            raise WireError("side", "must be 'client', 'server' or 'both'")
        code = require(params, "code", int) if params.get("code") is not None else None
        reason = require(params, "reason", str) if params.get("reason") is not None else ""
        abrupt = require(params, "abrupt", bool) if params.get("abrupt") is not None else False
        try:
            await connection.close(SIDES[side], code, reason, abrupt)
        except ValueError as exc:
            raise WireError("code" if code is not None else "reason", f"is not sendable: {exc}") from exc
        return {}

    async def mitmproxy_ready(session: ControlSocket, **params: Any) -> dict[str, Any]:
        log.info("mitmproxy reports it is ready")
        registry.mitmproxy_channel = session  # the redirector stays connected: sessions' listeners are set on it
        for hook in registry.on_mitmproxy_ready:
            hook()
        launcher = launcher_of()
        if launcher is not None:
            launcher.notify_ready()
        return {}

    return {
        **make_rule_methods(registry),
        **make_trace_methods(registry),
        METHOD_START_INTERCEPTION: start_interception,
        METHOD_INJECT: inject_message,
        METHOD_CLOSE_CONNECTION: close_connection,
        METHOD_MITMPROXY_READY: mitmproxy_ready,
    }
