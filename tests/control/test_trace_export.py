"""exportTrace (SPEC Part 5): JSON Lines, HAR 1.2 checked by a schema validator and read by a HAR library,
and the timeline of ``python -m appserver.trace``."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from haralyzer import HarEntry, HarParser

from appserver.app import AppServer
from tests.ably_driver import JS_DIR
from tests.control.test_trace import trace, until
from tests.peers import Suite, UpstreamServer, close_cleanly, receive, redirect_headers
from tests.rules.test_rules_relay import add, pair

VALIDATOR = JS_DIR / "validate_har.mjs"


async def traffic(http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite) -> None:
    """One WebSocket connection (an ATTACH passed, a DETACH dropped by rule d, a binary frame back, closed)
    and one HTTP GET relayed to the upstream."""
    await add(suite, {"id": "d", "match": {"action": "DETACH"}, "action": {"type": "drop"}},
              {"match": {}, "action": {"type": "pass"}})  # fmt: skip
    client, server = await pair(http, app_server, upstream, "/?format=json")
    await client.send_str(json.dumps({"action": 10, "channel": "room"}))
    await receive(server)
    await client.send_str(json.dumps({"action": 12, "channel": "room"}))
    await server.send_bytes(b"\x81\xa6action\x0b")  # msgpack {"action": 11}
    await receive(client)
    await close_cleanly(client, server)
    async with http.get(f"http://127.0.0.1:{app_server.proxy_port}/time?x=1",
                        headers=redirect_headers(upstream.host, "http")) as response:  # fmt: skip
        assert response.status == 200
    await until(suite, "http_response")


async def export(suite: Suite, fmt: str, **params: Any) -> str:
    response = await suite.request("exportTrace", {"format": fmt, **params})
    assert "result" in response, response
    return response["result"]["data"]  # type: ignore[no-any-return]


async def test_jsonl_is_the_trace_line_by_line(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite
) -> None:
    await traffic(http, app_server, upstream, suite)
    events = (await trace(suite))["events"]
    text = await export(suite, "jsonl")
    assert text.endswith("\n") and [json.loads(line) for line in text.splitlines()] == events
    cid = events[0]["connectionID"]
    only = [json.loads(line) for line in (await export(suite, "jsonl", connectionID=cid)).splitlines()]
    assert only and all(e.get("connectionID") == cid for e in only)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is needed for the HAR schema validator")
async def test_har_is_valid_and_readable(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite, tmp_path: Path
) -> None:
    """The HAR passes har-validator (the HAR 1.2 JSON Schema) and haralyzer reads it: a WebSocket entry with
    its frames in _webSocketMessages (send/receive, opcode, data, what the proxy did) and an HTTP entry."""
    await traffic(http, app_server, upstream, suite)
    text = await export(suite, "har")
    path = tmp_path / "trace.har"
    path.write_text(text)
    checked = await asyncio.to_thread(subprocess.run, ["node", str(VALIDATOR), str(path)], capture_output=True,
                                      text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0 and checked.stdout.strip() == "valid", checked.stdout + checked.stderr
    har = json.loads(text)
    parser = HarParser(har)
    entries = [HarEntry(entry) for entry in har["log"]["entries"]]
    assert parser.version == "1.2" and len(entries) == 2
    websocket, rest = entries
    assert websocket.request.method == "GET" and websocket.url.startswith(f"ws://{upstream.host}/")
    assert websocket.status == 101 and rest.status == 200 and rest.url == f"http://{upstream.host}/time?x=1"
    assert rest.request.method == "GET" and rest.startTime >= websocket.startTime
    messages = har["log"]["entries"][0]["_webSocketMessages"]
    assert [(m["type"], m["opcode"], m.get("_action"), m.get("_decision")) for m in messages] == [
        ("send", 1, "ATTACH", None), ("send", 1, "DETACH", "drop"), ("receive", 2, "ATTACHED", None)]
    assert json.loads(messages[0]["data"]) == {"action": 10, "channel": "room"}
    assert messages[1]["_ruleId"] == "d" and all(isinstance(m["time"], float) for m in messages)


async def test_the_timeline(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite, tmp_path: Path
) -> None:
    """python -m appserver.trace FILE: one line per event, times from the first, c1/h2 for the connection
    and the exchange, direction, Ably action and channel, what was decided."""
    await traffic(http, app_server, upstream, suite)
    path = tmp_path / "trace.jsonl"
    path.write_text(await export(suite, "jsonl"))
    shown = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "appserver.trace", str(path)],
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert re.fullmatch(r" *\+0\.000 ms  c1   open ws://\S+ → ws://\S+", lines[0])
    assert any(re.fullmatch(r" *\+\d+\.\d{3} ms  c1   → server  ATTACH ch=room  \(\d+ B\)  \[rule \S+: pass\]", line)
               for line in lines), lines  # fmt: skip
    assert any(line.endswith("c1   → server  DETACH ch=room  (33 B)  [rule d: drop]") for line in lines), lines
    assert any("c1   ← server  ATTACHED" in line for line in lines)
    assert any("closed by client: 1000" in line for line in lines)
    assert any(re.search(r"h2   GET http://\S+/time\?x=1$", line) for line in lines), lines
    assert any("h2     → 200" in line for line in lines), lines


def test_the_timeline_of_a_file_that_is_not_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "not.jsonl"
    path.write_text('{"kind": "open", "t": 1}\nnot json\n')
    shown = subprocess.run([sys.executable, "-m", "appserver.trace", str(path)], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert shown.returncode == 2 and "line 2 is not JSON" in shown.stderr
    missing = subprocess.run([sys.executable, "-m", "appserver.trace", str(tmp_path / "none")], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and "cannot read" in missing.stderr


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(shutil.which("node") is None or not CHROMIUM.exists(),
                    reason="needs node and Debian's chromium for Playwright's HAR router")
async def test_chromium_replays_the_har(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, suite: Suite, tmp_path: Path
) -> None:
    """Playwright's HAR router (Chromium tooling) reads the exported HAR: a page opening the traced URL, with
    nothing else to answer it, gets the traced response."""
    url = f"http://{upstream.host}/rest/time"
    async with http.get(f"http://127.0.0.1:{app_server.proxy_port}/rest/time",
                        headers=redirect_headers(upstream.host, "http")) as response:  # fmt: skip
        traced = await response.text()
    await until(suite, "http_response")
    path = tmp_path / "trace.har"
    path.write_text(await export(suite, "har"))
    await upstream.stop()  # the HAR is all there is to answer the page
    replayed = await asyncio.to_thread(subprocess.run, ["node", str(JS_DIR / "replay_har.mjs"), str(path), url],
                                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    page = json.loads(replayed.stdout.strip().splitlines()[-1])
    assert page["status"] == 200 and json.loads(page["body"]) == json.loads(traced)
