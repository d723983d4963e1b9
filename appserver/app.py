"""The app server: the control API and the proxy endpoint, started and stopped as one.

This is where the packages meet: relay/ is given its decider chain (the
rules first, the active suite last), its sinks (the log, the suite's
notifications, the rules' record of handshakes) and its connect gate;
control/ its registry and the launcher; capture/ the app server's bound
ports. Nothing listens at construction: :meth:`AppServer.start` binds,
:meth:`AppServer.stop` shuts down in numbered steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from typing import Any

import aiohttp
from aiohttp import web

from appserver.capture.launcher import LauncherSettings, MitmproxyLauncher
from appserver.capture.processes import owned_by_group, wait_released
from appserver.config import Config
from appserver.control.methods import Launcher, make_methods
from appserver.control.registry import Registry
from appserver.control.rpc import make_dispatch
from appserver.control.socket import ControlEndpoint, ControlSocket
from appserver.control.suite import ActiveSuite
from appserver.control.listeners import SessionListeners
from appserver.control.scope import nobodys
from appserver.relay.frames import watch_upgrades
from appserver.control.sessions import detach, end_session, make_session_methods
from appserver.relay.endpoint import EndpointSettings, Handlers, ProxyEndpoint, proxy_app
from appserver.relay.front import PlainRelay
from appserver.relay.headers import HEAD_LIMITS, RequestHead
from appserver.relay.pool import Pool
from appserver.relay.lifecycle import Side
from appserver.relay.table import Connections
from appserver.uts.api import UtsApi
from shared.constants import HEADER_TEST_SESSION

log = logging.getLogger(__name__)

GOING_AWAY = 1001
SERVICE_RESTART = 1012  # RFC 6455 §7.4.1 via the IANA registry: the service is restarting
RELEASE_WAIT = 2.0  # seconds for mitmdump to pass on the ends of what ran through it
IPV4_LOOPBACK, IPV6_LOOPBACK = "127.0.0.1", "::1"


def ipv6_loopback_available() -> bool:
    """Whether this host has an IPv6 loopback to listen on (containers may have none)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind((IPV6_LOOPBACK, 0))
    except OSError:
        return False
    return True


