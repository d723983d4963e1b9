"""`python -m appserver` as a user runs it: flags, clean shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from typing import AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.peers import UpstreamServer, connect_client, receive, suite_connection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_listening(port: int, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


@pytest.fixture
async def appserver_process(no_leaks: None) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, int]]:
    control, proxy = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver", "--no-mitmproxy",
        "--control-port", str(control), "--proxy-port", str(proxy), "--close-timeout", "2",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_listening(proxy)
        yield proc, control, proxy
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


def test_help_lists_flags() -> None:
    """--help lists every address and timeout flag."""
    out = subprocess.run([sys.executable, "-m", "appserver", "--help"], capture_output=True, text=True, check=True)
    for flag in ("--control-port", "--proxy-port", "--default-upstream", "--transform-timeout", "--upstream-ca"):
        assert flag in out.stdout


def test_bad_flag_is_a_clear_error() -> None:
    """A bad flag value fails at once with a message naming it."""
    out = subprocess.run(
        [sys.executable, "-m", "appserver", "--default-upstream", "ftp://x"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "--default-upstream" in out.stderr and "ws://" in out.stderr


def test_port_taken_is_a_clear_error() -> None:
    """A port already in use makes the app server exit 1 saying so."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "appserver", "--no-mitmproxy", "--control-port", str(port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert out.returncode == 1
    assert "could not start" in out.stderr and "address already in use" in out.stderr.lower()


async def test_sigterm_closes_everything_with_1001(
    appserver_process: tuple[asyncio.subprocess.Process, int, int],
    upstream: UpstreamServer,
    http: aiohttp.ClientSession,
) -> None:
    """On SIGTERM the client and the upstream get 1001, the suite's socket closes, and the exit code is 0."""
    proc, control, proxy = appserver_process
    async with suite_connection(http, control) as suite:
        assert (await suite.request("startInterception", {"mode": "proxy"}))["result"] == {}
        client = await connect_client(http, proxy, upstream.host)
        _, server = await upstream.next()
        os.kill(proc.pid, signal.SIGTERM)
        to_client, to_server = await asyncio.gather(receive(client), receive(server))
        assert (to_client.type, to_client.data) == (WSMsgType.CLOSE, 1001)
        assert (to_server.type, to_server.data) == (WSMsgType.CLOSE, 1001)
        await asyncio.gather(
            client.send_frame(b"\x03\xe9", WSMsgType.CLOSE), server.send_frame(b"\x03\xe9", WSMsgType.CLOSE)
        )
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        await client.close()


def test_every_config_field_is_one_declared_option() -> None:
    """Each Config field is declared once, with its flag and help: the parser is made from them, no argument
    gives the defaults, and each flag sets its field."""
    import dataclasses

    from appserver.config import Config, from_args, parser

    flags = {action.dest: action.option_strings for action in parser()._actions if action.dest != "help"}
    assert set(flags) == {f.name for f in dataclasses.fields(Config)}
    assert from_args([]) == Config()
    changed = from_args(["--no-mitmproxy", "--no-trace", "--no-ipv6-loopback", "--upstream-insecure", "--uts-port",
                         "9100", "--trace-limit", "5", "--route", "*.x=ws://127.0.0.1:1", "--idle-warning", "-1"])
    assert (changed.launch_mitmproxy, changed.trace, changed.ipv6_loopback, changed.upstream_insecure,
            changed.uts_port, changed.trace_limit, changed.idle_warning) == (False, False, False, True, 9100, 5, 0.0)
    assert [pattern for pattern, _ in changed.routes] == ["*.x"]
