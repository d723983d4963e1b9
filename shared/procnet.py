"""Linux /proc helpers both the app server and the redirector use: the host's TCP sockets by address, and
whose they are (which process holds a socket's inode)."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterable
from pathlib import Path

Address = tuple[str, int]


def _proc_net_address(text: str) -> Address:
    """An address of /proc/net/tcp{,6}: hex IP in 32-bit words of host byte order, hex port."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)) if sys.byteorder == "little" else raw
    ip = ipaddress.ip_address(packed)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def tcp_socket_inodes() -> dict[tuple[Address, Address], int]:
    """Every TCP socket of this host (network namespace): (local, remote) → inode."""
    table: dict[tuple[Address, Address], int] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            table[(_proc_net_address(fields[1]), _proc_net_address(fields[2]))] = int(fields[9])
    return table


def socket_inodes_of(pid: int) -> set[int]:
    """The inodes of the sockets a process has open (empty when it is gone or not ours to read)."""
    inodes: set[int] = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def owner_of_connection(local_port: int, remote: Address, pids: Iterable[int]) -> int | None:
    """Which of these processes holds the TCP socket from ``local_port`` (any address) to ``remote``."""
    inodes = {inode for (local, peer), inode in tcp_socket_inodes().items() if local[1] == local_port and peer == remote}
    if not inodes:
        return None
    return next((pid for pid in pids if socket_inodes_of(pid) & inodes), None)
