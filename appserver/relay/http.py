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
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ssl import SSLContext

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from appserver.relay.headers import end_to_end, without_test_headers
from appserver.verdict import HttpDrop, HttpGate, HttpResponse, HttpVerdict, RequestEdit, ResponseEdit
from shared.constants import HEADER_TEST_HOST, TEST_HEADER_PREFIX
from shared.dotted import path_set, path_unset
from shared.wire import ConnectionOpened

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
DEFAULT_MAX_BODY = 16 * 1024 * 1024  # --max-http-body
#: A body of known length up to this is copied without watching for the client to go away meanwhile
#: (two tasks a request): it cannot keep the upstream request open for long.
WATCH_ABOVE = 256 * 1024
CLIENT_POLL = 0.1  # seconds between looks at whether a streaming response's client is still there


async def relay_http(
    request: web.Request, session: aiohttp.ClientSession, meant: URL, target: URL, ssl: SSLContext | bool,
    gate: HttpGate | None = None, max_body: int = DEFAULT_MAX_BODY,
) -> web.StreamResponse:  # fmt: skip
    """Relay one request to ``target``; ``meant`` is where the client meant it to go (what rules see)."""
    body: AsyncIterator[bytes] | bytes | None = request.content.iter_any() if request.body_exists else None
    out = Outgoing(request.method, target, without_test_headers(end_to_end(request.headers)), body)
    if gate is not None:
        info = http_info(request, meant)
        read = None
        if request.body_exists and gate.wants_body(info, request.method):
            read, out.body = await read_bounded(request, max_body)
            if read is None:
                log.info("%s %s: body over --max-http-body (%d bytes): streamed, rules see no body",
                         request.method, meant, max_body)  # fmt: skip
        verdict = await gate.decide_http(info, request.method, read)
        early = await _before_forwarding(request, verdict, meant)
        if early is not None:
            return early
        if verdict.route is not None:
            out.url = URL(f"{verdict.route.proto}://{verdict.route.host}{meant.raw_path_qs}", encoded=True)
        if verdict.request is not None:
            out.apply(verdict.request)
        if verdict.edit is not None or verdict.transform_response is not None:
            return await _whole(request, session, out, ssl, max_body, verdict, gate, info)
    try:
        upstream = await session.request(out.method, out.url, headers=out.headers, data=out.body,
                                         allow_redirects=False, auto_decompress=False, ssl=ssl)  # fmt: skip
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.info("could not relay %s %s: %r", out.method, out.url, exc)
        return web.Response(status=502, text=f"upstream {out.url} could not be reached: {exc!r}\n")
    target = out.url
    finished = False
    try:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=end_to_end(upstream.headers))  # fmt: skip
        if upstream.content_length is not None and "chunked" not in upstream.headers.get("Transfer-Encoding", ""):
            response.content_length = upstream.content_length
        await response.prepare(request)
        length = upstream.content_length
        if length is not None and length <= WATCH_ABOVE:
            # A short body of known length: copied in place; a client gone shows as a failed write.
            try:
                await _copy_body(upstream, response)
            except ClientGone:
                log.info("the client of %s %s went away mid-body", request.method, target)
                return response
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                log.info("upstream %s failed mid-body: %r; dropping the client's connection", target, exc)
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write_eof()
            finished = True
            log.debug("relayed %s %s → %s", request.method, target, upstream.status)
            return response
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


def http_info(request: web.Request, meant: URL) -> ConnectionOpened:
    """An HTTP request as rules and the suite see it (described like a connection's handshake): with the
    host the client meant, Ably-Test-Host when captured, its Host header in direct mode."""
    host = request.headers.get(HEADER_TEST_HOST) or request.host
    return ConnectionOpened(
        url=f"{meant.scheme}://{host}{meant.raw_path_qs}", host=host, proto=meant.scheme, path=meant.raw_path,
        query=dict(meant.query),
        headers={k: v for k, v in request.headers.items() if not k.lower().startswith(TEST_HEADER_PREFIX)},
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


async def _before_forwarding(request: web.Request, verdict: HttpVerdict, meant: URL) -> web.StreamResponse | None:
    """A rule's answer, drop or delay; None when the request is to be forwarded now."""
    if verdict.respond is not None:
        r = verdict.respond
        log.info("%s %s answered by a rule: %d", request.method, meant, r.status)
        return web.Response(status=r.status, headers=CIMultiDict(r.headers), body=r.body)
    if verdict.drop is not None:
        log.info("%s %s dropped by a rule (%s)", request.method, meant, verdict.drop.mode)
        if verdict.drop.mode == "hang":
            await _client_gone(request)
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
    """The request as it will go upstream (a rule or the suite may have changed it)."""

    method: str
    url: URL
    headers: CIMultiDict[str]
    body: AsyncIterator[bytes] | bytes | None

    def apply(self, edit: RequestEdit) -> None:
        self.method = edit.method or self.method
        if edit.url is not None:
            self.url = URL(edit.url)
        if edit.headers is not None:
            self.headers = CIMultiDict(edit.headers)
        if edit.body is not None:
            self.body = edit.body


async def _whole(
    request: web.Request, session: aiohttp.ClientSession, out: Outgoing, ssl: SSLContext | bool, max_body: int,
    verdict: HttpVerdict, gate: HttpGate, info: ConnectionOpened,
) -> web.StreamResponse:  # fmt: skip
    """Forward, read the whole response, change it (a rule's edit, or the suite's answer), answer with that."""
    edit = verdict.edit
    try:
        async with session.request(out.method, out.url, headers=out.headers, data=out.body, allow_redirects=False,
                                   ssl=ssl) as upstream:  # fmt: skip
            payload = b"" if edit is not None and edit.body is not None else await upstream.content.read(max_body)
            status, headers = upstream.status, end_to_end(upstream.headers)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return web.Response(status=502, text=f"upstream {out.url} could not be reached: {exc!r}\n")
    headers.popall("Content-Encoding", None)  # read decompressed: the body is sent as it now is
    if edit is not None:
        for name, value in edit.headers:
            headers[name] = value
        if edit.body is not None:
            payload = edit.body
        elif edit.needs_body:
            payload = _patched_json(payload, edit, str(out.url))
        status = edit.status or status
    if verdict.transform_response is not None:
        answer = await gate.transform_response(info, verdict.transform_response,
                                               HttpResponse(status, tuple(headers.items()), payload))  # fmt: skip
        if isinstance(answer, HttpDrop):
            return await _before_forwarding(request, HttpVerdict(drop=answer), URL(info.url)) or web.Response()
        status, headers, payload = answer.status, CIMultiDict(answer.headers), answer.body
    return web.Response(status=status, headers=headers, body=payload)


def _patched_json(payload: bytes, edit: ResponseEdit, where: str) -> bytes:
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        log.error("a patchResponse rule on %s: the response is not JSON; passed on unchanged", where)
        return payload
    if not isinstance(document, (dict, list)):
        return payload
    for path, value in edit.set:
        if isinstance(document, dict):
            path_set(document, path, value)
    for path in edit.unset:
        path_unset(document, path)
    return json.dumps(document, separators=(",", ":")).encode()
