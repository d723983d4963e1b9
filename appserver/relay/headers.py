"""Pure header rules of the proxy endpoint: where an upgrade goes, and which headers travel.

No I/O: request headers in, decisions out. Hop-by-hop headers (RFC 9110 §7.6.1)
and the per-hop WebSocket handshake headers (RFC 6455 §4.1, §9.1) stay on their
hop; Ably-Test-* headers are the redirector's to us and go no further.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from shared import headers as shared_headers
from shared.constants import HEADER_TEST_HOST, HEADER_TEST_PROTO, TEST_HEADER_PREFIX
from shared.connections import ConnectionOpened

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
     "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip
#: How much of a request's head the proxy endpoint reads, and of a response's the relay: wider than aiohttp's
#: defaults (8190 bytes a line or header, 128 headers), so that the proxy is never the narrower link (Node
#: takes 16 KiB of headers, servers more; long tokens and cookies are what test suites send).
#: The keywords aiohttp's server (AppRunner) and client (ClientSession) both take.
HEAD_LIMITS: dict[str, Any] = {"max_line_size": 64 * 1024, "max_field_size": 64 * 1024, "max_headers": 1024}
# Each WebSocket hop makes these itself (RFC 6455 §4.1, §9.1).
PER_HOP_WEBSOCKET = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-accept", "sec-websocket-extensions",
     "sec-websocket-protocol"}
)  # fmt: skip


class RequestHead(Protocol):
    """What the header rules read of a request: aiohttp's, or the head relay/front.py parsed."""

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def raw_path(self) -> str: ...

    @property
    def host(self) -> str: ...


class BadTarget(ValueError):
    """The upgrade does not say where it should go."""


@dataclass(frozen=True)
class Target:
    url: URL
    host: str
    proto: str


def is_websocket_upgrade(headers: CIMultiDictProxy[str]) -> bool:
    return shared_headers.is_websocket_upgrade(headers.get("Upgrade", ""), headers.getall("Connection", []))


def stamped(request: RequestHead, protos: tuple[str, ...], where: str) -> tuple[URL, str] | None:
    """The URL the redirector's Ably-Test-Host/Proto stamps name (a proto of ``protos``), None when there are
    none; BadTarget when they are wrong. The one parser of a target, for an upgrade and a plain request alike: the URL and the host as stamped."""
    host = request.headers.get(HEADER_TEST_HOST)
    proto = request.headers.get(HEADER_TEST_PROTO)
    if host is None and proto is None:
        return None
    if not host or not host.strip():
        raise BadTarget(f"bad {HEADER_TEST_HOST} header {host!r}: missing or empty")
    if proto not in protos:
        raise BadTarget(f"{HEADER_TEST_PROTO} header must be {' or '.join(map(repr, protos))} {where}, got {proto!r}")
    host = host.strip()
    try:
        url = URL(f"{proto}://{host}{request.raw_path}", encoded=True)
        valid = bool(url.host) and url.port is not None and " " not in host
    except ValueError as exc:
        raise BadTarget(f"bad {HEADER_TEST_HOST} header {host!r}: {exc}") from exc
    if not valid:
        raise BadTarget(f"bad {HEADER_TEST_HOST} header {host!r}: not a host[:port]")
    return url, host


def target_of(request: web.BaseRequest, default_upstream: URL | None) -> Target:
    """An upgrade's upstream: from the Ably-Test-* headers, else the default upstream (direct mode)."""
    found = stamped(request, ("ws", "wss"), "on an upgrade")
    if found is not None:
        return Target(found[0], found[1], found[0].scheme)
    if default_upstream is None:
        raise BadTarget(f"missing {HEADER_TEST_HOST} and {HEADER_TEST_PROTO} headers "
                        "(and no --default-upstream is configured for direct mode)")  # fmt: skip
    proto = "wss" if default_upstream.scheme in ("wss", "https") else "ws"
    return Target(URL(f"{proto}://{default_upstream.raw_authority}{request.raw_path}", encoded=True),
                  default_upstream.raw_authority, proto)  # fmt: skip


def route_for(host: str, routes: tuple[tuple[str, URL], ...]) -> URL | None:
    """The --route upstream for a host the client meant ("name" or "name:port"), if a glob matches either."""
    name = host.rsplit(":", 1)[0].strip("[]").lower() if not host.endswith("]") else host.strip("[]").lower()
    for pattern, upstream in routes:
        if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(host.lower(), pattern):
            return upstream
    return None


def routed_url(url: URL, upstream: URL) -> URL:
    """The same path and query on the routed upstream, in the scheme of the request's kind (ws or http)."""
    secure = upstream.scheme in ("https", "wss")
    scheme = ("wss" if secure else "ws") if url.scheme in ("ws", "wss") else ("https" if secure else "http")
    return URL(f"{scheme}://{upstream.raw_authority}{url.raw_path_qs}", encoded=True)


def routed(target: Target, host: str, proto: str) -> Target:
    """The same path and query on another upstream (a rule's route)."""
    url = URL(f"{proto}://{host}{target.url.raw_path_qs}", encoded=True)
    return Target(url, host, proto)


