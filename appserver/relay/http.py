"""Plain HTTP through the proxy endpoint: REST calls, token requests, connectivity checks, Comet.

The request goes upstream with its method, path, query, end-to-end headers and
body; the response comes back with its status, end-to-end headers and body,
chunk by chunk as the upstream sends it (a streamed or chunked response, Server-
Sent Events or a Comet stream reaches the client as it is written; a response
with a length keeps it). The upstream is the host the client meant
(``Ably-Test-Host`` / ``Ably-Test-Proto: http|https``, stamped by the
redirector) or, in direct mode, the default upstream. An upstream that cannot
be reached answers 502 with a body that says why; one that fails mid-body drops
the client's connection the same way; a client that goes away cancels the
upstream request.
"""

from __future__ import annotations

import asyncio
import logging
from ssl import SSLContext

import aiohttp
from aiohttp import web
from yarl import URL

from appserver.relay.headers import end_to_end, without_test_headers

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
CLIENT_POLL = 0.1  # seconds between looks at whether a streaming response's client is still there


async def relay_http(
    request: web.Request, session: aiohttp.ClientSession, target: URL, ssl: SSLContext | bool
) -> web.StreamResponse:
    body = request.content if request.body_exists else None
    try:
        upstream = await session.request(
            request.method, target, headers=without_test_headers(end_to_end(request.headers)), data=body,
            allow_redirects=False, auto_decompress=False, ssl=ssl,
        )  # fmt: skip
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.info("could not relay %s %s: %r", request.method, target, exc)
        return web.Response(status=502, text=f"upstream {target} could not be reached: {exc!r}\n")
    finished = False
    try:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=end_to_end(upstream.headers))  # fmt: skip
        if upstream.content_length is not None and "chunked" not in upstream.headers.get("Transfer-Encoding", ""):
            response.content_length = upstream.content_length
        await response.prepare(request)
        copying = asyncio.ensure_future(_copy_body(upstream, response))
        watching = asyncio.ensure_future(_client_gone(request))
        done: set[asyncio.Future[None]] = set()
        try:
            done, _ = await asyncio.wait((copying, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            if copying not in done:  # the client went first (or we are cancelled): stop reading upstream
                copying.cancel()
            await asyncio.gather(copying, watching, return_exceptions=True)
        failure = None if copying.cancelled() else copying.exception()
        if copying.cancelled() or isinstance(failure, ClientGone):
            log.info("the client of %s %s went away mid-body: the upstream request is abandoned",
                     request.method, target)  # fmt: skip
            return response
        if failure is not None:
            # The upstream failed mid-body: so does the client's response (no clean end it could trust).
            log.info("upstream %s failed mid-body: %r; dropping the client's connection", target, failure)
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        finished = True
        log.debug("relayed %s %s → %s", request.method, target, upstream.status)
        return response
    finally:
        if finished:
            upstream.release()
        else:
            upstream.close()  # not read to its end: the connection goes, and the upstream sees it go


class ClientGone(Exception):
    """Writing to the client failed: it went away."""


async def _copy_body(upstream: aiohttp.ClientResponse, response: web.StreamResponse) -> None:
    """Chunk by chunk as they come; ClientGone when the client went away, aiohttp's errors
    (ClientPayloadError, ClientConnectionError) when the upstream failed."""
    async for chunk in upstream.content.iter_chunked(CHUNK):
        try:
            await response.write(chunk)
        except ConnectionError as exc:  # aiohttp's server side raises its client-flavoured reset error
            raise ClientGone(str(exc)) from exc


async def _client_gone(request: web.Request) -> None:
    """Returns once the client's connection is closed (aiohttp does not cancel the handler for us)."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(CLIENT_POLL)