def launcher_for(config: Config, control_port: int, proxy_port: int) -> MitmproxyLauncher:
    """The mitmdump launcher startInterception uses, pointed at this app server's bound ports."""
    extra = ("--set", f"confdir={config.mitmproxy_confdir}") if config.mitmproxy_confdir else ()
    return MitmproxyLauncher(
        LauncherSettings(
            listen_host=config.mitmproxy_host,
            listen_port=config.mitmproxy_port,
            appserver_proxy=_address(config.proxy_host, proxy_port),
            appserver_control=f"ws://{_address(config.control_host, control_port)}/",
            ready_timeout=config.mitmproxy_ready_timeout,
            extra_args=extra,
        )
    )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AppServer:
    def __init__(self, config: Config, launcher: Launcher | None = None) -> None:
        """``launcher``: by default one is made at start if config.launch_mitmproxy."""
        self.config = config
        self.launcher = launcher
        # A message id is str(next(count)) made by C code (map's __next__): no Python frame per message.
        next_message_id = map(str, itertools.count(1)).__next__
        self.registry = Registry(
            ActiveSuite(config.transform_timeout, next_message_id, idle_warning=config.idle_warning),
            Connections(),
            next_message_id, config.trace, config.trace_limit, config.trace_data_limit,
        )  # fmt: skip
        methods = make_methods(self.registry, lambda: self.launcher)
        methods.update(make_session_methods(self.registry, lambda: self.listeners, config.default_upstream))
        self._dispatch = make_dispatch(methods)
        self._runners: list[web.AppRunner] = []
        #: The proxy endpoint's listener, and its plain-HTTP relay below aiohttp (relay/front.py).
        self._plain: PlainRelay | None = None
        self.listeners: SessionListeners = SessionListeners(self)
        self._session: aiohttp.ClientSession | None = None
        self.control_port = 0
        self.proxy_port = 0
        #: uts-proxy's REST API (SPEC Part 8), with --uts-port.
        self.uts: UtsApi | None = None
        self.uts_port = 0

    async def start(self) -> None:
        config = self.config
        for warning in config.non_loopback_binds():
            log.warning("binding the %s to a non-loopback address: anyone who can reach it can use it", warning)
        # No cap on concurrent upstream connections: the SDKs under test decide how many.
        connector = aiohttp.TCPConnector(limit=0)
        watch_upgrades(connector)  # an upstream WebSocket's frames read below aiohttp (relay/frames.py)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Forward the client's headers, not aiohttp's defaults (it would add a Content-Type to a body sent
            # without one, and to a POST with no body).
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, connect=config.connect_timeout),
            # No cookies of its own: one upstream's Set-Cookie must not ride on another client's request.
            cookie_jar=aiohttp.DummyCookieJar(),
            **HEAD_LIMITS,
        )
        control = web.Application()
        control.router.add_get("/", ControlEndpoint(
            self._dispatch, config.origin_allowed, config.allowed_origins,
            config.max_control_message_size, self._control_opened, self._control_closed).handle)  # fmt: skip
        self.control_port = await self._serve(control, config.control_host, config.control_port)
        self.endpoint_settings = EndpointSettings(
            config.default_upstream, config.upstream_ssl(), config.connect_timeout, config.close_timeout,
            config.max_queued_messages, config.routes, config.max_http_body,
            f"ws://{_address(config.control_host, self.control_port)}/")  # fmt: skip
        endpoint = ProxyEndpoint(self.endpoint_settings, self._session, self.registry.connections, self._handlers_for)
        proxy = proxy_app(endpoint.handle)
        self.proxy_port = await self._serve(proxy, config.proxy_host, config.proxy_port, plain=endpoint)
        await self.listeners.start(self._session)
        if config.uts_port is not None:
            self.uts = UtsApi(self.registry, lambda: self.listeners)
            self.uts_port = await self._serve(self.uts.app(), config.control_host, config.uts_port)
            log.info("uts-proxy's API on http://%s/", _address(config.control_host, self.uts_port))
        if self.launcher is None and config.launch_mitmproxy:
            self.launcher = launcher_for(config, self.control_port, self.proxy_port)
        if isinstance(self.launcher, MitmproxyLauncher):
            self.launcher.before_stop = self.release_through
        log.info(
            "control API on ws://%s:%d/, proxy endpoint on http://%s:%d/%s",
            config.control_host, self.control_port, config.proxy_host, self.proxy_port,
            " (each on [::1] too)" if config.ipv6_loopback and ipv6_loopback_available() else "",
        )  # fmt: skip

    async def _serve(self, app: web.Application, host: str, port: int, plain: ProxyEndpoint | None = None) -> int:
        """Listen with ``app``; with ``plain`` (the proxy endpoint), connections are read by relay/front.py
        first, which relays plain HTTP itself and hands the rest to ``app``."""
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.config.close_timeout + 1, **HEAD_LIMITS)
        await runner.setup()
        self._runners.append(runner)
        if plain is not None:
            assert runner.server is not None
            pool = Pool(self.config.upstream_ssl(), self.config.connect_timeout)
            self._plain = PlainRelay(plain.plan, runner.server, pool)
            listen = self._plain.listen
        else:

            async def listen(host: str, port: int) -> int:
                await web.TCPSite(runner, host, port).start()
                return int(runner.addresses[-1][1])

        port = await listen(host, port)
        if host == IPV4_LOOPBACK and self.config.ipv6_loopback and ipv6_loopback_available():
            try:
                await listen(IPV6_LOOPBACK, port)
            except OSError as exc:
                log.warning("listening on %s:%d only: [::1]:%d is not free (%s)", host, port, port, exc.strerror)
        return port

    def _control_opened(self, socket: ControlSocket) -> None:
        self.registry.controls.add(socket)

    async def _control_closed(self, socket: ControlSocket) -> None:
        """A control connection is gone: what it held goes with it."""
        self.registry.controls.discard(socket)
        if self.registry.mitmproxy_channel is socket:
            self.registry.mitmproxy_channel = None
        held = self.registry.session_of.get(socket)
        if held is not None and held.attached is socket:  # attached to a uts-proxy session: that goes on
            detach(self.registry, held)
        elif held is not None:  # its test session ends with it
            await end_session(self.registry, self.listeners, held)
        self.registry.suite.release(socket)

    def _handlers_for(self, request: RequestHead) -> Handlers:
        """The shared proxy endpoint: a request stamped with a session is that session's (nobody's once it has
        ended), any other the classic suite's."""
        stamp = request.headers.get(HEADER_TEST_SESSION)
        if stamp is None:
            return self.registry.classic.handlers
        session = self.registry.sessions.get(stamp)
        return session.scope.handlers if session is not None else nobodys(self.registry.log)

    async def release_through(self, pgid: int) -> None:
        """Before a mitmdump (process group ``pgid``) is stopped, end from our side everything that
        runs through it, while it can still pass the ends on: in local mode its captured peers
        would otherwise see nothing when it goes (their TCP ends inside mitmdump). Proxied
        connections are dropped abruptly, as a network path going away; control connections are
        closed with 1012 saying why."""
        connections, ends = owned_by_group(
            pgid, [(c, c.legs[Side.CLIENT].transport) for c in self.registry.connections.values()])
        sessions, session_ends = owned_by_group(
            pgid, [(s, s.transport) for s in self.registry.controls if s.transport is not None])
        if not connections and not sessions:
            return
        log.info("mitmproxy is stopping: ending the %d connection(s) and %d control connection(s) through it",
                 len(connections), len(sessions))  # fmt: skip
        await asyncio.gather(
            *(c.close((Side.CLIENT, Side.SERVER), None, "", abrupt=True) for c in connections),
            *(s.close(SERVICE_RESTART, "interception is restarting: mitmproxy is stopping") for s in sessions),
            return_exceptions=True,
        )
        await wait_released(ends | session_ends, RELEASE_WAIT)

    async def stop(self) -> None:
        """1. close proxied connections and control connections with 1001 (first: in local mode
        mitmdump must still be there to pass the closes on); 2. stop mitmproxy; 3. stop listening
        and wait for handlers; 4. close the upstream client session."""
        if self.uts is not None:
            await self.uts.stop()
        closing: list[Any] = [
            c.close((Side.CLIENT, Side.SERVER), GOING_AWAY, "app server shutting down", abrupt=False)
            for c in list(self.registry.connections.values())
        ]
        closing += [s.shutdown() for s in list(self.registry.controls)]
        await asyncio.gather(*closing, return_exceptions=True)
        # Each leg's peer has close_timeout to answer before it is dropped: wait for the handshakes.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.close_timeout + 1):
                while self.registry.connections:
                    await asyncio.sleep(0.02)
        if self.launcher is not None:
            await self.launcher.stop()
        await self.listeners.stop()
        plain, self._plain = self._plain, None
        if plain is not None:
            await plain.stop(self.config.close_timeout + 1)
            plain.pool.close()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if plain is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.close_timeout + 1):
                    await plain.closed()
        if self._session is not None:
            await self._session.close()
            self._session = None
