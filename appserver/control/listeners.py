"""Where each session's traffic comes in (SPEC Part 6): a proxy-endpoint port of its own in direct mode, a
mitmproxy listener of its own in proxy mode (in the one mitmdump, added and removed while it runs), its
processes captured in local mode.

Direct-mode ports share one aiohttp runner: a request is the session's whose port it arrived on. Closing
a session stops its port from accepting at once; the connections it accepted go on (released).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from appserver.control.registry import Registry
from appserver.control.sessions import Session
from appserver.errors import InterceptionFailed
from appserver.relay.endpoint import EndpointSettings, ProxyEndpoint

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class AppParts(Protocol):
    """What the listeners need of the app server (appserver/app.py)."""

    registry: Registry
    endpoint_settings: EndpointSettings
    launcher: Any


class SessionListeners:
    def __init__(self, app: AppParts) -> None:
        self._app = app
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._by_port: dict[int, ProxyEndpoint] = {}
        self._sites: dict[str, web.TCPSite] = {}

    async def start(self, http: aiohttp.ClientSession) -> None:
        self._http = http
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._by_port.clear()
        self._sites.clear()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
        endpoint = self._by_port.get(sockname[1]) if sockname else None
        if endpoint is None:  # its session ended between accept and now
            return web.Response(status=503, text="this test session has ended\n")
        return await endpoint.handle(request)

    async def open(self, session: Session) -> None:
        if session.mode == "direct":
            await self._open_direct(session)
        else:
            raise InterceptionFailed(f"{session.mode} mode sessions are not available on this app server")

    async def close(self, session: Session) -> None:
        site = self._sites.pop(session.id, None)
        if site is not None:
            await site.stop()  # no new connections from here on; the accepted ones go on
            self._by_port.pop(session.proxy_port or 0, None)

    async def _open_direct(self, session: Session) -> None:
        assert self._runner is not None and self._http is not None, "the app server is not started"
        settings = dataclasses.replace(self._app.endpoint_settings, default_upstream=session.upstream)
        scope = session.scope
        endpoint = ProxyEndpoint(settings, self._http, self._app.registry.connections, lambda _: scope.handlers)
        site = web.TCPSite(self._runner, LOOPBACK, session.requested_port)
        try:
            await site.start()
        except OSError as exc:
            raise InterceptionFailed(f"cannot open port {session.requested_port} on {LOOPBACK} for the session: "
                                     f"{exc.strerror}") from exc  # fmt: skip
        session.proxy_port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        self._sites[session.id] = site
        self._by_port[session.proxy_port] = endpoint
