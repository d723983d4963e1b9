"""An HTTP response a rule or the suite changes (SPEC Part 4): replaceResponse, patchResponse, and the
suite's transformInterceptedHttpResponse.

Only what the change needs is held: a status or headers edit streams the body
as it comes; a new body never reads the upstream's; a patch or the suite's
transform reads the body whole, up to ``--max-http-body``. A body over that is
not held at all: it streams on unchanged (a status or headers edit still
applies) and the log says the rule or the suite did not see it. A body read
whole is given to the rule or the suite decoded (gzip, deflate), and answered
without its Content-Encoding.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from appserver.relay.headers import end_to_end, mark_relayed
from appserver.relay.http_verdicts import Outgoing, before_forwarding
from appserver.verdict import HttpDrop, HttpGate, HttpResponse, HttpVerdict, ResponseEdit
from shared.connections import ConnectionOpened
from shared.dotted import path_set, path_unset
from yarl import URL

log = logging.getLogger("appserver.relay.http")

_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass
class Streaming:
    """An upstream response to stream to the client: its status and headers (as a rule may have changed them)
    and what of its body was read already."""

    upstream: aiohttp.ClientResponse
    status: int
    headers: CIMultiDict[str]
    prefix: bytes = b""


async def changed(
    request: web.Request, upstream: aiohttp.ClientResponse, out: Outgoing, max_body: int, verdict: HttpVerdict,
    gate: HttpGate, info: ConnectionOpened,
) -> web.StreamResponse | Streaming:  # fmt: skip
    """Change what came back from the one forward (http.py): a whole answer, or (Streaming) a response to stream
    on."""
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
            raw, complete = await _read_within(upstream, max_body, out.method == "HEAD")
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            upstream.close()
            log.info("upstream %s failed mid-body: %r; dropping the client's connection", out.url, exc)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499)  # nobody reads it
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
            return await before_forwarding(request, HttpVerdict(drop=answer), URL(info.url)) or web.Response()
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


async def _read_within(upstream: aiohttp.ClientResponse, limit: int, head: bool) -> tuple[bytes, bool]:
    """The body as it came (still encoded), up to a little over ``limit``, and whether that is all of it."""
    if head:
        return b"", True
    if upstream.content_length is not None and upstream.content_length > limit:
        return b"", False
    chunks: list[bytes] = []
    size = 0
    async for chunk in upstream.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), False
    return b"".join(chunks), True


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
