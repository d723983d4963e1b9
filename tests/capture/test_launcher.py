"""The launcher and the redirector inside real mitmdump processes (loopback only)."""

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import websockets
import websockets.asyncio.server

from appserver.capture import modes as modes_module, processes
from appserver.capture import local as local_capture
from appserver.capture.launcher import LaunchError, LauncherSettings, MitmproxyLauncher, ProxyMode
from appserver.capture.local import CANARY_PATH
from tests.mitm_helpers import (LOOPBACK, STAND_IN_PREFIX, StandInAppServer, ca_cert_path, free_port, http_target,
                          launched, listening_socket, marker, pids_with_arg,
                          wait_until, ws_connect_via_proxy)
from tests.mitm_helpers import settings, stand_in  # noqa: F401 - fixtures are found by name
from shared.constants import HEADER_TEST_HOST, HEADER_TEST_PROTO

# no_leaks (conftest): every task and socket a test opened is gone once its fixtures are.
pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("no_leaks")]


@pytest.fixture
async def proxy_launcher(settings: LauncherSettings, stand_in: StandInAppServer) -> AsyncIterator[MitmproxyLauncher]:
    async with launched(settings, stand_in) as launcher:
        await launcher.ensure(ProxyMode.PROXY)
        yield launcher


# -- proxy mode -------------------------------------------------------------

async def test_ws_upgrade_redirected(proxy_launcher: MitmproxyLauncher, settings: LauncherSettings,
                                     stand_in: StandInAppServer) -> None:
    """A ws:// upgrade through mitmdump reaches the app server with Ably-Test-Host/Proto, path and query verbatim."""
    target_port = free_port()  # nothing listens there: lazy strategy never dials it
    url = f"ws://{LOOPBACK}:{target_port}/some/path?v=6&format=json&x=%2F"
    async with ws_connect_via_proxy(url, settings.listen_port) as ws:
        await ws.send("hello")
        assert await ws.recv() == STAND_IN_PREFIX + "hello"
    [upgrade] = stand_in.upgrades
    assert upgrade.path_qs == "/some/path?v=6&format=json&x=%2F"
    assert upgrade.headers[HEADER_TEST_HOST] == f"{LOOPBACK}:{target_port}"
    assert upgrade.headers[HEADER_TEST_PROTO] == "ws"


async def test_wss_upgrade_redirected(proxy_launcher: MitmproxyLauncher, settings: LauncherSettings,
                                      stand_in: StandInAppServer, tmp_path: Path) -> None:
    """A wss:// upgrade (client trusts mitmproxy's CA) arrives as plain HTTP stamped Ably-Test-Proto wss."""
    assert ca_cert_path(tmp_path).exists()
    target_port = free_port()
    async with ws_connect_via_proxy(f"wss://localhost:{target_port}/?v=6", settings.listen_port, tmp_path) as ws:
        await ws.send("secure")
        assert await ws.recv() == STAND_IN_PREFIX + "secure"
    [upgrade] = stand_in.upgrades
    assert upgrade.headers[HEADER_TEST_HOST] == f"localhost:{target_port}"
    assert upgrade.headers[HEADER_TEST_PROTO] == "wss"
    assert upgrade.path_qs == "/?v=6"


async def test_client_test_headers_replaced(proxy_launcher: MitmproxyLauncher, settings: LauncherSettings,
                                            stand_in: StandInAppServer) -> None:
    """Ably-Test-* headers sent by the client never reach the app server."""
    headers = {HEADER_TEST_HOST: "evil.example", HEADER_TEST_PROTO: "wss"}
    url = f"ws://{LOOPBACK}:{free_port()}/"
    async with ws_connect_via_proxy(url, settings.listen_port, additional_headers=headers):
        pass
    [upgrade] = stand_in.upgrades
    assert upgrade.headers[HEADER_TEST_HOST].startswith(f"{LOOPBACK}:")
    assert upgrade.headers[HEADER_TEST_PROTO] == "ws"


