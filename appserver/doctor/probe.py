"""`python -m appserver.doctor.probe PORT`: the process doctor captures in local mode.

It waits for a line on stdin (sent once mitmproxy captures it), then, as an
SDK would, opens a WebSocket to ws://127.0.0.1:PORT/doctor, sends the canary
and reads the echo, and GETs http://127.0.0.1:PORT/doctor, each on a new
socket (local capture decides when a socket is made). It prints what it got as
one JSON line and exits.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from typing import Any

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from appserver.doctor.proof import CANARY, TIMEOUT


def main(argv: list[str]) -> int:
    port = int(argv[1])
    sys.stdin.readline()
    result: dict[str, Any] = {}
    try:
        with connect(f"ws://127.0.0.1:{port}/doctor", open_timeout=TIMEOUT, proxy=None) as ws:
            ws.send(CANARY)
            result["ws"] = ws.recv(timeout=TIMEOUT)
    except (OSError, WebSocketException, TimeoutError) as exc:
        result["ws_error"] = repr(exc)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy: as an SDK, directly
    try:
        with opener.open(f"http://127.0.0.1:{port}/doctor", timeout=TIMEOUT) as response:
            result["http"] = [response.status, response.read().decode()]
    except OSError as exc:
        result["http_error"] = repr(exc)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
