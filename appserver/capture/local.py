"""What mitmproxy's local mode (capture by pid) needs on Linux, and the canary that proves it works.

The launcher (launcher.py, modes.py) runs mitmdump behind :func:`linux_local_wrapper`,
starts the canary with :func:`start_canary`, and watches mitmdump's output
with :func:`fatal_reason`. As measured with mitmproxy 12.3.1 / mitmproxy_rs
0.12.15 on kernel 6.18 (running as root, no sudo installed, cgroup2 at
/sys/fs/cgroup/unified):

* mitmproxy_rs starts its eBPF redirector through ``sudo`` (``sudo echo -n``,
  then ``sudo --non-interactive --preserve-env mitmproxy-linux-redirector``).
  With no sudo binary mitmdump logs "Failed to run sudo." and exits. As root
  we put a pass-through ``sudo`` shim first on mitmdump's PATH.
* The redirector attaches its BPF program to /sys/fs/cgroup. When that is not
  the cgroup2 root it logs "eBPF initialization failed" and mitmdump keeps
  running, capturing nothing. We run mitmdump in a private mount namespace
  with the cgroup2 mount (found in /proc/self/mountinfo) bound over
  /sys/fs/cgroup.
* With both, capture works, and loopback is captured too: a captured process's
  connection to 127.0.0.1:PORT reaches mitmproxy (peer 169.254.0.1). Only
  sockets created after the BPF program is attached are captured, and the
  ``running`` hook fires before that, hence the canary (see canary.py): a
  process in the capture spec that probes 127.0.0.1 on a port we listen on,
  with the canary host name, until the addon answers it (ready_on=canary).
* "object BTF couldn't be loaded" from aya is harmless on this kernel.
"""

import asyncio
import os
import shutil
import stat
import sys
from pathlib import Path

from appserver.capture import canary as canary_probe
from shared.constants import DEFAULT_CANARY_HOST

CANARY_PATH = Path(canary_probe.__file__).resolve()
# Output that means local capture cannot work although mitmdump may keep running.
LOCAL_FATAL_MARKERS = ("eBPF initialization failed", "Failed to run sudo", "Failed to elevate privileges",
                       "[linux-redirector] exited", "failed to establish connection to Linux redirector")
SUDO_SHIM = '#!/bin/sh\n# We are root already: drop sudo\'s options and run the command.\n' \
            'while [ $# -gt 0 ]; do case "$1" in --) shift; break;; -*) shift;; *) break;; esac; done\n' \
            'exec "$@"\n'


class LocalCaptureError(Exception):
    """Local capture cannot work on this host (the message says why); the launcher reports it as a LaunchError."""


def cgroup2_mount() -> str | None:
    """Where the cgroup2 hierarchy is mounted, from /proc/self/mountinfo."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    found = [before.split(" ")[4] for before, _, after in (line.partition(" - ") for line in lines)
             if after.split(" ", 1)[0] == "cgroup2"]
    return "/sys/fs/cgroup" if "/sys/fs/cgroup" in found else next(iter(found), None)


def linux_local_wrapper(env: dict[str, str], tmpdir: str) -> list[str]:
    """Command prefix (and PATH change) so mitmproxy's eBPF redirector can work here."""
    if os.geteuid() != 0:
        raise LocalCaptureError("local capture on Linux needs root (mitmproxy's eBPF redirector); "
                                "run the app server as root")
    mount = cgroup2_mount()
    if mount is None:
        raise LocalCaptureError("local capture is impossible on this host: no cgroup2 hierarchy is mounted")
    if shutil.which("sudo", path=env.get("PATH")) is None:
        shim = Path(tmpdir) / "sudo"
        shim.write_text(SUDO_SHIM)
        shim.chmod(stat.S_IRWXU)
        env["PATH"] = f"{tmpdir}{os.pathsep}{env.get('PATH', os.defpath)}"
    if mount == "/sys/fs/cgroup":
        return []
    unshare = shutil.which("unshare", path=env.get("PATH"))
    if unshare is None:
        raise LocalCaptureError(f"local capture needs cgroup2 at /sys/fs/cgroup (it is at {mount}) "
                                "and unshare(1) to bind-mount it there; unshare not found")
    # A private mount namespace: the bind mount is seen by mitmdump and its
    # redirector only, the host's /sys/fs/cgroup stays as it is.
    return [unshare, "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$0" /sys/fs/cgroup && exec "$@"', mount]


async def start_canary() -> tuple[asyncio.Server, asyncio.subprocess.Process]:
    """The canary's loopback listener, and the canary probing it (in a session of its own).

    The caller owns both once this returns; if the canary cannot be started, the listener is closed again.
    """
    listener, port = await canary_probe.start_listener()
    try:
        canary = await asyncio.create_subprocess_exec(
            sys.executable, str(CANARY_PATH), str(port), DEFAULT_CANARY_HOST,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    except BaseException:
        listener.close()
        await listener.wait_closed()
        raise
    return listener, canary


def fatal_reason(line: str) -> str | None:
    """Why local capture cannot work, when this line of mitmdump's output says so."""
    if any(marker in line for marker in LOCAL_FATAL_MARKERS):
        return f"local capture is impossible on this host: {line.strip()}"
    return None