async def test_plain_http_redirected(proxy_launcher: MitmproxyLauncher, settings: LauncherSettings,
                                     stand_in: StandInAppServer) -> None:
    """A plain HTTP GET through mitmdump goes to the app server (never its target), stamped Ably-Test-Proto http."""
    async with http_target() as (port, seen), aiohttp.ClientSession() as session:
        async with session.get(f"http://{LOOPBACK}:{port}/hello?x=1",
                               proxy=f"http://{LOOPBACK}:{settings.listen_port}") as response:
            assert response.status == 200
            assert await response.text() == f"{STAND_IN_PREFIX}{LOOPBACK}:{port}"
    assert seen == []
    [plain] = stand_in.plain
    assert plain.path_qs == "/hello?x=1" and plain.headers[HEADER_TEST_PROTO] == "http"
    assert stand_in.upgrades == []


async def test_ensure_same_mode_is_noop(proxy_launcher: MitmproxyLauncher, settings: LauncherSettings) -> None:
    """ensure() in the mode already running returns at once and keeps the same process."""
    before = pids_with_arg(marker(settings))
    await asyncio.wait_for(proxy_launcher.ensure(ProxyMode.PROXY), 1)
    assert pids_with_arg(marker(settings)) == before
    assert proxy_launcher.running_mode == (ProxyMode.PROXY, None)


async def test_concurrent_ensure_starts_once(settings: LauncherSettings, stand_in: StandInAppServer) -> None:
    """Concurrent ensure() calls are serialised: one mitmdump, one mitmproxyReady."""
    async with launched(settings, stand_in) as launcher:
        await asyncio.gather(*(launcher.ensure(ProxyMode.PROXY) for _ in range(3)))
        assert len(pids_with_arg(marker(settings))) == 1
        assert stand_in.ready_count == 1


async def test_stop_leaves_nothing(settings: LauncherSettings, stand_in: StandInAppServer) -> None:
    """stop() ends mitmdump and its whole process group; a second stop() is harmless."""
    async with launched(settings, stand_in) as launcher:
        await launcher.ensure(ProxyMode.PROXY)
        [pid] = pids_with_arg(marker(settings))
        await launcher.stop()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
        assert launcher.running_mode is None
        await launcher.stop()


