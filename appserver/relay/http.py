"""Plain HTTP through the proxy endpoint (REST calls, token requests, connectivity checks, Comet): one
forwarder in three steps — before, forward, after.

*Before*: the request's target (``Ably-Test-Host`` / ``Ably-Test-Proto: http|https``, stamped by the
redirector, or in direct mode the default upstream; a ``--route`` may send it elsewhere), and what the rules and
the suite make of it (SPEC Part 4): answered by the proxy, dropped, delayed, routed or rewritten. *Forward*: the
one request to the upstream, with the method, path, query, end-to-end headers and body (framed as the client
sent it: its Content-Length, or chunked). *After*: the response back with its status, end-to-end headers and
body as they came, chunk by chunk as the upstream sends it (a streamed or chunked response, Server-Sent Events
or a Comet stream reaches the client as it is written; a response with a length keeps it) — or changed by a
rule or the suite (replaceResponse, patchResponse, transformInterceptedHttpResponse), which holds only what the
change needs: a status or headers edit streams the body on; a new body never reads the upstream's; a patch or
the suite's transform reads the body whole, up to ``--max-http-body`` (over it, the body streams on unchanged and
the log says the rule or the suite did not see it), decoded (gzip, deflate) and answered without its
Content-Encoding.

An upstream that cannot be reached answers 502 with a body that says why; one that fails mid-body drops the
client's connection the same way; a client that goes away cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from ssl import SSLContext

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from appserver.events import HttpAnswered, HttpRequested, Sink
from appserver.relay.headers import BadTarget, end_to_end, outbound, request_forwarded
from appserver.verdict import HttpDrop, HttpGate, HttpResponse, HttpVerdict, RequestEdit, ResponseEdit
from shared.connections import ConnectionOpened
from shared.dotted import path_set, path_unset

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
DEFAULT_MAX_BODY = 16 * 1024 * 1024  # --max-http-body
#: A body of known length up to this is copied without watching for the client to go away meanwhile
#: (two tasks a request): it cannot keep the upstream request open for long.
WATCH_ABOVE = 256 * 1024
#: How much of a body the sinks are given (the trace keeps at most its own --trace-data-limit of it).
HEAD = 64 * 1024
CLIENT_POLL = 0.1  # seconds between looks at whether a streaming response's client is still there
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True)
class HttpSettings:
    """What the forwarder needs of the endpoint's settings."""

    default_upstream: URL | None
    ssl: SSLContext | bool
    routes: tuple[tuple[str, URL], ...] = ()
    max_body: int = DEFAULT_MAX_BODY


async def relay_http(request: web.Request, session: aiohttp.ClientSession, settings: HttpSettings,
                     gate: HttpGate | None = None, sinks: Sequence[Sink] = ()) -> web.StreamResponse:  # fmt: skip
    """Relay one request to the host it meant (or its route). ``sinks`` (the per-frame sinks: the trace) are told
    of the request and of what the client got."""
    try:  # the request's header work, at once: where it meant to go and goes, what travels, what rules see
        meant, target, forwarded, info = outbound(request, settings.default_upstream, settings.routes,
                                                  described=gate is not None or bool(sinks))  # fmt: skip
    except BadTarget as exc:
        return web.Response(status=400, text=f"{exc}\n")
    tally = Tally()
    response = await _exchange(request, session, meant, target, forwarded, settings, gate, sinks, info, tally)
    if sinks and info is not None:
        if isinstance(response, web.Response):  # made whole: by the proxy, or read whole and changed
            tally.size = len(response.body) if isinstance(response.body, bytes) else 0
            tally.head = response.body[:HEAD] if isinstance(response.body, bytes) else b""
        status = None if tally.outcome == "dropped" else response.status
        answered = HttpAnswered(info.id, status, tuple(response.headers.items()), tally.size, tally.head,
                                tally.upstream, tally.outcome)  # fmt: skip
        for sink in sinks:
            sink.seen(answered)
    return response


