"""Local-capture canary: proves that mitmproxy's local mode really captures.

Run as ``python canary.py PORT CANARY_HOST`` (stdlib only, so it can run from
any interpreter). Its PID is put in mitmproxy's capture spec next to the
process under test. It sends a plain-HTTP request to 127.0.0.1:PORT with
``Host: CANARY_HOST`` again and again, each time on a new socket: the Linux
redirector decides at socket creation (a cgroup sock BPF program) whether a
socket is captured, so an old socket would never be. While capture is not
active the request reaches the launcher's own loopback listener, which never
answers 204; once captured, the redirector addon answers 204 itself and sends
mitmproxyReady. Traffic never leaves loopback either way.

``start_listener`` is the launcher's side: that loopback listener.
"""

import asyncio
import http.client
import logging
import sys
import time

logger = logging.getLogger(__name__)

RETRY_INTERVAL = 0.05
REQUEST_TIMEOUT = 1.0


def probe(port: int, host: str) -> bool:
    """True when the redirector (not the launcher's listener) answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("GET", "/", headers={"Host": host, "Connection": "close"})
        return conn.getresponse().status == 204
    except OSError:
        return False  # capture starting up, or the listener went away: retry
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    port, host = int(argv[1]), argv[2]
    while not probe(port, host):
        time.sleep(RETRY_INTERVAL)
    return 0


async def start_listener() -> tuple[asyncio.Server, int]:
    """A loopback listener for canary probes that are NOT captured: never 204."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            logger.debug("canary probe not captured (yet): answered 503")
            writer.write(b"HTTP/1.1 503 Not Captured\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
