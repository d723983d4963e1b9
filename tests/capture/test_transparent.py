"""Transparent mode by user id (Linux, root): iptables rules send one uid's TCP to a real mitmdump.

The rules' commands are checked without running anything. The rest needs root
and iptables (scripts/system-deps installs it) and is skipped, with the reason,
otherwise. Those tests redirect a random unused uid (not a real account, so a
machine's own users and parallel test runs are never affected) and run the
WebSocket client as that uid: a child of this interpreter that imports
``websockets`` as root, then drops to the uid before it opens a socket (the
venv's interpreter may live under /root, which other users cannot read, so
``setpriv`` + the venv's python is not an option everywhere). iptables' owner
match looks at the socket's owner, so this is the same as ``setpriv``.

Whatever happens, no rule and no mitmdump is left behind: every fixture removes
the chain in ``finally`` and then checks ``iptables -t nat -S``.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from aiohttp import WSMsgType

from appserver.capture import processes
from appserver.capture import transparent
from appserver.app import AppServer
from appserver.config import from_args
from appserver.capture.launcher import LaunchError, LauncherSettings, MitmproxyLauncher, ProxyMode
from appserver.capture.transparent import RedirectRules
from shared.constants import HEADER_TEST_HOST
from tests.conftest import launching_config
from tests.mitm_helpers import StandInAppServer, free_port, launched, marker, pids_with_arg, wait_until
from tests.mitm_helpers import settings, stand_in  # noqa: F401 - fixtures are found by name
from tests.peers import UpstreamServer, receive, suite_connection

REPO = Path(__file__).resolve().parents[2]


# -- the rules, as commands (no root needed) ----------------------------------------------

def test_setup_commands() -> None:
    """Chain, exclusions, redirect, and only then the jump from OUTPUT, matching that uid's TCP only."""
    rules = RedirectRules(uid=1234, to_port=9000, exclude_ports=(8001, 8002, 8001), iptables="/sbin/iptables")
    nat = ["/sbin/iptables", "-w", "-t", "nat"]
    assert rules.setup_commands() == [
        [*nat, "-N", "ABLY_INTERCEPT_1234"],
        [*nat, "-A", "ABLY_INTERCEPT_1234", "-p", "tcp", "-m", "addrtype", "--dst-type", "LOCAL",
         "--dport", "8001", "-j", "RETURN"],
        [*nat, "-A", "ABLY_INTERCEPT_1234", "-p", "tcp", "-m", "addrtype", "--dst-type", "LOCAL",
         "--dport", "8002", "-j", "RETURN"],
        [*nat, "-A", "ABLY_INTERCEPT_1234", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "9000"],
        [*nat, "-I", "OUTPUT", "-p", "tcp", "-m", "owner", "--uid-owner", "1234", "-j", "ABLY_INTERCEPT_1234"],
    ]  # fmt: skip


def test_teardown_commands() -> None:
    """The jump goes first (traffic flows directly at once), then the chain's rules, then the chain."""
    rules = RedirectRules(uid=1234, to_port=9000)
    assert rules.teardown_commands() == [
        ["iptables", "-w", "-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-m", "owner", "--uid-owner", "1234",
         "-j", "ABLY_INTERCEPT_1234"],
        ["iptables", "-w", "-t", "nat", "-F", "ABLY_INTERCEPT_1234"],
        ["iptables", "-w", "-t", "nat", "-X", "ABLY_INTERCEPT_1234"],
    ]  # fmt: skip


@pytest.mark.parametrize("kwargs", [dict(uid=0, to_port=9000), dict(uid=5, to_port=0),
                                    dict(uid=5, to_port=9000, exclude_ports=(70000,))])
def test_rules_validated(kwargs: dict[str, Any]) -> None:
    """Root is never a target (mitmdump's own traffic would loop); ports must be ports."""
    with pytest.raises(ValueError):
        RedirectRules(**kwargs)


