"""The proxy endpoint: where redirected WebSocket upgrades arrive.

The upstream handshake comes first; the client's handshake is completed only
once the upstream has accepted, and a refusal is passed back as the same
HTTP status (502 when the upstream could not be reached), so a client is
never accepted and then closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from appserver.config import Config
from appserver.connection import Connection
from appserver.http_relay import end_to_end, relay_http
from appserver.lifecycle import Side
from appserver.registry import Registry
from appserver.relay import Leg
from shared.constants import (
    EVENT_CONNECTION_CLOSED,
    EVENT_CONNECTION_OPENED,
    HEADER_TEST_HOST,
    HEADER_TEST_PROTO,
    TEST_HEADER_PREFIX,
)
from shared import headers as shared_headers
from shared.wire import ConnectionOpened

log = logging.getLogger(__name__)

# Each WebSocket hop makes these itself (RFC 6455 §4.1, §9.1).
PER_HOP_WEBSOCKET = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-accept", "sec-websocket-extensions",
     "sec-websocket-protocol"}
)  # fmt: skip


class _NoOverlapWarning(logging.Filter):
    """aiohttp warns when the protocol we answer with is not on the client's first
    Sec-WebSocket-Protocol line; we then set the header ourselves, so the warning is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("%s: Client protocols")


logging.getLogger("aiohttp.websocket").addFilter(_NoOverlapWarning())


class BadTarget(ValueError):
    """The upgrade does not say where it should go."""


@dataclass(frozen=True)
class Target:
    url: URL
    host: str
    proto: str


def is_websocket_upgrade(headers: CIMultiDictProxy[str]) -> bool:
    return shared_headers.is_websocket_upgrade(headers.get("Upgrade", ""), headers.getall("Connection", []))


def target_of(request: web.BaseRequest, default_upstream: URL | None) -> Target:
    """The upstream URL: from the Ably-Test-* headers, else the default upstream (direct mode)."""
    host = request.headers.get(HEADER_TEST_HOST)
    proto = request.headers.get(HEADER_TEST_PROTO)
    if host is None and proto is None:
        if default_upstream is None:
            raise BadTarget(
                f"missing {HEADER_TEST_HOST} and {HEADER_TEST_PROTO} headers "
                "(and no --default-upstream is configured for direct mode)"
            )
        proto = "wss" if default_upstream.scheme in ("wss", "https") else "ws"
        host = default_upstream.raw_authority
    if not host or not host.strip():
        raise BadTarget(f"missing or empty {HEADER_TEST_HOST} header")
    if proto not in ("ws", "wss"):
        raise BadTarget(f"{HEADER_TEST_PROTO} header must be 'ws' or 'wss', got {proto!r}")
    try:
        url = URL(f"{proto}://{host.strip()}{request.raw_path}", encoded=True)
        valid = bool(url.host) and url.port is not None and " " not in host.strip()
    except ValueError as exc:
        raise BadTarget(f"bad {HEADER_TEST_HOST} header {host!r}: {exc}") from exc
    if not valid:
        raise BadTarget(f"bad {HEADER_TEST_HOST} header {host!r}: not a host[:port]")
    return Target(url, host.strip(), proto)


def forwarded_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """End-to-end request headers: minus hop-by-hop, per-hop WebSocket and Ably-Test-* ones."""
    return CIMultiDict(
        (name, value)
        for name, value in end_to_end(headers).items()
        if name.lower() not in PER_HOP_WEBSOCKET and not name.lower().startswith(TEST_HEADER_PREFIX)
    )


def offered_protocols(headers: CIMultiDictProxy[str]) -> tuple[str, ...]:
    values = headers.getall("Sec-WebSocket-Protocol", [])
    return tuple(p.strip() for v in values for p in v.split(",") if p.strip())


def offers_deflate(headers: CIMultiDictProxy[str]) -> bool:
    return "permessage-deflate" in headers.get("Sec-WebSocket-Extensions", "").lower()