def end_to_end(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """The headers minus hop-by-hop ones, including those the Connection header names."""
    return _without(headers, _hop_by_hop(headers), ())


def request_forwarded(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """A plain request's end-to-end headers minus the Ably-Test-* stamps (the redirector's word to us)."""
    return _without(headers, _hop_by_hop(headers), (TEST_HEADER_PREFIX,))


def _hop_by_hop(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """The hop-by-hop names of these headers: the standard ones and those their Connection header names."""
    connection = headers.getall("Connection", ())
    return HOP_BY_HOP.union(shared_headers.connection_tokens(connection)) if connection else HOP_BY_HOP


def _without(headers: CIMultiDictProxy[str] | CIMultiDict[str], names: frozenset[str] | set[str],
             prefixes: tuple[str, ...]) -> CIMultiDict[str]:  # fmt: skip
    """The headers but those named (lower case) or whose names start with one of ``prefixes``: one pass."""
    kept = []
    for name, value in headers.items():
        lower = name.lower()
        if lower not in names and not (prefixes and lower.startswith(prefixes)):
            kept.append((name, value))
    return CIMultiDict(kept)


def outbound(request: RequestHead, default_upstream: URL | None, routes: tuple[tuple[str, URL], ...],
             described: bool) -> tuple[URL, URL, CIMultiDict[str], ConnectionOpened | None]:  # fmt: skip
    """A plain request's header work, all of it before it is forwarded: the URL it meant (from
    Ably-Test-Host/Proto, http or https, else the default upstream), the URL it goes to (a --route's, else the
    same), the headers that travel, and (when ``described``) the request as rules, the suite and the trace see
    it. BadTarget when it says nowhere to go."""
    found = stamped(request, ("http", "https"), "on a plain request")
    if found is not None:
        meant = found[0]
    elif default_upstream is None:
        raise BadTarget("the proxy endpoint takes WebSocket upgrades, and plain HTTP only when it is stamped with "
                        "Ably-Test-Host/Ably-Test-Proto (by the redirector) or in direct mode (start the app server "
                        "with --default-upstream URL to relay plain HTTP)")  # fmt: skip
    else:
        scheme = {"ws": "http", "wss": "https"}.get(default_upstream.scheme, default_upstream.scheme)
        meant = URL(f"{scheme}://{default_upstream.raw_authority}{request.raw_path}", encoded=True)
    route = route_for(meant.raw_authority, routes) if routes else None
    target = routed_url(meant, route) if route is not None else meant
    return meant, target, request_forwarded(request.headers), http_info(request, meant, target) if described else None


def http_info(request: RequestHead, meant: URL, target: URL | None = None) -> ConnectionOpened:
    """A plain request as rules and the suite see it (described like a connection's handshake): with the host
    the client meant, Ably-Test-Host when captured, its Host header in direct mode; and the upstream it goes
    to."""
    stamp = request.headers.get(HEADER_TEST_HOST)
    host = stamp or request.host
    scheme = meant.scheme if stamp else "http"
    return ConnectionOpened(url=f"{scheme}://{host}{meant.raw_path_qs}", host=host, proto=scheme,
                            path=meant.raw_path, query=dict(meant.query), headers=as_sent(request.headers),
                            upstream=str(target or meant))  # fmt: skip


def forwarded_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """End-to-end handshake headers: minus hop-by-hop, per-hop WebSocket and Ably-Test-* ones."""
    return _without(headers, _hop_by_hop(headers) | PER_HOP_WEBSOCKET, (TEST_HEADER_PREFIX,))


def offered_protocols(headers: CIMultiDictProxy[str]) -> tuple[str, ...]:
    """Every subprotocol the client offered, over however many header lines (RFC 6455 §11.3.4)."""
    values = headers.getall("Sec-WebSocket-Protocol", [])
    return tuple(p.strip() for v in values for p in v.split(",") if p.strip())


def offers_deflate(headers: CIMultiDictProxy[str]) -> bool:
    return "permessage-deflate" in headers.get("Sec-WebSocket-Extensions", "").lower()


def opened_info(request: web.BaseRequest, target: Target) -> ConnectionOpened:
    """What interceptedConnectionOpened says of a connection (a new connection id with it): the URL and
    host the client asked for — Ably-Test-Host when captured, its Host header in direct mode and on a
    session's port — and beside them the upstream it goes to (SPEC Part 9)."""
    if request.headers.get(HEADER_TEST_HOST):
        url, host, proto = target.url, target.host, target.proto
    else:  # direct: the client spoke plain WebSocket to us, to the host in its Host header
        host = request.host
        proto = "ws"
        url = URL(f"ws://{host}{request.raw_path}", encoded=True)
    return ConnectionOpened(
        url=str(url),
        host=host,
        proto=proto,
        path=url.raw_path,
        query=dict(url.query),
        headers=as_sent(request.headers),
        upstream=str(target.url),
    )


def as_sent(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """A request's headers as the client sent them, for rules, the suite and the trace: without the
    Ably-Test-* stamps, and with the Host it meant (mitmproxy rewrote Host to the proxy endpoint when it
    redirected the request; Ably-Test-Host says what it was)."""
    meant = headers.get(HEADER_TEST_HOST)
    sent = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(TEST_HEADER_PREFIX):
            continue
        sent[name] = meant if meant and lower == "host" else value
    return sent
