"""The redirector's one piece of I/O besides mitmproxy's: its control connection to the app server.

It sends ``mitmproxyReady`` on it, then stays connected and answers the app
server's calls (``setSessionListeners``: SPEC Part 6's per-session listeners)
until the connection closes. Errors are logged; the proxy goes on either way.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import websockets

from shared.constants import METHOD_MITMPROXY_READY

logger = logging.getLogger(__name__)

NOTIFY_TIMEOUT = 5.0

#: Answers one call of the app server: its result, or an exception whose message is the error.
Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


async def notify_ready(url: str, handle: Handler | None = None) -> None:
    """mitmproxyReady as a JSON-RPC 2.0 notification; then, with ``handle``, answer calls until closed."""
    message = json.dumps({"jsonrpc": "2.0", "method": METHOD_MITMPROXY_READY})
    try:
        # proxy=None: an HTTP(S)_PROXY in our environment may point at mitmproxy itself.
        async with websockets.connect(url, proxy=None, open_timeout=NOTIFY_TIMEOUT, max_size=None) as ws:
            await ws.send(message)
            logger.info("sent %s to %s", METHOD_MITMPROXY_READY, url)
            if handle is None:
                return
            async for frame in ws:
                await ws.send(await _answer(frame, handle))
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        logger.error("could not send %s to %s: %s", METHOD_MITMPROXY_READY, url, exc)


async def _answer(frame: str | bytes, handle: Handler) -> str:
    try:
        call = json.loads(frame)
        method, params, call_id = call["method"], call.get("params") or {}, call["id"]
    except (ValueError, KeyError, TypeError):
        return json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "not a call"}})
    try:
        result = await handle(method, params)
    except Exception as exc:  # noqa: BLE001 - told to the caller, never fatal here
        logger.error("%s failed: %s", method, exc)
        return json.dumps({"jsonrpc": "2.0", "id": call_id, "error": {"code": -32000, "message": str(exc)}})
    return json.dumps({"jsonrpc": "2.0", "id": call_id, "result": result})
