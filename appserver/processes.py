"""Small process and port helpers for supervising mitmdump (Linux details noted where they matter)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
PF_EXITING = 0x4  # a task's flags in /proc/PID/stat (include/linux/sched.h): it is being torn down


def port_in_use(host: str, port: int) -> bool:
    """Bind-test the way mitmproxy binds (SO_REUSEADDR, so TIME_WAIT is no obstacle)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_loopback_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def exited(pid: int) -> bool:
    """Whether our child is exiting or has exited, though asyncio has not reaped it yet.

    Linux only (elsewhere False): after a SIGKILL, its sockets are closed while the kernel
    is still tearing the process down, state R with PF_EXITING, then it is a zombie (Z),
    and only then does asyncio see it exit. Meanwhile it must not count as running.
    """
    if sys.platform != "linux":
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        state, flags = fields[0], int(fields[6])
    except (OSError, IndexError, ValueError):
        return True  # no such process any more
    return state in ("Z", "X") or bool(flags & PF_EXITING)


def alive(pid: int, group: bool = False) -> bool:
    """Whether a process (or any member of a process group) still exists."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


async def terminate_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, SIGKILL whatever is left after a grace period."""
    pgid = proc.pid  # start_new_session: the process leads its own group
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = asyncio.get_running_loop().time() + STOP_GRACE
        while alive(pgid, group=True) and asyncio.get_running_loop().time() < deadline:
            if proc.returncode is None:
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), 0.05)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0.05)
        if not alive(pgid, group=True):
            break
    await proc.wait()
