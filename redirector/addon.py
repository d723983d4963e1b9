"""mitmproxy addon: send every HTTP(S) request and WebSocket upgrade to the app server's proxy endpoint.

Needs ``--set connection_strategy=lazy`` (never dial the original host before the rewrite) and
``--set websocket=false`` (the app server owns the framing, so close codes and drops pass through).
Bodies stream both ways (``flow.request.stream``/``flow.response.stream``): mitmproxy would otherwise
hold a whole response (a Comet stream, Server-Sent Events) before passing it on.
"""

import asyncio
import logging
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from redirector.ready import notify_ready
from redirector.sessions import ListenerStamps
from redirector.routing import (READY_ON, check_options, intended_host, is_websocket_upgrade, parse_host_port,
                              parse_ws_url, same_endpoint)
from shared.constants import (DEFAULT_CANARY_HOST, DEFAULT_CONTROL_PORT, DEFAULT_HOST, DEFAULT_PROXY_PORT,
                              HEADER_TEST_HOST, HEADER_TEST_PROTO, HEADER_TEST_SESSION, METHOD_SET_LISTENERS,
                              TEST_HEADER_PREFIX)

logger = logging.getLogger(__name__)


class Redirector:
    def __init__(self) -> None:
        self.proxy_endpoint = (DEFAULT_HOST, DEFAULT_PROXY_PORT)
        self.control_endpoint: tuple[str, int] | None = None
        self.announced = False
        self.listeners = ListenerStamps()
        self._tasks: set[asyncio.Task[None]] = set()

    def load(self, loader: Loader) -> None:
        loader.add_option("appserver_proxy", str, f"{DEFAULT_HOST}:{DEFAULT_PROXY_PORT}",
                          "host:port of the app server's proxy endpoint.")
        loader.add_option("appserver_control", str, f"ws://{DEFAULT_HOST}:{DEFAULT_CONTROL_PORT}/",
                          "ws:// URL of the app server's control API; empty: do not notify.")
        loader.add_option("ready_on", str, "running", "When to send mitmproxyReady.", choices=READY_ON)
        loader.add_option("canary_host", str, DEFAULT_CANARY_HOST,
                          "Plain-HTTP requests to this host get 204 here (local-capture probe).")

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        try:
            self.proxy_endpoint = parse_host_port(opts.appserver_proxy)
            self.control_endpoint = parse_ws_url(opts.appserver_control) if opts.appserver_control else None
            check_options(opts.ready_on, opts.canary_host)
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from exc  # type: ignore[no-untyped-call]

    def running(self) -> None:
        if ctx.options.ready_on == "running":
            self._announce()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        tls = flow.client_conn.tls_established
        if not tls and flow.request.pretty_host == ctx.options.canary_host:
            flow.response = http.Response.make(204)  # answered here, never forwarded
            if ctx.options.ready_on == "canary":
                self._announce()
        elif not self._is_appserver(flow):
            self._redirect(flow, tls, upgrade=is_websocket_upgrade(flow.request.headers))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and HEADER_TEST_HOST in flow.request.headers:
            flow.response.stream = True  # chunk by chunk, as the app server sends it

    def _is_appserver(self, flow: http.HTTPFlow) -> bool:
        target = (flow.request.host, flow.request.port)
        return any(same_endpoint(target, ep) for ep in (self.proxy_endpoint, self.control_endpoint) if ep)

    def _redirect(self, flow: http.HTTPFlow, tls: bool, upgrade: bool) -> None:
        host = intended_host(flow.request.pretty_host, flow.request.port, tls)
        for name in [n for n in flow.request.headers if n.lower().startswith(TEST_HEADER_PREFIX)]:
            del flow.request.headers[name]
        flow.request.scheme = "http"
        flow.request.host, flow.request.port = self.proxy_endpoint
        flow.request.headers[HEADER_TEST_HOST] = host
        flow.request.headers[HEADER_TEST_PROTO] = ("wss" if tls else "ws") if upgrade else ("https" if tls else "http")
        session = self.listeners.session_of(flow)
        if session is not None:
            flow.request.headers[HEADER_TEST_SESSION] = session
        flow.request.stream = True
        logger.info("redirected %s for %s to the app server", "WebSocket upgrade" if upgrade else "HTTP request", host)

    def _announce(self) -> None:
        """Send mitmproxyReady once per process, in a task: hooks must not block the proxy."""
        if self.announced or not ctx.options.appserver_control:
            return
        self.announced = True
        task = asyncio.get_running_loop().create_task(notify_ready(ctx.options.appserver_control, self._call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """The app server's calls on our control connection."""
        if method == METHOD_SET_LISTENERS:
            return await self.listeners.update(params)
        raise ValueError(f"unknown method {method!r}")


addons = [Redirector()]
