"""What rules and the suite make of an HTTP exchange (SPEC Part 4): answered, dropped, delayed or rewritten
before it is forwarded (its response changed: http_whole.py). relay_http (http.py) asks its HttpGate and
applies the verdict here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from appserver.relay.headers import as_sent, end_to_end, without_test_headers
from appserver.verdict import HttpVerdict, RequestEdit
from shared.constants import HEADER_TEST_HOST
from shared.connections import ConnectionOpened

log = logging.getLogger("appserver.relay.http")

CLIENT_POLL = 0.1  # seconds between looks at whether a streaming response's client is still there


async def client_gone(request: web.Request) -> None:
    """Returns once the client's connection is closed (aiohttp does not cancel the handler for us)."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(CLIENT_POLL)


def http_info(request: web.Request, meant: URL, target: URL | None = None) -> ConnectionOpened:
    """An HTTP request as rules and the suite see it (described like a connection's handshake): with the
    host the client meant, Ably-Test-Host when captured, its Host header in direct mode; and the upstream
    it goes to (``target``)."""
    host = request.headers.get(HEADER_TEST_HOST) or request.host
    scheme = meant.scheme if request.headers.get(HEADER_TEST_HOST) else "http"
    return ConnectionOpened(
        url=f"{scheme}://{host}{meant.raw_path_qs}", host=host, proto=scheme, path=meant.raw_path,
        query=dict(meant.query),
        headers=as_sent(request.headers),
        upstream=str(target or meant),
    )  # fmt: skip


async def read_bounded(request: web.Request, limit: int) -> tuple[bytes | None, AsyncIterator[bytes] | bytes]:
    """The request body whole if it is at most ``limit`` bytes (and what to send upstream); over it,
    None and a stream of what was read and what follows."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None, _prefixed(chunks, request.content.iter_any())
    whole = b"".join(chunks)
    return whole, whole


async def _prefixed(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk


def made_here(request: web.Request, status: int, headers: CIMultiDict[str] | None = None, body: bytes = b"",
              text: str | None = None) -> web.Response:  # fmt: skip
    """A response the proxy makes itself (a rule's or the suite's answer, a 502). A browser's request (it has an
    Origin) gets the CORS headers a server would send, so that the page may read it, unless the answer set
    them: without them the browser hides the answer and the SDK sees a network error instead."""
    headers = CIMultiDict(headers or {})
    origin = request.headers.get("Origin")
    if origin is not None and "Access-Control-Allow-Origin" not in headers:
        exposed = ", ".join(name for name in headers if name.lower() not in _SIMPLE_RESPONSE_HEADERS)
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
        headers.add("Vary", "Origin")
        if exposed:
            headers["Access-Control-Expose-Headers"] = exposed
    if text is not None:
        return web.Response(status=status, headers=headers, text=text)
    return web.Response(status=status, headers=headers, body=body)


#: Response headers a page may always read (the Fetch standard's CORS-safelisted response header names).
_SIMPLE_RESPONSE_HEADERS = frozenset(
    ("cache-control", "content-language", "content-length", "content-type", "expires", "last-modified", "pragma"))


async def before_forwarding(request: web.Request, verdict: HttpVerdict, meant: URL) -> web.StreamResponse | None:
    """A rule's answer, drop or delay; None when the request is to be forwarded now."""
    if verdict.respond is not None:
        r = verdict.respond
        log.info("%s %s answered by a rule: %d", request.method, meant, r.status)
        return made_here(request, r.status, CIMultiDict(r.headers), r.body)
    if verdict.drop is not None:
        log.info("%s %s dropped by a rule (%s)", request.method, meant, verdict.drop.mode)
        if verdict.drop.mode == "hang":
            await client_gone(request)
        elif request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)  # nobody reads it
    if verdict.delay_ms:
        await asyncio.sleep(verdict.delay_ms / 1000)
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=499)  # the client gave up: never forwarded
    return None


@dataclass
class Outgoing:
    """The request as it will go upstream (a rule or the suite may have changed it). ``length`` is the client's
    Content-Length (None: it sent its body chunked, or none): the upstream gets the body framed the same way."""

    method: str
    url: URL
    headers: CIMultiDict[str]
    body: AsyncIterator[bytes] | bytes | None
    length: int | None = None

    def apply(self, edit: RequestEdit) -> None:
        self.method = edit.method or self.method
        if edit.url is not None:
            self.url = URL(edit.url)
        if edit.headers is not None:  # the suite's, which may echo what it was shown (Host, Connection …)
            self.headers = without_test_headers(end_to_end(CIMultiDict(edit.headers)))
        if edit.body is not None:
            self.body = edit.body
            self.length = len(edit.body)

    def framed(self) -> tuple[CIMultiDict[str], AsyncIterator[bytes] | bytes | None]:
        """The headers and body to send: with the body's Content-Length, or chunked as the client sent it."""
        headers = CIMultiDict((k, v) for k, v in self.headers.items()
                              if k.lower() not in ("content-length", "transfer-encoding"))  # fmt: skip
        if self.body is None:
            return headers, None
        if isinstance(self.body, bytes):
            return headers, self.body if self.length is not None else _one_chunk(self.body)
        if self.length is not None:
            headers["Content-Length"] = str(self.length)
        return headers, self.body


async def _one_chunk(body: bytes) -> AsyncIterator[bytes]:
    """A body held whole, sent chunked as the client sent it."""
    yield body
