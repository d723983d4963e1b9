"""One small strategy per capture mode: what to check, and how to start mitmdump for it.

Each ``plan_*`` checks what its mode needs (ports, root, iptables, the
process to capture), prepares what it needs beside mitmdump (local mode's
canary, transparent mode's rules), and returns a :class:`Plan`: the command
line, its environment and the :class:`Run` that will own all of it. The
launcher spawns and supervises; it knows no mode's details.

- proxy: regular mode on the mitmproxy port; ready when the addon's
  ``running`` hook sends mitmproxyReady.
- local (by pid): on Linux root, a cgroup2 bind mount, a sudo shim and a
  canary process (local.py); ready when the canary's probe was captured.
- transparent (Linux, root): every TCP connection of one uid is redirected by
  iptables (transparent.py) to mitmdump's transparent listener on 127.0.0.1;
  the same mitmdump also listens in regular mode on the mitmproxy port, so
  proxy mode is served by it too. The rules are installed once it is ready.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from appserver.capture import local, transparent
from appserver.capture.processes import alive, free_loopback_port, port_in_use
from appserver.capture.run import LaunchError, Run, cleanup
from appserver.capture.spec import ProxyMode
from shared.constants import DEFAULT_CANARY_HOST

if TYPE_CHECKING:
    from appserver.capture.launcher import LauncherSettings

ADDON_PATH = Path(__file__).resolve().parent.parent.parent / "redirector" / "addon.py"


@dataclass
class Plan:
    run: Run
    args: list[str]
    env: dict[str, str] = field(default_factory=lambda: os.environ.copy())
    rules: transparent.RedirectRules | None = None  # to install once mitmdump is ready


def common_args(s: LauncherSettings, ready_on: str) -> list[str]:
    return ["-s", str(ADDON_PATH),
            "--set", "connection_strategy=lazy", "--set", "websocket=false",
            "--set", f"appserver_proxy={s.appserver_proxy}",
            "--set", f"appserver_control={s.appserver_control}",
            "--set", f"ready_on={ready_on}", "--set", f"canary_host={DEFAULT_CANARY_HOST}",
            *s.extra_args]  # fmt: skip


def _check_port_free(host: str, port: int, what: str = "") -> None:
    if port_in_use(host, port):
        raise LaunchError(f"cannot start mitmdump: port {host}:{port}{what} is already in use")


async def plan_proxy(s: LauncherSettings, binary: str, pid: int | None, uid: int | None) -> Plan:
    _check_port_free(s.listen_host, s.listen_port)
    args = [binary, *common_args(s, "running"), "--listen-host", s.listen_host, "--listen-port", str(s.listen_port)]
    return Plan(Run(ProxyMode.PROXY, None), args)


async def plan_transparent(s: LauncherSettings, binary: str, pid: int | None, uid: int | None) -> Plan:
    if uid is None:
        raise LaunchError("transparent mode needs the uid of the user whose connections to capture")
    iptables = transparent.check_target(uid, s.iptables)
    _check_port_free(s.listen_host, s.listen_port)
    port = s.transparent_port or free_loopback_port()
    if s.transparent_port:
        _check_port_free("127.0.0.1", port, " (transparent mode)")
    rules = transparent.RedirectRules(uid=uid, to_port=port, iptables=iptables,
                                      exclude_ports=(*appserver_ports(s), s.listen_port, port))  # fmt: skip
    await asyncio.to_thread(transparent.check_chain_free, rules)
    host = f"[{s.listen_host}]" if ":" in s.listen_host else s.listen_host
    args = [binary, *common_args(s, "running"),
            "--mode", f"regular@{host}:{s.listen_port}", "--mode", f"transparent@127.0.0.1:{port}"]  # fmt: skip
    return Plan(Run(ProxyMode.TRANSPARENT, None, uid=uid), args, rules=rules)


async def plan_local(s: LauncherSettings, binary: str, pid: int | None, uid: int | None) -> Plan:
    """The canary (and its listener) are started here: the caller owns them once the plan is returned."""
    if pid is None:
        raise LaunchError("local mode needs the pid of the process to capture")
    if not alive(pid):
        raise LaunchError(f"local mode: no process with pid {pid}")
    env = os.environ.copy()
    run = Run(ProxyMode.LOCAL, pid, tmpdir=tempfile.mkdtemp(prefix="mitmdump-local-"))
    try:
        wrapper = local.linux_local_wrapper(env, run.tmpdir or "") if sys.platform == "linux" else []
        run.listener, run.canary = await local.start_canary()
    except BaseException:
        await cleanup(run)
        raise
    args = [*wrapper, binary, *common_args(s, "canary"), "--mode", f"local:{pid},{run.canary.pid}"]
    return Plan(run, args, env)


PLANS = {ProxyMode.PROXY: plan_proxy, ProxyMode.LOCAL: plan_local, ProxyMode.TRANSPARENT: plan_transparent}


def early_exit_reason(s: LauncherSettings, run: Run, code: int, output: list[str]) -> str:
    """Why mitmdump exited before it was ready, in words where its output tells."""
    reason = f"exited with code {code} before it was ready"
    if any("already in use" in line for line in output):
        if run.mode is ProxyMode.TRANSPARENT:
            return f"{reason}: port {s.listen_host}:{s.listen_port} or its transparent port is already in use"
        return f"{reason}: port {s.listen_host}:{s.listen_port} is already in use"
    if run.mode is ProxyMode.LOCAL:
        return f"{reason}: local capture is impossible on this host"
    return reason


def appserver_ports(s: LauncherSettings) -> tuple[int, ...]:
    """The app server's proxy endpoint and control API ports (never redirected in transparent mode)."""
    ports = [urlsplit(f"//{s.appserver_proxy}").port, urlsplit(s.appserver_control).port]
    return tuple(port for port in ports if port)
