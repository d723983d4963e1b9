"""Plain HTTP through the proxy endpoint: REST calls, token requests, connectivity checks, Comet.

The request goes upstream with its method, path, query, end-to-end headers and
body (framed as the client sent it: its Content-Length, or chunked); the
response comes back with its status, end-to-end headers and body as they came,
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
from collections.abc import AsyncIterator, Sequence
from ssl import SSLContext

import aiohttp
from aiohttp import web
from yarl import URL

from appserver.events import HttpAnswered, HttpRequested, Sink, tell
from appserver.relay.headers import end_to_end, mark_relayed, without_test_headers
from appserver.relay.http_verdicts import CLIENT_POLL, Outgoing, before_forwarding, http_info, made_here, read_bounded
from appserver.relay.http_whole import Streaming, changed
from appserver.verdict import HttpGate, HttpVerdict
from shared.connections import ConnectionOpened

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
DEFAULT_MAX_BODY = 16 * 1024 * 1024  # --max-http-body
#: A body of known length up to this is copied without watching for the client to go away meanwhile
#: (two tasks a request): it cannot keep the upstream request open for long.
WATCH_ABOVE = 256 * 1024
#: How much of a body the sinks are given (the trace keeps at most its own --trace-data-limit of it).
HEAD = 64 * 1024


async def relay_http(
    request: web.Request, session: aiohttp.ClientSession, meant: URL, target: URL, ssl: SSLContext | bool,
    gate: HttpGate | None = None, max_body: int = DEFAULT_MAX_BODY, sinks: Sequence[Sink] = (),
) -> web.StreamResponse:  # fmt: skip
    """Relay one request to ``target``; ``meant`` is where the client meant it to go (what rules see).
    ``sinks`` (per-frame sinks: the trace) are told of the request and of what the client got."""
    tally = Tally()
    info = http_info(request, meant, target) if gate is not None or sinks else None
    response = await _exchange(request, session, meant, target, ssl, gate, max_body, sinks, info, tally)
    if sinks and info is not None:
        if isinstance(response, web.Response):  # made whole: by the proxy, or read whole and changed
            tally.size = len(response.body) if isinstance(response.body, bytes) else 0
            tally.head = response.body[:HEAD] if isinstance(response.body, bytes) else b""
        status = None if tally.outcome == "dropped" else response.status
        tell(sinks, HttpAnswered(info.id, status, tuple(response.headers.items()), tally.size, tally.head,
                                          tally.upstream, tally.outcome))  # fmt: skip
    return response


async def _exchange(
    request: web.Request, session: aiohttp.ClientSession, meant: URL, target: URL, ssl: SSLContext | bool,
    gate: HttpGate | None, max_body: int, sinks: Sequence[Sink], info: ConnectionOpened | None, tally: Tally,
) -> web.StreamResponse:  # fmt: skip
    body: AsyncIterator[bytes] | bytes | None = request.content.iter_any() if request.body_exists else None
    out = Outgoing(request.method, target, without_test_headers(end_to_end(request.headers)), body,
                   request.content_length if request.body_exists else None)  # fmt: skip
    read = None
    if gate is not None and info is not None and request.body_exists and gate.wants_body(info, request.method):
        read, out.body = await read_bounded(request, max_body)
        if read is None:
            log.info("%s %s: body over --max-http-body (%d bytes): streamed, rules see no body",
                     request.method, meant, max_body)  # fmt: skip
    if sinks and info is not None:
        tell(sinks, HttpRequested(info, request.method, read, request.remote))
    verdict: HttpVerdict | None = None
    if gate is not None and info is not None:
        verdict = await gate.decide_http(info, request.method, read)
        early = await before_forwarding(request, verdict, meant)
        if early is not None:
            tally.outcome = "dropped" if verdict.drop is not None or early.status == 499 else "complete"
            return early
        if verdict.route is not None:
            out.url = URL(f"{verdict.route.proto}://{verdict.route.host}{meant.raw_path_qs}", encoded=True)
        if verdict.request is not None:
            out.apply(verdict.request)
    tally.upstream = str(out.url)
    upstream = await _forward(session, out, ssl)
    if isinstance(upstream, Exception):
        log.info("could not relay %s %s: %r", out.method, out.url, upstream)
        tally.upstream = None
        return made_here(request, 502, text=f"upstream {out.url} could not be reached: {upstream!r}\n")
    if verdict is not None and (verdict.edit is not None or verdict.transform_response is not None):
        assert gate is not None and info is not None
        answer = await changed(request, upstream, out, max_body, verdict, gate, info)
        if isinstance(answer, web.StreamResponse):
            return answer
        return await _streamed(request, answer, out.url, tally)
    return await _streamed(request, Streaming(upstream, upstream.status, end_to_end(upstream.headers)), out.url, tally)


async def _forward(session: aiohttp.ClientSession, out: Outgoing,
                   ssl: SSLContext | bool) -> aiohttp.ClientResponse | Exception:  # fmt: skip
    """The one request to the upstream, whatever comes after it: its response (head), or why there is none."""
    headers, data = out.framed()
    try:
        return await session.request(out.method, out.url, headers=headers, data=data, allow_redirects=False,
                                     auto_decompress=False, ssl=ssl)  # fmt: skip
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return exc


async def _streamed(request: web.Request, passing: Streaming, target: URL, tally: Tally) -> web.StreamResponse:
    """The upstream's response to the client, its body chunk by chunk as it comes (after what was read of it)."""
    upstream = passing.upstream
    finished = False
    try:
        reason = upstream.reason if passing.status == upstream.status else None
        response = web.StreamResponse(status=passing.status, reason=reason, headers=passing.headers)
        mark_relayed(response, passing.headers)
        if upstream.content_length is not None and "chunked" not in upstream.headers.get("Transfer-Encoding", ""):
            response.content_length = upstream.content_length
        await response.prepare(request)
        length = upstream.content_length
        if length is not None and length <= WATCH_ABOVE:
            failure = await _copied(upstream, response, tally, passing.prefix)  # a client gone: a failed write
        else:
            failure = await _copied_watching(request, upstream, response, tally, passing.prefix)
        if isinstance(failure, ClientGone):
            log.info("the client of %s %s went away mid-body: the upstream request is abandoned",
                     request.method, target)  # fmt: skip
            tally.outcome = "client gone"
            return response
        if failure is not None:
            # The upstream failed mid-body: so does the client's response (no clean end it could trust).
            log.info("upstream %s failed mid-body: %r; dropping the client's connection", target, failure)
            tally.outcome = "upstream failed"
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