# -- responses the proxy relays ---------------------------------------------------------------------------

#: Headers aiohttp's server gives a response that lacks them; a relayed response has only those its upstream
#: sent (a REST answer without a Content-Type must not become application/octet-stream on the way).
SERVER_DEFAULTS = ("Content-Type", "Date", "Server")
#: A relayed response's key: the defaults it is not to gain.
_RELAYED_WITHOUT = web.ResponseKey("relayed_without", tuple)


def mark_relayed(response: web.StreamResponse, sent: CIMultiDict[str] | CIMultiDictProxy[str]) -> None:
    """Say that ``response`` relays an upstream's (a plain response, or an upgrade's 101), which ``sent`` these
    headers: it will gain none of aiohttp's defaults the upstream did not send (see
    :func:`without_server_defaults`)."""
    response[_RELAYED_WITHOUT] = tuple(name for name in SERVER_DEFAULTS if name not in sent)


async def without_server_defaults(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """The proxy endpoint's on_response_prepare: a relayed response loses the defaults aiohttp has just
    added to it that its upstream did not send (answers the proxy makes itself keep them)."""
    for name in response.get(_RELAYED_WITHOUT, ()):
        response.headers.popall(name, None)


# -- before ------------------------------------------------------------------------------------------------


async def _exchange(
    request: web.Request, session: aiohttp.ClientSession, meant: URL, target: URL, forwarded: CIMultiDict[str],
    settings: HttpSettings, gate: HttpGate | None, sinks: Sequence[Sink], info: ConnectionOpened | None,
    tally: Tally,
) -> web.StreamResponse:  # fmt: skip
    has_body = request.body_exists
    body: AsyncIterator[bytes] | bytes | None = request.content.iter_any() if has_body else None
    out = Outgoing(request.method, target, forwarded, body,
                   request.content_length if has_body else None)  # fmt: skip
    read = None
    if gate is not None and info is not None and has_body and gate.wants_body(info, request.method):
        chunks, complete = await _read_up_to(request.content, settings.max_body)
        if complete:
            read = out.body = b"".join(chunks)
        else:
            out.body = _prefixed(chunks, request.content.iter_any())
            log.info("%s %s: body over --max-http-body (%d bytes): streamed, rules see no body",
                     request.method, meant, settings.max_body)  # fmt: skip
    if sinks and info is not None:
        requested = HttpRequested(info, request.method, read, request.remote)
        for sink in sinks:
            sink.seen(requested)
    verdict: HttpVerdict | None = None
    if gate is not None and info is not None:
        verdict = await gate.decide_http(info, request.method, read)
        early = await _before(request, verdict, meant)
        if early is not None:
            tally.outcome = "dropped" if verdict.drop is not None or early.status == 499 else "complete"
            return early
        if verdict.route is not None:
            out.url = URL(f"{verdict.route.proto}://{verdict.route.host}{meant.raw_path_qs}", encoded=True)
        if verdict.request is not None:
            out.apply(verdict.request)
    tally.upstream = str(out.url)
    upstream = await _forward(session, out, settings.ssl)
    if isinstance(upstream, Exception):
        log.info("could not relay %s %s: %r", out.method, out.url, upstream)
        tally.upstream = None
        return made_here(request, 502, text=f"upstream {out.url} could not be reached: {upstream!r}\n")
    if verdict is not None and (verdict.edit is not None or verdict.transform_response is not None):
        assert gate is not None and info is not None
        answer = await _changed(request, upstream, out, settings.max_body, verdict, gate, info)
        if isinstance(answer, web.StreamResponse):
            return answer
        return await _streamed(request, answer, out.url, tally)
    return await _streamed(request, Streaming(upstream, upstream.status, end_to_end(upstream.headers)), out.url, tally)


async def _before(request: web.Request, verdict: HttpVerdict, meant: URL) -> web.StreamResponse | None:
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


async def client_gone(request: web.Request) -> None:
    """Returns once the client's connection is closed (aiohttp does not cancel the handler for us)."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(CLIENT_POLL)


def made_here(request: web.Request, status: int, headers: CIMultiDict[str] | None = None, body: bytes = b"",
              text: str | None = None) -> web.Response:  # fmt: skip
    """A response the proxy makes itself (a rule's or the suite's answer, a 502). A browser's request (it has an
    Origin) gets the CORS headers a server would send, so that the page may read it, unless the answer set
    them: without them the browser hides the answer and the SDK sees a network error instead."""
    headers = CIMultiDict(headers or {})
    with_cors(headers, request.headers.get("Origin"))
    if text is not None:
        return web.Response(status=status, headers=headers, text=text)
    return web.Response(status=status, headers=headers, body=body)


def with_cors(headers: CIMultiDict[str], origin: str | None) -> None:
    """The CORS headers a server would send a browser's request (``origin``: its Origin, None when it has none),
    added to the headers of an answer the proxy makes, unless they set them."""
    if origin is not None and "Access-Control-Allow-Origin" not in headers:
        exposed = ", ".join(name for name in headers if name.lower() not in _SIMPLE_RESPONSE_HEADERS)
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
        headers.add("Vary", "Origin")
        if exposed:
            headers["Access-Control-Expose-Headers"] = exposed


#: Response headers a page may always read (the Fetch standard's CORS-safelisted response header names).
_SIMPLE_RESPONSE_HEADERS = frozenset(
    ("cache-control", "content-language", "content-length", "content-type", "expires", "last-modified", "pragma"))


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
            self.headers = request_forwarded(CIMultiDict(edit.headers))
        if edit.body is not None:
            self.body = edit.body
            self.length = len(edit.body)

    def framed(self) -> tuple[CIMultiDict[str], AsyncIterator[bytes] | bytes | None]:
        """The headers and body to send: with the body's Content-Length, or chunked as the client sent it."""
        headers = self.headers  # end-to-end: no Content-Length or Transfer-Encoding of the client's
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