class ProxyEndpoint:
    def __init__(self, registry: Registry, session: aiohttp.ClientSession, config: Config) -> None:
        self._registry = registry
        self._session = session
        self._config = config
        self._ssl = config.upstream_ssl()
        self._default_upstream = config.default_upstream

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not is_websocket_upgrade(request.headers):
            if self._default_upstream is not None:
                return await relay_http(request, self._session, self._default_upstream, self._ssl)
            return web.Response(
                status=400,
                text="the proxy endpoint takes WebSocket upgrades only "
                "(start the app server with --default-upstream URL to relay plain HTTP)\n",
            )
        try:
            target = target_of(request, self._default_upstream)
        except BadTarget as exc:
            log.warning("refused an upgrade for %s: %s", request.raw_path, exc)
            return web.Response(status=400, text=f"{exc}\n")
        try:
            upstream = await self._connect_upstream(request, target)
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status if 300 <= exc.status < 600 else 502
            log.info("upstream %s refused the handshake: %s %s", target.url, exc.status, exc.message)
            return web.Response(status=status, text=f"upstream refused the WebSocket handshake: {exc.message}\n")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("upstream %s could not be reached: %r", target.url, exc)
            return web.Response(status=502, text=f"upstream {target.url} could not be reached: {exc!r}\n")
        return await self._relay(request, target, upstream)

    async def _connect_upstream(self, request: web.Request, target: Target) -> aiohttp.ClientWebSocketResponse:
        async with asyncio.timeout(self._config.connect_timeout):
            return await self._session.ws_connect(
                target.url,
                headers=forwarded_headers(request.headers),
                protocols=offered_protocols(request.headers),
                compress=15 if offers_deflate(request.headers) else 0,
                autoclose=False,
                autoping=False,
                max_msg_size=0,
                ssl=self._ssl,
            )

    async def _relay(
        self, request: web.Request, target: Target, upstream: aiohttp.ClientWebSocketResponse
    ) -> web.StreamResponse:
        # Answer the client exactly what the upstream agreed to: its subprotocol and deflate or not.
        upstream_headers = upstream._response.headers  # noqa: SLF001
        chosen = upstream_headers.get("Sec-WebSocket-Protocol")
        ws = web.WebSocketResponse(
            protocols=(chosen,) if chosen else (),
            compress=bool(upstream.compress),
            autoclose=False,
            autoping=False,
            max_msg_size=0,
        )
        # The upstream's own handshake headers (cookies, server-specific ones) reach the client too.
        ws.headers.extend(forwarded_headers(upstream_headers))
        if chosen:
            # aiohttp looks for the protocol in the client's first Sec-WebSocket-Protocol line only;
            # a client may offer it on a later line (RFC 6455 §11.3.4), and must then still get it.
            ws.headers["Sec-WebSocket-Protocol"] = chosen
        try:
            await ws.prepare(request)
        except Exception:  # the client went away mid-handshake: so does the upstream
            _transport_of(upstream).abort()
            upstream._response.close()  # noqa: SLF001
            raise
        assert request.transport is not None
        info = _info(request, target)
        connection = Connection(
            info,
            Leg(Side.CLIENT, ws, request.transport, self._config.close_timeout),
            Leg(Side.SERVER, upstream, _transport_of(upstream), self._config.close_timeout),
            self._registry.interception.transform,
            self._config.max_queued_messages,
        )
        with self._registry.track(connection), _released(upstream):
            log.info("connection %s opened: %s (from %s)", connection.id, target.url, request.remote)
            await self._registry.interception.notify(EVENT_CONNECTION_OPENED, info.to_json())
            await connection.run()
            closed = connection.closed_event()
            log.info(
                "connection %s closed by %s: code=%s reason=%r clean=%s (%s)",
                connection.id, closed.closed_by, closed.code, closed.reason, closed.clean, target.url,
            )  # fmt: skip
            await self._registry.interception.notify(EVENT_CONNECTION_CLOSED, closed.to_json())
        return ws


@contextlib.contextmanager
def _released(ws: aiohttp.ClientWebSocketResponse) -> Iterator[None]:
    """Give the upstream connection back to aiohttp's connector once the relay is over.

    We close its transport ourselves (never through aiohttp's close(), which cannot send
    a close frame without a code), so the connector must be told the connection is done.
    """
    try:
        yield
    finally:
        ws._response.close()  # noqa: SLF001


def _transport_of(ws: aiohttp.ClientWebSocketResponse) -> asyncio.Transport:
    # aiohttp exposes no public handle on a client WebSocket's transport, and we
    # need one to drop it abruptly and to close it without aiohttp's close().
    transport: Any = ws._writer.transport  # noqa: SLF001
    return transport  # type: ignore[no-any-return]


def _info(request: web.Request, target: Target) -> ConnectionOpened:
    return ConnectionOpened(
        url=str(target.url),
        host=target.host,
        proto=target.proto,
        path=target.url.raw_path,
        query=dict(target.url.query),
        headers={k: v for k, v in request.headers.items() if not k.lower().startswith(TEST_HEADER_PREFIX)},
    )
