"""The proxy endpoint: where redirected upgrades (and direct mode's plain HTTP) arrive.

An upgrade's way, once: its target from the headers (headers.py), the
upstream dialled first (upstream.py), the client's handshake completed only
once the upstream has accepted (a refusal is passed back as the same HTTP
status, 502 when the upstream could not be reached: a client is never
accepted and then closed), then a :class:`Connection` relays until both legs
are closed. Plain HTTP goes to http.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from ssl import SSLContext
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from appserver.relay import upstream as upstreams
from appserver.relay.connection import Connection
from appserver.events import Failed, Sink, publish
from appserver.relay.front import Head, Plan
from appserver.relay.headers import (BadTarget, RequestHead, is_websocket_upgrade, opened_info, outbound, route_for,
                                     routed, routed_url, target_of)
from appserver.relay.http import DEFAULT_MAX_BODY, HttpSettings, client_gone, relay_http, without_server_defaults
from appserver.relay.frames import watch_client, watch_of
from appserver.relay.leg import Leg
from appserver.relay.lifecycle import Side
from appserver.relay.pump import corked
from appserver.relay.table import Connections
from appserver.relay.served import serve_alone
from appserver.verdict import ADMIT, Chain, ConnectGate, ConnectionHooks, Effect, HttpGate, Refuse
from shared.connections import ConnectionOpened

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handlers:
    """Who a connection or an HTTP exchange answers to: its decider chain, sinks and gates, and its owner (the
    suite's scope: the classic suite, or a session; SPEC Part 6), which the control methods check."""

    chain: Chain
    sinks: Sequence[Sink]
    gate: ConnectGate | None = None
    hooks: ConnectionHooks | None = None
    http_gate: HttpGate | None = None
    owner: object | None = None


@dataclass(frozen=True)
class EndpointSettings:
    default_upstream: URL | None
    upstream_ssl: SSLContext | bool  # False: not verified
    connect_timeout: float
    close_timeout: float
    max_queued_messages: int
    routes: tuple[tuple[str, URL], ...] = ()  # --route
    max_http_body: int = DEFAULT_MAX_BODY  # --max-http-body
    control_url: str = ""  # the control API's URL, named when a suite dials this endpoint by mistake
    #: Where direct mode's plain HTTP goes when not to default_upstream (a uts-proxy session's restHost).
    default_http_upstream: URL | None = None


def proxy_app(handle: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    """An application serving a proxy endpoint (the main one, or a session's listener): every path to
    ``handle``, and relayed responses without the headers aiohttp would add to them."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_response_prepare.append(without_server_defaults)
    return app


class ProxyEndpoint:
    """``handlers_for`` says, per request, whom it answers to (by its Ably-Test-Session stamp, or this
    endpoint's own session)."""

    def __init__(
        self, settings: EndpointSettings, session: aiohttp.ClientSession, connections: Connections,
        handlers_for: Callable[[RequestHead], Handlers],
    ) -> None:  # fmt: skip
        self._settings = settings
        self._session = session
        self._connections = connections
        self._handlers_for = handlers_for
        self._http = HttpSettings(settings.default_http_upstream or settings.default_upstream, settings.upstream_ssl,
                                  settings.routes, settings.max_http_body)  # fmt: skip

    def plan(self, head: Head) -> Plan | None:
        """What a plain request relay/front.py parsed does there; None when it is aiohttp's (a rule may change
        it, or it says nowhere to go: :meth:`handle` answers it)."""
        h = self._handlers_for(head)
        if h.http_gate is not None and not h.http_gate.quiet:
            return None
        sinks = tuple(sink for sink in h.sinks if sink.frames and sink.records_http())
        settings = self._http
        try:
            meant, target, forwarded, info = outbound(head, settings.default_upstream, settings.routes,
                                                      described=bool(sinks))  # fmt: skip
        except BadTarget:
            return None
        if target.scheme not in ("http", "https") or not target.host:
            return None
        return Plan(head, meant, target, forwarded, info, sinks)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        h = self._handlers_for(request)
        s = self._settings
        if "Upgrade" not in request.headers or not is_websocket_upgrade(request.headers):
            return await relay_http(request, self._session, self._http, h.http_gate,
                                    tuple(sink for sink in h.sinks if sink.frames))  # fmt: skip
        try:
            target = target_of(request, s.default_upstream)
        except BadTarget as exc:
            log.warning("refused an upgrade for %s: %s", request.raw_path, exc)
            control = f" at {s.control_url}" if s.control_url else ""
            return web.Response(status=400, text=(
                f"{exc}\nThis is the interception proxy's proxy endpoint: it takes the WebSocket upgrades "
                "mitmproxy redirects (stamped Ably-Test-Host/Ably-Test-Proto), or, in direct mode, an SDK's own. "
                f"A test suite speaks JSON-RPC to the control API{control}, not here.\n"))  # fmt: skip
        info = opened_info(request, target)
        verdict = ADMIT if h.gate is None else await h.gate.admit(info)
        if isinstance(verdict, Refuse):
            log.info("connection %s refused by a rule: %d (%s)", info.id, verdict.status, info.url)
            await publish(h.sinks, Failed(info, request.remote, "refused", verdict.status, verdict.body))
            return web.Response(status=verdict.status, headers=CIMultiDict(verdict.headers), text=verdict.body)
        if verdict.delay_ms:
            with contextlib.suppress(TimeoutError):  # a client that gives up ends the wait at once
                await asyncio.wait_for(client_gone(request), verdict.delay_ms / 1000)
            if request.transport is None or request.transport.is_closing():
                log.info("connection %s: the client gave up during the handshake's delay", info.id)
                await publish(h.sinks, Failed(info, request.remote, "abandoned", 499, "the client gave up"))
                return web.Response(status=499)  # nobody reads it; the upstream is never dialled
        if verdict.serve is not None:
            return await serve_alone(request, info, verdict.serve, h.sinks, self._settings.close_timeout)
        if verdict.route is not None:
            target = routed(target, verdict.route.host, verdict.route.proto)
            log.info("connection %s routed by a rule to %s", info.id, target.url)
        elif (route := route_for(target.host, s.routes)) is not None:
            url = routed_url(target.url, route)
            target = routed(target, url.raw_authority, url.scheme)
        try:
            upstream = await upstreams.dial(self._session, request, target, s.upstream_ssl, s.connect_timeout)
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status if 300 <= exc.status < 600 else 502
            log.info("upstream %s refused the handshake: %s %s", target.url, exc.status, exc.message)
            await publish(h.sinks, Failed(info, request.remote, "upstream-refused", status, str(exc.message),
                                          str(target.url)))  # fmt: skip
            return web.Response(status=status, text=f"upstream refused the WebSocket handshake: {exc.message}\n")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("upstream %s could not be reached: %r", target.url, exc)
            await publish(h.sinks, Failed(info, request.remote, "unreachable", 502, repr(exc), str(target.url)))
            return web.Response(status=502, text=f"upstream {target.url} could not be reached: {exc!r}\n")
        if info.upstream != str(target.url):
            info = replace(info, upstream=str(target.url))
        return await self._relay(request, info, upstream, verdict.effects, str(target.url), h)

    async def _relay(
        self, request: web.Request, info: ConnectionOpened, upstream: aiohttp.ClientWebSocketResponse,
        effects: tuple[Effect, ...], upstream_url: str, h: Handlers,
    ) -> web.StreamResponse:  # fmt: skip
        ws = upstreams.answer_like(upstream)
        # before the 101, at a frame boundary (no transport: the client is gone, and prepare() says so)
        client_watch = None if request.transport is None else watch_client(request.transport, request.protocol)
        try:
            await ws.prepare(request)
        except ConnectionError:  # the client went while the upstream was answering: its business, no error
            upstreams.abandon(upstream)
            log.info("connection %s: the client gave up during the handshake (%s)", info.id, info.url)
            await publish(h.sinks, Failed(info, request.remote, "abandoned", 499, "the client gave up",
                                          upstream_url))  # fmt: skip
            return web.Response(status=499)  # nobody reads it
        except Exception:
            upstreams.abandon(upstream)
            raise
        assert request.transport is not None
        timeout = self._settings.close_timeout
        client = Leg(Side.CLIENT, ws, corked(ws, request.transport), timeout)
        server = Leg(Side.SERVER, upstream, corked(upstream, upstreams.transport_of(upstream)), timeout)
        client.watch, server.watch = client_watch, watch_of(upstream)
        connection = Connection(
            info,
            client,
            server,
            h.chain,
            h.sinks,
            self._settings.max_queued_messages,
            request.remote,
            h.hooks,
            effects,
            upstream_url,
            h.owner,
        )
        with self._connections.track(connection), upstreams.released(upstream):
            await connection.run()
        return ws
