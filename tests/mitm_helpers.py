"""Helpers for tests that run a real mitmdump (loopback only).

Reusable by integration tests: free ports, mitmproxy's CA, a `websockets`
client through the proxy, a stand-in app server, a plain HTTP target, and a
process scan to prove nothing was left running. Two fixtures, for tests of the
launcher (import them into the test module; pytest finds fixtures by name):
``stand_in``, a running :class:`StandInAppServer`, and ``settings``, launcher
settings pointing at it (see :func:`marker`).
"""

import asyncio
import contextlib
import json
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import websockets
import websockets.asyncio.client
from aiohttp import WSMsgType, web

from appserver.capture.launcher import LauncherSettings, MitmproxyLauncher
from shared.constants import METHOD_MITMPROXY_READY

LOOPBACK = "127.0.0.1"
STAND_IN_PREFIX = "stand-in:"


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ca_cert_path(confdir: Path) -> Path:
    """mitmproxy's CA certificate (PEM), created in confdir on its first start."""
    return confdir / "mitmproxy-ca-cert.pem"


def client_ssl_context(confdir: Path) -> ssl.SSLContext:
    """A TLS context that trusts mitmproxy's CA from confdir."""
    return ssl.create_default_context(cafile=str(ca_cert_path(confdir)))


def ws_connect_via_proxy(url: str, proxy_port: int, confdir: Path | None = None,
                         **kwargs: object) -> websockets.asyncio.client.connect:
    """websockets client through mitmproxy (it sends CONNECT, which mitmproxy accepts;
    aiohttp's absolute-form GET ws://… is rejected by mitmproxy)."""
    if url.startswith("wss:") and confdir is not None:
        kwargs.setdefault("ssl", client_ssl_context(confdir))
    return websockets.connect(url, proxy=f"http://{LOOPBACK}:{proxy_port}", open_timeout=10,
                              **kwargs)  # type: ignore[arg-type]


def pids_with_arg(marker: str) -> list[int]:
    """PIDs whose command line contains marker (e.g. a per-test confdir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        if marker in cmdline and not is_zombie(entry):
            found.append(int(entry.name))
    return found


def is_zombie(proc_dir: Path) -> bool:
    try:
        return (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@dataclass
class RecordedUpgrade:
    """What the stand-in's proxy endpoint saw of one redirected upgrade."""
    path_qs: str
    headers: dict[str, str]


@dataclass
class StandInAppServer:
    """Control endpoint + proxy endpoint of the app server, as the launcher and
    the redirector see them. The proxy endpoint echoes with STAND_IN_PREFIX."""
    control_port: int = 0
    proxy_port: int = 0
    on_ready: Callable[[], None] = lambda: None
    upgrades: list[RecordedUpgrade] = field(default_factory=list)
    plain: list[RecordedUpgrade] = field(default_factory=list)  # plain HTTP requests redirected
    ready_count: int = 0

    @property
    def control_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.control_port}/"

    @property
    def proxy_endpoint(self) -> str:
        return f"{LOOPBACK}:{self.proxy_port}"

    async def control(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and json.loads(msg.data).get("method") == METHOD_MITMPROXY_READY:
                self.ready_count += 1
                self.on_ready()
        return ws

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":  # plain HTTP, redirected too
            self.plain.append(RecordedUpgrade(request.path_qs, dict(request.headers)))
            return web.Response(text=f"{STAND_IN_PREFIX}{request.headers.get('Ably-Test-Host')}")
        self.upgrades.append(RecordedUpgrade(request.path_qs, dict(request.headers)))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(STAND_IN_PREFIX + msg.data)
        return ws


@contextlib.asynccontextmanager
async def run_app(app: web.Application, port: int = 0) -> AsyncIterator[int]:
    """Serve app on loopback; yields the port; always cleans up."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LOOPBACK, port)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def stand_in_app_server() -> AsyncIterator[StandInAppServer]:
    server = StandInAppServer()
    control_app, proxy_app = web.Application(), web.Application()
    control_app.router.add_get("/", server.control)
    proxy_app.router.add_route("*", "/{tail:.*}", server.proxy)
    async with run_app(control_app) as server.control_port, run_app(proxy_app) as server.proxy_port:
        yield server


@pytest.fixture
async def stand_in(no_leaks: None) -> AsyncIterator[StandInAppServer]:
    async with stand_in_app_server() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, stand_in: StandInAppServer) -> LauncherSettings:
    """Settings for one test: own port, own confdir (also the marker to find its processes)."""
    return LauncherSettings(listen_port=free_port(), appserver_proxy=stand_in.proxy_endpoint,
                            appserver_control=stand_in.control_url, ready_timeout=20.0,
                            extra_args=("--set", f"confdir={tmp_path}"))


def marker(settings: LauncherSettings) -> str:
    """What the command line of every process launched with settings contains (its confdir option)."""
    return settings.extra_args[-1]


@contextlib.asynccontextmanager
async def http_target() -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    """A plain HTTP server answering 200 "target says hi"; yields (port, request headers seen)."""
    seen: list[dict[str, str]] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text="target says hi")
    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    async with run_app(app) as port:
        yield port, seen


@contextlib.asynccontextmanager
async def launched(settings: LauncherSettings, stand_in: StandInAppServer) -> AsyncIterator[MitmproxyLauncher]:
    """A launcher wired to the stand-in's readiness callback; always stopped."""
    launcher = MitmproxyLauncher(settings)
    stand_in.on_ready = launcher.notify_ready
    try:
        yield launcher
    finally:
        await launcher.stop()


@contextlib.contextmanager
def listening_socket(host: str = LOOPBACK) -> Iterator[int]:
    """Occupy a port (listening) for the duration; yields the port."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        sock.listen()
        yield sock.getsockname()[1]


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll predicate until true or timeout; returns its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return predicate()
