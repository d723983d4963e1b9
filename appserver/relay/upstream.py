"""Dialling the upstream, and answering the client as the upstream answered us.

aiohttp's private internals are used here and in pump.py's ``corked`` (the writer's transport) only: a client
WebSocket's transport (to drop it abruptly, and to close it without aiohttp's
close(), which cannot send a close frame without a code), its handshake
response (the headers the upstream answered with), and a WebSocket's frame
writer (to send one message uncompressed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from ssl import SSLContext
from typing import Any, Iterator

import aiohttp
from aiohttp import web

from appserver.relay.headers import Target, forwarded_headers, offered_protocols, offers_deflate
from appserver.relay.http import mark_relayed


class _NoOverlapWarning(logging.Filter):
    """aiohttp warns when the protocol we answer with is not on the client's first
    Sec-WebSocket-Protocol line; we then set the header ourselves, so the warning is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("%s: Client protocols")


logging.getLogger("aiohttp.websocket").addFilter(_NoOverlapWarning())


async def dial(
    session: aiohttp.ClientSession, request: web.Request, target: Target, ssl: SSLContext | bool, timeout: float
) -> aiohttp.ClientWebSocketResponse:
    """The upstream WebSocket, offered what the client offered (subprotocols, deflate), its headers forwarded."""
    async with asyncio.timeout(timeout):
        return await session.ws_connect(
            target.url,
            headers=forwarded_headers(request.headers),
            protocols=offered_protocols(request.headers),
            compress=15 if offers_deflate(request.headers) else 0,
            autoclose=False,
            autoping=False,
            max_msg_size=0,
            ssl=ssl,
        )


def answer_like(upstream: aiohttp.ClientWebSocketResponse) -> web.WebSocketResponse:
    """The client's handshake response: exactly what the upstream agreed to (its subprotocol, deflate
    or not) and its end-to-end response headers (cookies, server-specific ones)."""
    upstream_headers = upstream._response.headers  # noqa: SLF001
    chosen = upstream_headers.get("Sec-WebSocket-Protocol")
    ws = web.WebSocketResponse(
        protocols=(chosen,) if chosen else (),
        compress=bool(upstream.compress),
        autoclose=False,
        autoping=False,
        max_msg_size=0,
    )
    ws.headers.extend(forwarded_headers(upstream_headers))
    mark_relayed(ws, upstream_headers)
    if chosen:
        # aiohttp looks for the protocol in the client's first Sec-WebSocket-Protocol line only;
        # a client may offer it on a later line (RFC 6455 §11.3.4), and must then still get it.
        ws.headers["Sec-WebSocket-Protocol"] = chosen
    return ws


def transport_of(ws: aiohttp.ClientWebSocketResponse) -> asyncio.Transport:
    transport: Any = ws._writer.transport  # noqa: SLF001
    return transport  # type: ignore[no-any-return]


def abandon(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The client went away mid-handshake: so does the upstream."""
    transport_of(ws).abort()
    ws._response.close()  # noqa: SLF001


@contextlib.contextmanager
def released(ws: aiohttp.ClientWebSocketResponse) -> Iterator[None]:
    """Give the upstream connection back to aiohttp's connector once the relay is over.

    We close its transport ourselves (never through aiohttp's close()), so the connector
    must be told the connection is done.
    """
    try:
        yield
    finally:
        ws._response.close()  # noqa: SLF001


def write_uncompressed(ws: Any, message: bytes, opcode: aiohttp.WSMsgType) -> bool:
    """Write one frame without permessage-deflate, whatever was negotiated (RFC 7692 §6 lets any message
    go uncompressed); False when ws has no frame writer to do it with. A peer inflates a compressed
    message asynchronously (Node's ws: on zlib's thread pool, after other sockets' data), an uncompressed
    one as it reads it: an injected frame is then with the SDK before the suite hears it was sent."""
    writer = getattr(ws, "_writer", None)
    write = getattr(writer, "_write_websocket_frame", None)
    if write is None or getattr(writer, "_closing", False):
        return False
    write(message, int(opcode), 0)
    return True

