"""Where each session's traffic comes in (SPEC Part 6): a proxy-endpoint port of its own in direct mode, a
mitmproxy listener of its own in proxy mode (in the one mitmdump, added and removed while it runs), its
processes captured in local mode.

Direct-mode ports share one aiohttp runner: a request is the session's whose port it arrived on. Closing
a session stops its port from accepting at once; the connections it accepted go on (released).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import weakref
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from appserver.capture.launcher import LaunchError
from appserver.capture import local
from appserver.capture.processes import alive, free_loopback_port, port_in_use
from appserver.capture.spec import ProxyMode
from appserver.control.registry import Registry
from appserver.control.sessions import Session
from appserver.errors import InterceptionFailed
from appserver.relay.endpoint import EndpointSettings, ProxyEndpoint, proxy_app
from appserver.relay.front import PlainRelay
from appserver.relay.headers import HEAD_LIMITS
from appserver.relay.pool import Pool
from shared.constants import METHOD_SET_LISTENERS
from shared.jsonrpc import PeerGone, RemoteError
from shared.wire import WireError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
PUSH_TIMEOUT = 15.0  # seconds for mitmproxy to add or remove a session's listener
CANARY_TIMEOUT = 15.0  # seconds for a local session's processes to be captured


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
        #: By TCP connection (its transport): where its later requests go.
        self._by_connection: weakref.WeakKeyDictionary[Any, ProxyEndpoint] = weakref.WeakKeyDictionary()
        #: Each direct session's listener (relay/front.py's, in front of the runner's aiohttp server), by session id;
        #: and every listener whose connections may still be open.
        self._sites: dict[str, PlainRelay] = {}
        self._relays: list[PlainRelay] = []
        self._pool: Pool | None = None
        #: Proxy-mode sessions' mitmproxy listener ports, and local-mode sessions' captured pids, by session id
        #: (what the redirector is told).
        self._listening: dict[str, int] = {}
        self._local: dict[str, list[int]] = {}
        #: The pid mitmdump was started to capture for a local session (the launcher needs one): once that
        #: session has ended it must not be captured, though it is in mitmdump's own local mode.
        self._started_for: int | None = None
        self._pushing = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        app.registry.on_mitmproxy_ready.append(self._ready_again)

    async def start(self, http: aiohttp.ClientSession) -> None:
        self._http = http
        self._runner = web.AppRunner(proxy_app(self._handle), access_log=None, shutdown_timeout=1, **HEAD_LIMITS)
        await self._runner.setup()
        settings = self._app.endpoint_settings
        self._pool = Pool(settings.upstream_ssl, settings.connect_timeout)

    async def stop(self) -> None:
        self._by_port.clear()
        self._sites.clear()  # first: a session ending meanwhile finds no site left to stop
        self._listening.clear()
        self._local.clear()
        relays, self._relays = self._relays, []
        for relay in relays:
            relay.stop_listening()
        await asyncio.gather(*(relay.stop(1) for relay in relays))
        if self._pool is not None:
            self._pool.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await asyncio.gather(*(relay.closed() for relay in relays))
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """A request is the session's whose port accepted its TCP connection: the first request of a
        connection looks the port up, the later ones (keep-alive) stay with that session, released or not,
        even once another session has the same port number."""
        endpoint = self._by_connection.get(request.transport)
        if endpoint is None:
            sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
            endpoint = self._by_port.get(sockname[1]) if sockname else None
            if endpoint is None:  # its session ended between accept and now
                return web.Response(status=503, text="this test session has ended\n")
            self._by_connection[request.transport] = endpoint
        return await endpoint.handle(request)

    async def open(self, session: Session) -> None:
        if session.mode == "direct":
            await self._open_direct(session)
        elif session.mode == "proxy":
            await self._open_proxy(session)
        else:
            await self._open_local(session)

    async def close(self, session: Session) -> None:
        site = self._sites.pop(session.id, None)
        if site is not None:
            site.stop_listening()  # no new connections from here on; the accepted ones go on
            self._by_port.pop(session.proxy_port or 0, None)
        if self._listening.pop(session.id, None) is not None or self._local.pop(session.id, None) is not None:
            try:
                await self._push()  # answered once mitmproxy no longer accepts on it
            except InterceptionFailed as exc:
                log.warning("session %s: its mitmproxy listener may still accept: %s", session.id, exc)

    async def _open_proxy(self, session: Session) -> None:
        launcher = self._app.launcher
        if launcher is None:
            raise InterceptionFailed("this app server runs without mitmproxy (--no-mitmproxy): a proxy mode "
                                     "session needs it")  # fmt: skip
        if launcher.running_mode is None:
            try:
                await launcher.ensure(ProxyMode.PROXY)
            except LaunchError as exc:
                raise InterceptionFailed(f"could not start mitmproxy for the session: {exc}") from exc
        port = session.requested_port or free_loopback_port()
        if port_in_use(LOOPBACK, port):
            raise InterceptionFailed(f"cannot open port {port} on {LOOPBACK} for the session: it is in use")
        self._listening[session.id] = port
        try:
            await self._push()
        except InterceptionFailed:
            self._listening.pop(session.id, None)
            raise
        session.mitmproxy_port = port

    async def _push(self) -> None:
        """Tell the redirector which session listeners there are; returns once mitmproxy has them."""
        channel = self._app.registry.mitmproxy_channel
        if channel is None:
            raise InterceptionFailed("mitmproxy is not connected to the app server (not running, or restarting)")
        listeners = [{"sessionID": sid, "port": port} for sid, port in self._listening.items()]
        captured = [{"sessionID": sid, "pids": pids} for sid, pids in self._local.items()]
        still = any(self._started_for in pids for pids in self._local.values())
        exclude = [self._started_for] if self._started_for is not None and not still else []
        params = {"listeners": listeners, "local": captured, "exclude": exclude}
        async with self._pushing:
            try:
                await channel.call(METHOD_SET_LISTENERS, params, PUSH_TIMEOUT)
            except (RemoteError, PeerGone, TimeoutError) as exc:
                raise InterceptionFailed(f"mitmproxy could not set the session listeners: {exc}") from exc

    async def _open_local(self, session: Session) -> None:
        """Its pids join the running local capture (started for it if none runs); proven by a canary
        process captured with them, as the launcher proves local mode."""
        for pid in session.pids:  # the pid first: it is what the suite got wrong, whatever this server runs
            if not alive(pid):
                raise WireError("pid", f"no process with pid {pid}")
        launcher = self._app.launcher
        if launcher is None:
            raise InterceptionFailed(f"this app server runs without mitmproxy (--no-mitmproxy): a local mode "
                                     f"session (pid {', '.join(map(str, session.pids))}) needs it")  # fmt: skip
        for pid in session.pids:
            if not alive(pid):
                raise WireError("pid", f"no process with pid {pid}")
            taken = next((sid for sid, pids in self._local.items() if pid in pids), None)
            if taken is not None:
                raise WireError("pid", f"process {pid} is captured for session {taken} already")
        running = launcher.running_mode
        if running is not None and running[0] is not ProxyMode.LOCAL:
            raise InterceptionFailed(f"mitmdump runs in {running[0].value} mode, started without local capture: "
                                     "open local sessions while none runs or it runs in local mode")  # fmt: skip
        if running is None:
            try:
                await launcher.ensure(ProxyMode.LOCAL, session.pids[0])
                self._started_for = session.pids[0]
            except LaunchError as exc:
                raise InterceptionFailed(f"could not start mitmproxy in local mode for the session: {exc}") from exc
        listener, canary = await local.start_canary()
        try:
            self._local[session.id] = [*session.pids, canary.pid]
            await self._push()
            try:
                await asyncio.wait_for(canary.wait(), CANARY_TIMEOUT)
            except TimeoutError:
                raise InterceptionFailed(f"the session's processes are not captured within {CANARY_TIMEOUT:g}s "
                                         "(the canary was not)") from None  # fmt: skip
        except BaseException:
            self._local.pop(session.id, None)
            with contextlib.suppress(InterceptionFailed):
                await self._push()
            raise
        finally:
            if canary.returncode is None:
                canary.kill()
                await canary.wait()
            listener.close()

    def _ready_again(self) -> None:
        """A (re)started mitmdump: give it the sessions' listeners."""
        if not self._listening and not self._local:
            return
        task = asyncio.ensure_future(self._push_logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push_logged(self) -> None:
        try:
            await self._push()
        except InterceptionFailed as exc:
            log.error("the sessions' mitmproxy listeners are lost: %s", exc)

    async def _open_direct(self, session: Session) -> None:
        assert self._runner is not None and self._http is not None, "the app server is not started"
        settings = dataclasses.replace(self._app.endpoint_settings, default_upstream=session.upstream,
                                       default_http_upstream=session.http_upstream)  # fmt: skip
        scope = session.scope
        endpoint = ProxyEndpoint(settings, self._http, self._app.registry.connections, lambda _: scope.handlers)
        assert self._runner.server is not None and self._pool is not None
        # Read below aiohttp first (relay/front.py); a connection handed to aiohttp after a request stays with
        # this session, as one aiohttp served from the start does.
        relay = PlainRelay(endpoint.plan, self._runner.server, self._pool,
                           lambda transport: self._by_connection.__setitem__(transport, endpoint))  # fmt: skip
        try:
            session.proxy_port = await relay.listen(LOOPBACK, session.requested_port or 0)
        except OSError as exc:
            raise InterceptionFailed(f"cannot open port {session.requested_port} on {LOOPBACK} for the session: "
                                     f"{exc.strerror}") from exc  # fmt: skip
        self._relays = [r for r in self._relays if not r.ended or r.fronts]  # those of ended sessions, once idle
        self._relays.append(relay)
        self._sites[session.id] = relay
        self._by_port[session.proxy_port] = endpoint
