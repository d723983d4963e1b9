"""Direct mode's plain HTTP: REST calls, token requests and connectivity checks
relayed to the default upstream unchanged (minus hop-by-hop headers)."""

from __future__ import annotations

import logging
from ssl import SSLContext

import aiohttp
from aiohttp import web
from yarl import URL

from appserver.relay.headers import end_to_end, http_base

log = logging.getLogger(__name__)


async def relay_http(
    request: web.Request, session: aiohttp.ClientSession, upstream: URL, ssl: SSLContext | bool
) -> web.StreamResponse:
    target = URL(str(http_base(upstream)).rstrip("/") + request.raw_path, encoded=True)
    body = await request.read() if request.body_exists else None
    try:
        async with session.request(
            request.method, target, headers=end_to_end(request.headers), data=body,
            allow_redirects=False, auto_decompress=False, ssl=ssl,
        ) as upstream_response:  # fmt: skip
            payload = await upstream_response.read()
            log.debug("relayed %s %s → %s", request.method, target, upstream_response.status)
            return web.Response(
                status=upstream_response.status,
                reason=upstream_response.reason,
                headers=end_to_end(upstream_response.headers),
                body=payload,
            )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.info("could not relay %s %s: %r", request.method, target, exc)
        return web.Response(status=502, text=f"upstream {target} could not be reached: {exc!r}\n")
