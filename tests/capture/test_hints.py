"""SPEC Part 9 / issue 20.8, hints that do not mislead: `make run-proxy` says what works per runtime (ably-js in
Node ignores HTTPS_PROXY for realtime), an active suite that sees no connection is warned about, and a WebSocket
to the proxy endpoint with no target gets a 400 saying which port is which."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import aiohttp
import pytest

from appserver.app import AppServer
from tests.capture.test_entry_point import free_port
from tests.conftest import make_config, running_app_server
from tests.peers import UpstreamServer, close_cleanly, connect_client, suite_connection


async def test_run_proxy_says_what_works_for_each_runtime(no_leaks: None, tmp_path: Path) -> None:
    control, proxy, mitm = free_port(), free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver", "--start-mitmproxy", "proxy", "--control-port", str(control),
        "--proxy-port", str(proxy), "--mitmproxy-port", str(mitm), "--mitmproxy-confdir", str(tmp_path / "conf"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    printed: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any("test suites connect to the control API" in line for line in printed):
                line = (await proc.stderr.readline()).decode()
                assert line, "the app server stopped: " + "".join(printed)
                printed.append(line)
    finally:
        proc.terminate()
        await proc.communicate()
    text = "".join(printed)
    node = next(line for line in printed if "ably-js in Node" in line)
    assert "ignores HTTPS_PROXY" in node and "run-local" in node
    assert f"{{endpoint: '127.0.0.1', port: {proxy}, tls: false, fallbackHosts: []}}" in node
    assert f'--proxy-server=http://127.0.0.1:{mitm} --proxy-bypass-list="<-loopback>"' in text
    proxy_variable_lines = [line for line in printed if f"HTTPS_PROXY=http://127.0.0.1:{mitm}" in line]
    assert proxy_variable_lines and all("ably-python" in line for line in proxy_variable_lines)
    assert proc.returncode == 0


async def test_an_active_suite_that_sees_no_connection_is_warned(
    no_leaks: None, http: aiohttp.ClientSession, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    async with running_app_server(make_config(idle_warning=0.3)) as server:
        async with suite_connection(http, server.control_port) as suite:
            assert "result" in await suite.request("startInterception", {"mode": "proxy"})
            await asyncio.sleep(0.6)
            warned = [r for r in caplog.records if r.levelno == logging.WARNING and "no connection came" in r.message]
            assert len(warned) == 1 and "HTTPS_PROXY" in warned[0].message
        caplog.clear()
        async with suite_connection(http, server.control_port) as suite:  # one whose SDK came through
            assert "result" in await suite.request("startInterception", {"mode": "proxy"})
            client = await connect_client(http, server.proxy_port, upstream.host)
            _, upstream_ws = await upstream.next()
            await asyncio.sleep(0.6)
            assert not [r for r in caplog.records if "no connection came" in r.message]
            await close_cleanly(client, upstream_ws)


async def test_a_websocket_with_no_target_is_told_which_port_is_which(
    http: aiohttp.ClientSession, app_server: AppServer,
) -> None:  # fmt: skip
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"ws://127.0.0.1:{app_server.proxy_port}/")
    assert refused.value.status == 400
    async with http.get(f"http://127.0.0.1:{app_server.proxy_port}/",
                        headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as response:  # fmt: skip
        body = await response.text()
    assert response.status == 400
    assert "proxy endpoint" in body and f"control API at ws://127.0.0.1:{app_server.control_port}/" in body


def listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("how", ["SIGTERM to make", "SIGINT to its group (Ctrl-C)"])
def test_make_run_proxy_stops_everything_when_signalled(no_leaks: None, tmp_path: Path, how: str) -> None:
    """`make run-proxy` stops the app server and mitmdump: make passes SIGTERM on to them, and Ctrl-C reaches the
    whole foreground group. (A SIGINT sent to make's pid alone is not passed on by GNU make.)"""
    import os
    import signal
    import subprocess
    import time

    from tests.mitm_helpers import pids_with_arg

    root = Path(__file__).parents[2]
    confdir = str(tmp_path / "conf")
    control, proxy, mitm = free_port(), free_port(), free_port()
    args = f"--control-port {control} --proxy-port {proxy} --mitmproxy-port {mitm} --mitmproxy-confdir {confdir}"
    make = subprocess.Popen(["make", "--no-print-directory", "run-proxy", f"ARGS={args}"], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not listening(mitm) or not listening(control):  # mitmdump up, and the app server
            assert make.poll() is None and time.monotonic() < deadline, "make run-proxy did not start"
            time.sleep(0.2)
        assert len(pids_with_arg(confdir)) >= 3  # make, the app server, mitmdump
        if how.startswith("SIGTERM"):
            make.send_signal(signal.SIGTERM)
        else:
            os.killpg(make.pid, signal.SIGINT)
        make.wait(timeout=20)
        deadline = time.monotonic() + 10
        while pids_with_arg(confdir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids_with_arg(confdir) == [], "left running after make run-proxy was signalled"
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
        for pid in pids_with_arg(confdir):
            os.kill(pid, signal.SIGKILL)
        if make.stderr is not None:
            make.stderr.close()
