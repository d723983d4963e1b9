"""The redirector's one piece of I/O besides mitmproxy's: the mitmproxyReady notification."""

import json
import logging

import websockets

from shared.constants import METHOD_MITMPROXY_READY

logger = logging.getLogger(__name__)

NOTIFY_TIMEOUT = 5.0


async def notify_ready(url: str) -> None:
    """A JSON-RPC 2.0 notification (no id, no params) as one text frame; errors are logged."""
    message = json.dumps({"jsonrpc": "2.0", "method": METHOD_MITMPROXY_READY})
    try:
        # proxy=None: an HTTP(S)_PROXY in our environment may point at mitmproxy itself.
        async with websockets.connect(url, proxy=None, open_timeout=NOTIFY_TIMEOUT) as ws:
            await ws.send(message)
        logger.info("sent %s to %s", METHOD_MITMPROXY_READY, url)
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        logger.error("could not send %s to %s: %s", METHOD_MITMPROXY_READY, url, exc)