def test_target_uid() -> None:
    """A name or a number (no passwd entry needed); root and unknown names are refused."""
    assert transparent.target_uid("nobody") == pwd.getpwnam("nobody").pw_uid
    assert transparent.target_uid("4242424") == 4242424
    for user in ("root", "0"):
        with pytest.raises(ValueError, match="must not be root"):
            transparent.target_uid(user)
    with pytest.raises(ValueError, match="no such user"):
        transparent.target_uid("no-such-user-here")


def test_start_mitmproxy_flag() -> None:
    """--start-mitmproxy transparent:USER is accepted for a real user, refused for root or no user."""
    assert from_args(["--start-mitmproxy", "transparent:nobody"]).start_mitmproxy == "transparent:nobody"
    for bad in ("transparent:", "transparent:root", "transparent:no-such-user-here"):
        with pytest.raises(SystemExit):
            from_args(["--start-mitmproxy", bad])


def test_show_removal_commands() -> None:
    """`python -m appserver.transparent show USER` prints the commands that undo the rules by hand."""
    out = subprocess.run([sys.executable, "-m", "appserver.transparent", "show", "4242"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    rules = RedirectRules(4242, 1, iptables=transparent.find_iptables() or "iptables")
    assert out.splitlines() == [transparent.shell_line(c) for c in rules.teardown_commands()]


def test_make_target_needs_user() -> None:
    """`make run-transparent` without USER= prints its usage, although USER is set in the environment."""
    result = subprocess.run(["make", "-s", "run-transparent"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "USER": "root"}, timeout=60)
    assert result.returncode == 2
    assert "usage: make run-transparent USER=" in result.stderr


# -- the launcher's checks before anything starts (no root needed) ----------------------

@pytest.mark.skipif(sys.platform != "linux", reason="transparent mode by uid is Linux only")
async def test_needs_root(settings: LauncherSettings, stand_in: StandInAppServer,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root: a LaunchError that says root is needed, and nothing started."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    async with launched(settings, stand_in) as launcher:
        with pytest.raises(LaunchError, match="needs root"):
            await launcher.ensure(ProxyMode.TRANSPARENT, uid=4242)
    assert pids_with_arg(marker(settings)) == []


@pytest.mark.skipif(sys.platform != "linux", reason="transparent mode by uid is Linux only")
async def test_no_uid_or_root_uid(settings: LauncherSettings, stand_in: StandInAppServer,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No uid, or mitmdump's own uid (root): refused before anything starts."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    async with launched(settings, stand_in) as launcher:
        with pytest.raises(LaunchError, match="needs the uid"):
            await launcher.ensure(ProxyMode.TRANSPARENT)
        with pytest.raises(LaunchError, match="cannot capture uid 0"):
            await launcher.ensure(ProxyMode.TRANSPARENT, uid=0)
    assert pids_with_arg(marker(settings)) == []


@pytest.mark.skipif(sys.platform != "linux", reason="transparent mode by uid is Linux only")
async def test_iptables_missing(settings: LauncherSettings, stand_in: StandInAppServer, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """No iptables binary: a LaunchError that says how to install it, and nothing started."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    missing = LauncherSettings(**{**settings.__dict__, "iptables": str(tmp_path / "no-such-iptables")})
    async with launched(missing, stand_in) as launcher:
        with pytest.raises(LaunchError, match="apt-get install -y iptables"):
            await launcher.ensure(ProxyMode.TRANSPARENT, uid=4242)
    assert pids_with_arg(marker(settings)) == []


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_exited_before_reaped() -> None:
    """A killed child counts as exited before anyone reaps it (so a restart is not skipped)."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert not processes.exited(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not processes.exited(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert processes.exited(child.pid)
        assert child.returncode is None  # not reaped yet
    finally:
        child.kill()
        child.wait()
    assert processes.exited(child.pid)


# -- real rules, real mitmdump (root and iptables) -------------------------------------------

IPTABLES = transparent.find_iptables()


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "transparent mode by uid needs Linux"
    if os.geteuid() != 0:
        return "transparent mode needs root (iptables rules); run the tests as root"
    if IPTABLES is None:
        return "iptables is not installed (apt-get install -y iptables; make test does it as root)"
    probe = subprocess.run([IPTABLES, "-w", "-t", "nat", "-S", "OUTPUT"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"iptables' nat table is unusable here: {probe.stderr.strip()}"
    return None


SKIP_REASON = _skip_reason()
needs_iptables = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
if SKIP_REASON is not None:  # in the warnings summary, so the reason shows without -rs
    warnings.warn(f"test_transparent: the iptables tests are skipped: {SKIP_REASON}", stacklevel=1)


def nat_rules() -> str:
    command = [IPTABLES or "iptables", "-w", "-t", "nat", "-S"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def target_uid() -> Iterator[int]:
    """An unused uid (no passwd entry) whose traffic the test redirects; its rules are gone afterwards,
    even when the test failed."""
    known = {entry.pw_uid for entry in pwd.getpwall()}
    uid = random.choice([u for u in range(200_000, 200_500) if u not in known])
    rules = RedirectRules(uid=uid, to_port=1, iptables=IPTABLES or "iptables")
    try:
        yield uid
    finally:
        leftover = rules.chain in nat_rules()
        transparent.remove(rules)
        assert rules.chain not in nat_rules(), "could not remove the test's iptables rules"
        assert not leftover, f"iptables rules left behind: chain {rules.chain}"


CLIENT = textwrap.dedent("""
    import asyncio, encodings.idna, os, sys
    import websockets, websockets.asyncio.client
    url, uid = sys.argv[1], int(sys.argv[2])
    # Imports done as root (the idna codec too: the resolver imports it lazily, after the files are out of
    # reach); from here on this process is that uid, like setpriv --reuid --regid --clear-groups.
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
    assert (os.getuid(), os.geteuid(), os.getgid()) == (uid, uid, uid)
    async def main():
        async with websockets.connect(url, proxy=None, open_timeout=10, close_timeout=5) as ws:
            await ws.send("hello")
            print(await asyncio.wait_for(ws.recv(), 10), flush=True)
    asyncio.run(main())
""")


async def run_client_as(uid: int, url: str) -> str:
    """A WebSocket client as that uid: sends "hello", prints the first message it gets back."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, url, str(uid),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def serve_one(upstream: UpstreamServer) -> tuple[dict[str, str], str]:
    """Upstream side of one client: its headers and first message; answers "reply", then the close."""
    request, server = await upstream.next(timeout=20)
    message = (await receive(server, timeout=10)).data
    await server.send_str("reply")
    async with asyncio.timeout(10):
        while (await server.receive()).type is not WSMsgType.CLOSE:
            pass
    await server.send_frame(b"\x03\xe8", WSMsgType.CLOSE)
    return dict(request.headers), message


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    return tmp_path / "mitmproxy-conf"


@pytest.fixture
async def transparent_stack(no_leaks: None, confdir: Path, target_uid: int) -> AsyncIterator[AppServer]:
    """A real app server whose launcher runs mitmdump in transparent mode for target_uid."""
    server = AppServer(launching_config(confdir))
    await server.start()
    try:
        assert isinstance(server.launcher, MitmproxyLauncher)
        await server.launcher.ensure(ProxyMode.TRANSPARENT, uid=target_uid)
        yield server
    finally:
        await server.stop()
        assert pids_with_arg(str(confdir)) == [], "mitmdump left running after the app server stopped"
        assert f"--uid-owner {target_uid}" not in nat_rules(), "iptables rules left after the app server stopped"


@needs_iptables
@pytest.mark.timeout(120)
async def test_target_uid_redirected_root_not(transparent_stack: AppServer, target_uid: int, confdir: Path,
                                              upstream: UpstreamServer, http: aiohttp.ClientSession) -> None:
    """That uid's WebSocket reaches the app server (the suite sees and transforms it); root's goes direct."""
    rules = nat_rules()
    assert f"-A OUTPUT -p tcp -m owner --uid-owner {target_uid} -j ABLY_INTERCEPT_{target_uid}" in rules
    async with suite_connection(http, transparent_stack.control_port) as suite:
        before = pids_with_arg(str(confdir))
        # The transparent mitmdump is also the regular proxy: a suite asking for proxy mode starts nothing.
        assert (await suite.request("startInterception", {"mode": "proxy"}, timeout=60))["result"] == {}
        assert pids_with_arg(str(confdir)) == before
        assert transparent_stack.launcher is not None

        async def upper(params: dict[str, Any]) -> dict[str, Any]:
            return {"action": "replace", "type": "text", "data": params["data"].upper()}
        suite.on_transform = upper

        url = f"ws://{upstream.host}/transparent?v=6&format=json"
        served = asyncio.ensure_future(serve_one(upstream))
        assert await run_client_as(target_uid, url) == "REPLY"
        headers, message = await served
        assert message == "HELLO"
        assert HEADER_TEST_HOST not in headers  # the app server strips what the redirector stamped
        opened = (await asyncio.wait_for(suite.notifications.get(), 5))["params"]
        assert (opened["host"], opened["proto"], opened["path"]) == (upstream.host, "ws", "/transparent")
        assert opened["query"]["v"] == "6"
        transforms = len(suite.transform_requests)

        # Root (this process, like mitmdump) is never redirected.
        served = asyncio.ensure_future(serve_one(upstream))
        async with websockets.connect(url, proxy=None, open_timeout=10) as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 10) == "reply"
        assert (await served)[1] == "hello"
        assert len(suite.transform_requests) == transforms


@needs_iptables
async def test_rules_only_while_running(settings: LauncherSettings, stand_in: StandInAppServer,
                                        target_uid: int) -> None:
    """The rules appear when ensure() returns and are gone after stop(), as is mitmdump."""
    chain = f"ABLY_INTERCEPT_{target_uid}"
    async with launched(settings, stand_in) as launcher:
        await launcher.ensure(ProxyMode.TRANSPARENT, uid=target_uid)
        assert launcher.running_mode == (ProxyMode.TRANSPARENT, target_uid)
        rules = nat_rules()
        assert f"-N {chain}" in rules and f"--uid-owner {target_uid} -j {chain}" in rules
        # the app server's own ports and mitmproxy's are never redirected
        for port in (stand_in.control_port, stand_in.proxy_port, settings.listen_port):
            assert f"--dport {port} -j RETURN" in rules
        await launcher.ensure(ProxyMode.PROXY)  # served by the transparent run: nothing changes
        assert launcher.running_mode == (ProxyMode.TRANSPARENT, target_uid)
        await launcher.stop()
        assert chain not in nat_rules()
        assert pids_with_arg(marker(settings)) == []


@needs_iptables
async def test_rules_removed_when_mitmdump_dies(settings: LauncherSettings, stand_in: StandInAppServer,
                                                target_uid: int) -> None:
    """mitmdump killed: its rules go too (the user's connections flow directly again, not to a dead port);
    the suite's next startInterception in proxy mode brings transparent mode back, rules included."""
    async with launched(settings, stand_in) as launcher:
        await launcher.ensure(ProxyMode.TRANSPARENT, uid=target_uid)
        [pid] = pids_with_arg(marker(settings))
        os.kill(pid, signal.SIGKILL)
        assert await wait_until(lambda: f"ABLY_INTERCEPT_{target_uid}" not in nat_rules(), timeout=10)
        assert launcher.running_mode is None
        await launcher.ensure(ProxyMode.PROXY)
        assert launcher.running_mode == (ProxyMode.TRANSPARENT, target_uid)
        assert f"--uid-owner {target_uid} -j ABLY_INTERCEPT_{target_uid}" in nat_rules()
        assert pids_with_arg(marker(settings)) not in ([], [pid])
    assert f"ABLY_INTERCEPT_{target_uid}" not in nat_rules()


@needs_iptables
async def test_install_failure_rolls_back(settings: LauncherSettings, stand_in: StandInAppServer,
                                          target_uid: int, tmp_path: Path) -> None:
    """An iptables command that fails halfway: LaunchError naming it, partial rules removed, mitmdump stopped."""
    failing = tmp_path / "iptables-failing-on-insert"
    failing.write_text(f'#!/bin/sh\ncase " $* " in *" -I "*) echo "refused by the test" >&2; exit 1;; esac\n'
                       f'exec {IPTABLES} "$@"\n')
    failing.chmod(0o755)
    async with launched(LauncherSettings(**{**settings.__dict__, "iptables": str(failing)}), stand_in) as launcher:
        with pytest.raises(LaunchError, match="could not install the iptables rules(.|\n)*refused by the test"):
            await launcher.ensure(ProxyMode.TRANSPARENT, uid=target_uid)
        assert launcher.running_mode is None
    assert f"ABLY_INTERCEPT_{target_uid}" not in nat_rules()
    assert pids_with_arg(marker(settings)) == []


@needs_iptables
async def test_existing_chain_refused_and_kept(settings: LauncherSettings, stand_in: StandInAppServer,
                                               target_uid: int) -> None:
    """A chain for that uid already there (another app server, or a killed one): refused with the removal
    command, and left alone, since it is not ours."""
    chain = f"ABLY_INTERCEPT_{target_uid}"
    subprocess.run([IPTABLES or "iptables", "-w", "-t", "nat", "-N", chain], check=True)
    try:
        async with launched(settings, stand_in) as launcher:
            with pytest.raises(LaunchError, match=f"already exists(.|\n)*appserver.transparent remove {target_uid}"):
                await launcher.ensure(ProxyMode.TRANSPARENT, uid=target_uid)
        assert f"-N {chain}" in nat_rules()
        assert pids_with_arg(marker(settings)) == []
    finally:
        subprocess.run([IPTABLES or "iptables", "-w", "-t", "nat", "-X", chain], check=False)


@needs_iptables
@pytest.mark.timeout(120)
async def test_make_run_transparent(target_uid: int, tmp_path: Path) -> None:
    """`make run-transparent USER=<uid>`: rules while it runs, none after SIGTERM, no mitmdump left."""
    confdir = tmp_path / "conf"
    args = (f"--control-port {free_port()} --proxy-port {free_port()} --mitmproxy-port {free_port()} "
            f"--mitmproxy-confdir {confdir}")
    proc = await asyncio.create_subprocess_exec("make", "-s", "run-transparent", f"USER={target_uid}",
                                                f"ARGS={args}", cwd=REPO, start_new_session=True,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    output: list[str] = []

    async def read() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            output.append(line.decode(errors="replace"))
    reader = asyncio.ensure_future(read())
    try:
        assert await wait_until(lambda: any("mitmproxy is intercepting every TCP connection" in line
                                            for line in output), timeout=60), "".join(output)
        assert f"--uid-owner {target_uid} -j ABLY_INTERCEPT_{target_uid}" in nat_rules()
        os.killpg(proc.pid, signal.SIGTERM)  # make and the app server, as Ctrl-C would
        await asyncio.wait_for(proc.wait(), 30)
        # make's own exit status reports the signal; what matters is what the app server left behind
        assert await wait_until(lambda: pids_with_arg(str(confdir)) == [], timeout=20), "".join(output)
        assert any("iptables: rules for uid" in line and "removed" in line for line in output), "".join(output)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        await reader
    assert f"ABLY_INTERCEPT_{target_uid}" not in nat_rules()