class Tally:
    """What the client got of a relayed body (for the sinks): how much, its first bytes, how it ended."""

    __slots__ = ("size", "head", "upstream", "outcome")

    def __init__(self) -> None:
        self.size = 0
        self.head = b""
        self.upstream: str | None = None
        self.outcome = "complete"


async def _copied(upstream: aiohttp.ClientResponse, response: web.StreamResponse, tally: Tally,
                  prefix: bytes) -> BaseException | None:  # fmt: skip
    """Copy the body; None, or why it stopped (ClientGone, or the upstream's error)."""
    try:
        await _copy_body(upstream, response, tally, prefix)
    except (ClientGone, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        return exc
    return None


async def _copied_watching(request: web.Request, upstream: aiohttp.ClientResponse, response: web.StreamResponse,
                           tally: Tally, prefix: bytes) -> BaseException | None:  # fmt: skip
    """Copy the body while watching the client: one that goes away while the upstream is silent (a long
    poll, a stream) ends the upstream request too (aiohttp does not cancel the handler for us)."""
    task = asyncio.current_task()
    assert task is not None
    watch = _Watch(request, task)
    try:
        return await _copied(upstream, response, tally, prefix)
    except asyncio.CancelledError:
        if not watch.fired or task.uncancel() > 0:
            raise  # cancelled from outside too
        return ClientGone("went away")
    finally:
        watch.stop()


class _Watch:
    """Looks every CLIENT_POLL seconds whether the client's connection is closed, and if so cancels the
    task copying to it (a timer, not a task of its own: nothing to start or wait for per request)."""

    def __init__(self, request: web.Request, task: asyncio.Task[object]) -> None:
        self.fired = False
        self._request = request
        self._task = task
        self._timer = asyncio.get_running_loop().call_later(CLIENT_POLL, self._look)

    def _look(self) -> None:
        transport = self._request.transport
        if transport is None or transport.is_closing():
            self.fired = True
            self._task.cancel()
        else:
            self._timer = asyncio.get_running_loop().call_later(CLIENT_POLL, self._look)

    def stop(self) -> None:
        self._timer.cancel()


class ClientGone(Exception):
    """Writing to the client failed: it went away."""


async def _copy_body(upstream: aiohttp.ClientResponse, response: web.StreamResponse, tally: Tally,
                     prefix: bytes) -> None:  # fmt: skip
    """Chunk by chunk as they come; ClientGone when the client went away, aiohttp's errors
    (ClientPayloadError, ClientConnectionError) when the upstream failed."""
    if prefix:
        await _write(response, prefix, tally)
    async for chunk in upstream.content.iter_chunked(CHUNK):
        await _write(response, chunk, tally)


async def _write(response: web.StreamResponse, chunk: bytes, tally: Tally) -> None:
    if not tally.size:
        tally.head = chunk[:HEAD]
    tally.size += len(chunk)
    try:
        await response.write(chunk)
    except ConnectionError as exc:  # aiohttp's server side raises its client-flavoured reset error
        raise ClientGone(str(exc)) from exc