async def _read_up_to(content: aiohttp.StreamReader, limit: int) -> tuple[list[bytes], bool]:
    """A body's chunks as they come (a request's, or a response's still encoded), up to a little over ``limit``,
    and whether that is all of it. The one bounded reader of both directions."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return chunks, False
    return chunks, True


async def _prefixed(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk


# -- forward -----------------------------------------------------------------------------------------------


async def _forward(session: aiohttp.ClientSession, out: Outgoing,
                   ssl: SSLContext | bool) -> aiohttp.ClientResponse | Exception:  # fmt: skip
    """The one request to the upstream, whatever comes after it: its response (head), or why there is none."""
    headers, data = out.framed()
    try:
        return await session.request(out.method, out.url, headers=headers, data=data, allow_redirects=False,
                                     auto_decompress=False, ssl=ssl)  # fmt: skip
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return exc


# -- after: the response changed ---------------------------------------------------------------------------


@dataclass
class Streaming:
    """An upstream response to stream to the client: its status and headers (as a rule may have changed them)
    and what of its body was read already."""

    upstream: aiohttp.ClientResponse
    status: int
    headers: CIMultiDict[str]
    prefix: bytes = b""


async def _changed(
    request: web.Request, upstream: aiohttp.ClientResponse, out: Outgoing, max_body: int, verdict: HttpVerdict,
    gate: HttpGate, info: ConnectionOpened,
) -> web.StreamResponse | Streaming:  # fmt: skip
    """Change what came back from the one forward: a whole answer, or (Streaming) a response to stream on."""
    edit = verdict.edit
    status, headers = _edited(edit, upstream.status, end_to_end(upstream.headers))
    reads = (edit is not None and edit.needs_body) or verdict.transform_response is not None
    if edit is not None and edit.body is not None:
        upstream.close()  # its body is not wanted: the connection goes rather than be read to its end
        headers.popall("Content-Encoding", None)
        payload = edit.body
    elif not reads:
        return Streaming(upstream, status, headers)
    else:
        try:
            chunks: list[bytes] = []
            if out.method == "HEAD":
                complete = True
            elif upstream.content_length is not None and upstream.content_length > max_body:
                complete = False
            else:
                chunks, complete = await _read_up_to(upstream.content, max_body)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            upstream.close()
            log.info("upstream %s failed mid-body: %r; dropping the client's connection", out.url, exc)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499)  # nobody reads it
        raw = b"".join(chunks)
        if not complete:
            log.info("%s %s: response body over --max-http-body (%d bytes): streamed on unchanged, "
                     "the rule or the suite does not see it", out.method, out.url, max_body)  # fmt: skip
            return Streaming(upstream, status, headers, raw)
        upstream.release()
        payload, headers, readable = _decoded(raw, headers, max_body, str(out.url))
        if edit is not None and edit.needs_body and readable:
            payload = _patched_json(payload, edit, str(out.url))
    if verdict.transform_response is not None:
        answer = await gate.transform_response(info, verdict.transform_response,
                                               HttpResponse(status, tuple(headers.items()), payload))  # fmt: skip
        if isinstance(answer, HttpDrop):
            return await _before(request, HttpVerdict(drop=answer), URL(info.url)) or web.Response()
        status, headers, payload = answer.status, CIMultiDict(answer.headers), answer.body
    if request.method != "HEAD":
        headers.popall("Content-Length", None)  # the body's own, set by aiohttp
    relayed = web.Response(status=status, headers=headers, body=payload)
    mark_relayed(relayed, headers)
    return relayed


def _patched_json(payload: bytes, edit: ResponseEdit, where: str) -> bytes:
    """A JSON body with a patchResponse rule's dotted set and unset applied (not JSON: as it was, ERROR; no body,
    as for a HEAD, a 204 or a 304: nothing to patch)."""
    if not payload:
        return payload
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


def _edited(edit: ResponseEdit | None, status: int, headers: CIMultiDict[str]) -> tuple[int, CIMultiDict[str]]:
    if edit is None:
        return status, headers
    for name, value in edit.headers:
        headers[name] = value
    return edit.status or status, headers


def _decoded(raw: bytes, headers: CIMultiDict[str], limit: int, where: str
             ) -> tuple[bytes, CIMultiDict[str], bool]:  # fmt: skip
    """The body as a rule or the suite reads it, and whether it is readable: gzip or deflate undone, and the
    header with it. Another encoding, a body that does not decode, or one over ``limit`` decoded, is left as it
    came (a patch is not applied to it; the suite sees it with its Content-Encoding)."""
    encoding = headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw, headers, True
    wbits = _DECODERS.get(encoding)
    if wbits is None:
        log.info("a response from %s is %s-encoded: the rule or the suite sees it encoded", where, encoding)
        return raw, headers, False
    try:
        decoder = zlib.decompressobj(wbits)
        body = decoder.decompress(raw, limit + 1)
    except zlib.error:
        try:  # "deflate" as many servers send it: raw, without the zlib wrapper
            decoder = zlib.decompressobj(-zlib.MAX_WBITS)
            body = decoder.decompress(raw, limit + 1)
        except zlib.error as exc:
            log.info("a %s response from %s does not decode (%s): passed on as it came", encoding, where, exc)
            return raw, headers, False
    if len(body) > limit or decoder.unconsumed_tail:
        log.info("a response from %s decodes to over --max-http-body (%d bytes): passed on as it came",
                 where, limit)  # fmt: skip
        return raw, headers, False
    headers = headers.copy()
    headers.popall("Content-Encoding", None)
    return body, headers, True


# -- after: the response streamed on ------------------------------------------------------------------------


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
        length = upstream.content_length
        if length and length <= WATCH_ABOVE and upstream.content.is_eof():
            # The whole body is here already: the head goes out with it, in one write (aiohttp's Response
            # does so; a StreamResponse sends its head at once, a second system call and segment).
            response._send_headers_immediately = False  # noqa: SLF001
        await response.prepare(request)
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