async def test_restart_after_crash(settings: LauncherSettings, stand_in: StandInAppServer,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """A mitmdump that dies is logged at ERROR, and the next ensure() starts a new one."""
    async with launched(settings, stand_in) as launcher:
        await launcher.ensure(ProxyMode.PROXY)
        [pid] = pids_with_arg(marker(settings))
        os.kill(pid, signal.SIGKILL)
        assert await wait_until(lambda: launcher.running_mode is None)
        assert await wait_until(lambda: any(r.levelname == "ERROR" and "unexpectedly" in r.getMessage()
                                            for r in caplog.records))
        await launcher.ensure(ProxyMode.PROXY)
        assert pids_with_arg(marker(settings)) not in ([], [pid])


# -- failures ----------------------------------------------------------------

async def test_port_taken(settings: LauncherSettings, stand_in: StandInAppServer) -> None:
    """A listen port already in use gives a LaunchError that says so, and leaves nothing running."""
    with listening_socket() as port:
        busy = LauncherSettings(**{**settings.__dict__, "listen_port": port})
        async with launched(busy, stand_in) as launcher:
            with pytest.raises(LaunchError, match=f"{port} is already in use"):
                await launcher.ensure(ProxyMode.PROXY)
            assert launcher.running_mode is None
    assert pids_with_arg(marker(settings)) == []


async def test_port_taken_detected_from_output(settings: LauncherSettings, stand_in: StandInAppServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """If the port is taken after the pre-check, mitmdump's own exit is reported with its output tail."""
    monkeypatch.setattr(modes_module, "port_in_use", lambda host, port: False)
    with listening_socket() as port:
        busy = LauncherSettings(**{**settings.__dict__, "listen_port": port})
        async with launched(busy, stand_in) as launcher:
            with pytest.raises(LaunchError, match="already in use") as info:
                await launcher.ensure(ProxyMode.PROXY)
    assert "last lines of mitmdump's output" in str(info.value)
    assert pids_with_arg(marker(settings)) == []


async def test_binary_missing(settings: LauncherSettings, stand_in: StandInAppServer, tmp_path: Path) -> None:
    """A mitmdump binary that does not exist gives a LaunchError naming it."""
    missing = str(tmp_path / "no-such-mitmdump")
    async with launched(LauncherSettings(**{**settings.__dict__, "mitmdump": missing}), stand_in) as launcher:
        with pytest.raises(LaunchError, match="mitmdump binary not found"):
            await launcher.ensure(ProxyMode.PROXY)
        assert launcher.running_mode is None


async def test_not_ready_in_time(settings: LauncherSettings, stand_in: StandInAppServer) -> None:
    """No mitmproxyReady within ready_timeout: LaunchError with the output tail, and mitmdump is stopped."""
    slow = LauncherSettings(**{**settings.__dict__, "ready_timeout": 3.0})
    async with launched(slow, stand_in) as launcher:
        stand_in.on_ready = lambda: None  # the readiness never reaches the launcher
        with pytest.raises(LaunchError, match=r"not ready within 3s(.|\n)*listening at"):
            await launcher.ensure(ProxyMode.PROXY)
        assert pids_with_arg(marker(settings)) == []


async def test_bad_option_reported(settings: LauncherSettings, stand_in: StandInAppServer) -> None:
    """A bad addon option makes mitmdump exit; the LaunchError carries the addon's message."""
    bad = LauncherSettings(**{**settings.__dict__, "appserver_proxy": "nonsense"})
    async with launched(bad, stand_in) as launcher:
        with pytest.raises(LaunchError, match="appserver_proxy"):
            await launcher.ensure(ProxyMode.PROXY)
    assert pids_with_arg(marker(settings)) == []


# -- local mode ---------------------------------------------------------------

CLIENT = textwrap.dedent("""
    import asyncio, sys, websockets
    async def main():
        sys.stdin.readline()  # wait for "go": capture applies to sockets created after it starts
        async with websockets.connect(sys.argv[1], proxy=None, open_timeout=10) as ws:
            await ws.send("who answers?")
            print(await ws.recv(), flush=True)
    asyncio.run(main())
""")


async def echo_direct(ws: websockets.asyncio.server.ServerConnection) -> None:
    async for message in ws:
        await ws.send(f"direct:{message!s}")


async def run_client(proc: asyncio.subprocess.Process) -> str:
    out, _ = await asyncio.wait_for(proc.communicate(b"go\n"), 20)
    assert proc.returncode == 0
    return out.decode().strip()


async def spawn_client(url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, url, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)


@pytest.fixture
async def two_clients() -> AsyncIterator[tuple[str, asyncio.subprocess.Process, asyncio.subprocess.Process]]:
    """A direct echo server on loopback and two client processes waiting to connect to it."""
    async with websockets.serve(echo_direct, LOOPBACK, 0) as server:
        url = f"ws://{LOOPBACK}:{server.sockets[0].getsockname()[1]}/local?v=6"
        procs = [await spawn_client(url) for _ in range(2)]
        try:
            yield url, procs[0], procs[1]
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()


async def test_local_mode_captures_only_that_pid(settings: LauncherSettings, stand_in: StandInAppServer,
                                                 two_clients: tuple[str, asyncio.subprocess.Process,
                                                                    asyncio.subprocess.Process]) -> None:
    """Local mode by PID: that process's WebSocket goes to the app server, another process's does not."""
    url, captured, other = two_clients
    async with launched(settings, stand_in) as launcher:
        try:
            await launcher.ensure(ProxyMode.LOCAL, captured.pid)
        except LaunchError as exc:
            pytest.skip(f"local capture unavailable on this host: {exc}")
        assert launcher.running_mode == (ProxyMode.LOCAL, captured.pid)
        assert pids_with_arg(str(CANARY_PATH)) == []  # the canary is gone once capture is proven
        assert await run_client(captured) == STAND_IN_PREFIX + "who answers?"
        assert await run_client(other) == "direct:who answers?"
    [upgrade] = stand_in.upgrades
    assert upgrade.headers[HEADER_TEST_HOST] == url.split("/")[2]
    assert upgrade.headers[HEADER_TEST_PROTO] == "ws"
    assert upgrade.path_qs == "/local?v=6"
    assert pids_with_arg(marker(settings)) == []
    assert pids_with_arg(str(CANARY_PATH)) == []


async def test_mode_switch(settings: LauncherSettings, stand_in: StandInAppServer,
                           two_clients: tuple[str, asyncio.subprocess.Process, asyncio.subprocess.Process]) -> None:
    """ensure() in another mode stops the running mitmdump and starts one in the new mode."""
    pid = two_clients[1].pid
    async with launched(settings, stand_in) as launcher:
        await launcher.ensure(ProxyMode.PROXY)
        [proxy_pid] = pids_with_arg(marker(settings))
        try:
            await launcher.ensure(ProxyMode.LOCAL, pid)
        except LaunchError as exc:
            pytest.skip(f"local capture unavailable on this host: {exc}")
        assert launcher.running_mode == (ProxyMode.LOCAL, pid)
        assert proxy_pid not in pids_with_arg(marker(settings))
        await launcher.ensure(ProxyMode.PROXY)
        assert launcher.running_mode == (ProxyMode.PROXY, None)


async def test_local_mode_unknown_pid(settings: LauncherSettings, stand_in: StandInAppServer) -> None:
    """Local mode for a PID that does not exist is a LaunchError, with nothing started."""
    async with launched(settings, stand_in) as launcher:
        with pytest.raises(LaunchError, match="no process with pid"):
            await launcher.ensure(ProxyMode.LOCAL, 2**22 + 1)
    assert pids_with_arg(marker(settings)) == []


@pytest.mark.skipif(sys.platform != "linux", reason="the Linux eBPF redirector's failure modes")
async def test_local_mode_impossible_reported(settings: LauncherSettings, stand_in: StandInAppServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """When the eBPF redirector cannot attach (cgroup2 not where it looks), ensure() says local capture is impossible."""
    # Pretend cgroup2 is already at /sys/fs/cgroup, so no bind mount is made.
    monkeypatch.setattr(local_capture, "cgroup2_mount", lambda: "/sys/fs/cgroup")
    if os.geteuid() != 0 or (Path("/sys/fs/cgroup") / "cgroup.controllers").exists():
        pytest.skip("needs root on a host whose cgroup2 is not at /sys/fs/cgroup")
    async with launched(settings, stand_in) as launcher:
        with pytest.raises(LaunchError, match="local capture is impossible"):
            await launcher.ensure(ProxyMode.LOCAL, os.getpid())
        assert launcher.running_mode is None
    assert pids_with_arg(marker(settings)) == []


@pytest.mark.skipif(sys.platform != "linux", reason="Linux local capture needs root")
async def test_local_mode_needs_root(settings: LauncherSettings, stand_in: StandInAppServer,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Local mode on Linux without root is a LaunchError that says root is needed, with nothing started."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    async with launched(settings, stand_in) as launcher:
        with pytest.raises(LaunchError, match="needs root"):
            await launcher.ensure(ProxyMode.LOCAL, os.getpid())
    assert pids_with_arg(marker(settings)) == [] and pids_with_arg(str(CANARY_PATH)) == []


# -- launcher helpers (no mitmdump) ---------------------------------------------

def test_port_in_use_bind_test() -> None:
    """The pre-check sees a listening port as busy and a free one as free."""
    with listening_socket() as port:
        assert processes.port_in_use(LOOPBACK, port)
    assert not processes.port_in_use(LOOPBACK, free_port())


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/mountinfo")
def test_cgroup2_mount_found() -> None:
    """cgroup2_mount() names a directory that really is a cgroup2 root (it has cgroup.controllers)."""
    mount = local_capture.cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 mounted on this host")
    assert (Path(mount) / "cgroup.controllers").exists()
