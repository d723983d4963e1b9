"""Small process and port helpers for supervising mitmdump (Linux details noted where they matter)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TypeVar

from shared.procnet import Address, socket_inodes_of, tcp_socket_inodes

T = TypeVar("T")

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


# -- which of our peers are mitmdump's sockets (Linux /proc) -------------------------------------


def socket_inodes_of_group(pgid: int) -> set[int]:
    """The inodes of every socket open in that process group (mitmdump and the redirector it started)."""
    inodes: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile, or not ours to read
        inodes |= socket_inodes_of(int(entry.name))
    return inodes


def normalised(address: tuple[object, ...] | None) -> Address | None:
    """A socket's peername/sockname as (ip, port), IPv4-mapped IPv6 as IPv4."""
    if not address:
        return None
    ip = ipaddress.ip_address(str(address[0]).split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(str(address[1]))


def peer_inode(transport: asyncio.BaseTransport, table: dict[tuple[Address, Address], int]) -> int | None:
    """The inode of the socket at the other end of one of our loopback connections, if it is on this host."""
    ours = normalised(transport.get_extra_info("sockname"))
    theirs = normalised(transport.get_extra_info("peername"))
    return table.get((theirs, ours)) if ours and theirs else None


async def wait_released(inodes: set[int], timeout: float) -> bool:
    """Wait until none of these sockets exists any more (their owner closed them); False on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while inodes & set(tcp_socket_inodes().values()):
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def owned_by_group(pgid: int, peers: list[tuple[T, asyncio.BaseTransport]]) -> tuple[list[T], set[int]]:
    """Which of our loopback connections have their other end in that process group; and those ends' inodes."""
    inodes = socket_inodes_of_group(pgid)
    table = tcp_socket_inodes()
    owned = [(item, peer_inode(transport, table)) for item, transport in peers]
    return [item for item, inode in owned if inode in inodes], {inode for _, inode in owned if inode in inodes}
