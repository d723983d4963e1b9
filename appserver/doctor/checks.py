"""What a first run depends on, checked one step at a time, each saying what to do when it fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from appserver.capture import local
from appserver.capture.certs import ensure_ca
from appserver.capture.launcher import default_mitmdump
from appserver.capture.processes import port_in_use
from appserver.config import Config

MIN_PYTHON = (3, 12)


@dataclass
class Step:
    """One check: ``ok`` (None: a warning, the rest can work without it), what was found, what to do."""

    name: str
    ok: bool | None
    found: str
    todo: str = ""

    def lines(self) -> list[str]:
        mark = {True: " ok ", None: "warn", False: "FAIL"}[self.ok]
        out = [f"[{mark}] {self.name}: {self.found}"]
        if self.todo and self.ok is not True:
            out.append(f"       what to do: {self.todo}")
        return out


def python_version() -> Step:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] >= MIN_PYTHON:
        return Step("Python", True, f"{version} ({sys.executable})")
    return Step("Python", False, f"{version} ({sys.executable}) is too old: mitmproxy 12 needs 3.12 or later",
                "run `make install` (it finds a Python 3.12+) and use .venv/bin/python")  # fmt: skip


def mitmproxy_version() -> Step:
    try:
        from mitmproxy.version import VERSION
    except ImportError:
        return Step("mitmproxy", False, "not installed in this Python", "run `make install`")
    binary = default_mitmdump()
    if shutil.which(binary) is None and not Path(binary).exists():
        return Step("mitmproxy", False, f"{VERSION} is installed, but no mitmdump program was found",
                    "run `make install` (it puts mitmdump in .venv/bin)")  # fmt: skip
    return Step("mitmproxy", True, f"{VERSION} (mitmdump: {binary})")


def ports(config: Config) -> list[Step]:
    """The default ports: busy ones are a warning (the app server then needs other ports, or is running)."""
    steps = []
    for what, host, port, flag in (("control API", config.control_host, config.control_port, "--control-port"),
                                   ("proxy endpoint", config.proxy_host, config.proxy_port, "--proxy-port"),
                                   ("mitmproxy", config.mitmproxy_host, config.mitmproxy_port, "--mitmproxy-port")):
        if port_in_use(host, port):
            steps.append(Step(f"port {port} ({what})", None, f"in use on {host} (an app server already running?)",
                              f"stop what listens there (`ss -ltnp 'sport = :{port}'` shows it), or start the "
                              f"app server with {flag} PORT"))  # fmt: skip
        else:
            steps.append(Step(f"port {port} ({what})", True, f"free on {host}"))
    return steps


def certificate(confdir: Path) -> list[Step]:
    """mitmproxy's CA (made now if missing), and how to make Node and Chromium trust it."""
    existed = (confdir / "mitmproxy-ca-cert.pem").exists()
    try:
        ca = ensure_ca(confdir)
    except (OSError, ValueError) as exc:
        return [Step("mitmproxy CA", False, f"cannot create it in {confdir}: {exc}",
                     "make that directory writable, or pass --mitmproxy-confdir DIR")]  # fmt: skip
    return [
        Step("mitmproxy CA", True, f"{ca} ({'found' if existed else 'created now'})"),
        _node_trust(ca),
        Step("trust in Chromium", None, "Chromium reads its own certificate store",
             f"certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n mitmproxy -i {ca} (package libnss3-tools), or "
             "start it with --ignore-certificate-errors; and --proxy-server=http://127.0.0.1:PORT "
             '--proxy-bypass-list="<-loopback>" so that loopback goes through the proxy too'),
    ]


def _node_trust(ca: Path) -> Step:
    extra = os.environ.get("NODE_EXTRA_CA_CERTS")
    todo = f"for wss:// and https:// through the proxy, run Node with NODE_EXTRA_CA_CERTS={ca}"
    if extra is None:
        return Step("trust in Node", None, "NODE_EXTRA_CA_CERTS is not set", todo)
    try:
        trusted = ca.read_text().strip() in Path(extra).read_text()
    except OSError:
        trusted = False
    if trusted:
        return Step("trust in Node", True, f"NODE_EXTRA_CA_CERTS={extra} holds mitmproxy's CA")
    return Step("trust in Node", None, f"NODE_EXTRA_CA_CERTS={extra} does not hold mitmproxy's CA", todo)


def local_mode(required: bool) -> list[Step]:
    """Root, cgroup2 and unshare: what mitmproxy's local mode needs on Linux."""
    fail = False if required else None
    steps = []
    if sys.platform != "linux":
        return [Step("local mode", fail, f"not checked on {sys.platform}", "see mitmproxy's docs for local mode")]
    root = os.geteuid() == 0
    steps.append(Step("local mode: root", True if root else fail, "running as root" if root else
                      f"running as uid {os.geteuid()}", "run the app server as root (sudo) to capture by pid"))
    mount = local.cgroup2_mount()
    steps.append(Step("local mode: cgroup2", True if mount else fail,
                      f"mounted at {mount}" if mount else "no cgroup2 hierarchy mounted",
                      "mount one: mount -t cgroup2 none /sys/fs/cgroup"))  # fmt: skip
    unshare = shutil.which("unshare")
    steps.append(Step("local mode: unshare", True if unshare else fail, unshare or "not found",
                      "install util-linux (unshare runs mitmdump in a private mount namespace)"))
    return steps


def process(pid: int) -> Step:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return Step(f"process {pid}", False, "no such process", "give the pid of the SDK's process (PID=…)")
    return Step(f"process {pid}", True, command or "(no command line)")


def node_version() -> Step:
    node = shutil.which("node")
    if node is None:
        return Step("Node", None, "not found (only needed for ably-js)", "install Node 18 or later")
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Step("Node", None, f"{node} does not run: {exc}", "reinstall Node")
    return Step("Node", True, f"{version} ({node})")
