"""What to capture, parsed once: the one value the launcher, the CLI and startInterception share.

``proxy`` (mitmproxy as an HTTP proxy), ``local:PID`` (that process, by
mitmproxy's local mode) or ``transparent:USER`` (that user's TCP, by iptables).
The command line's ``--start-mitmproxy`` and a suite's ``startInterception``
params both become a :class:`CaptureSpec` here, and nowhere else.
"""

from __future__ import annotations

import enum
import pwd
from dataclasses import dataclass
from typing import Any, Mapping

from shared.wire import WireError, require


class ProxyMode(enum.Enum):
    PROXY = "proxy"
    LOCAL = "local"
    TRANSPARENT = "transparent"


#: startInterception's mode for "start no mitmproxy" (direct mode).
MODE_NONE = "none"
START_MODES = (ProxyMode.PROXY.value, ProxyMode.LOCAL.value, MODE_NONE)


@dataclass(frozen=True)
class CaptureSpec:
    mode: ProxyMode
    pid: int | None = None  # LOCAL: the process to capture
    uid: int | None = None  # TRANSPARENT: the user whose TCP is redirected

    def __str__(self) -> str:
        target = self.pid if self.mode is ProxyMode.LOCAL else self.uid if self.mode is ProxyMode.TRANSPARENT else None
        return self.mode.value if target is None else f"{self.mode.value}:{target}"

    @classmethod
    def parse(cls, text: str) -> CaptureSpec:
        """``proxy``, ``local:PID`` or ``transparent:USER`` (the command line); ValueError saying what is wrong."""
        mode, _, target = text.partition(":")
        if mode == ProxyMode.PROXY.value and not target:
            return cls(ProxyMode.PROXY)
        if mode == ProxyMode.LOCAL.value and target.isdigit() and int(target) > 0:
            return cls(ProxyMode.LOCAL, pid=int(target))
        if mode == ProxyMode.TRANSPARENT.value and target:
            try:
                return cls(ProxyMode.TRANSPARENT, uid=target_uid(target))
            except ValueError as exc:
                raise ValueError(f"transparent:USER: {exc}") from exc
        raise ValueError(f"must be 'proxy', 'local:PID' with a process id, or 'transparent:USER' with a user name "
                         f"or id, got {text!r}")  # fmt: skip

    @classmethod
    def from_params(cls, params: Mapping[str, Any], can_launch: bool) -> CaptureSpec | None:
        """startInterception's params; None for mode 'none' (also {} where nothing can be launched)."""
        mode = params.get("mode", None if can_launch else MODE_NONE)
        if mode not in START_MODES:
            problem = "is required" if mode is None else f"must be one of {', '.join(map(repr, START_MODES))}"
            raise WireError("mode", f"{problem}: 'proxy' (mitmproxy as an HTTP proxy), 'local' (with 'pid': capture "
                                    "that process) or 'none' (start no mitmproxy: direct mode)")  # fmt: skip
        if mode == MODE_NONE:
            return None
        if mode == ProxyMode.PROXY.value:
            return cls(ProxyMode.PROXY)
        pid = require(params, "pid", int)
        if pid <= 0:
            raise WireError("pid", "must be a positive process id")
        return cls(ProxyMode.LOCAL, pid=pid)


def target_uid(user: str) -> int:
    """The uid of a user name or number; ValueError when unknown or unusable as a target.

    A number needs no passwd entry (``--uid-owner`` matches any uid). Root is
    refused: mitmdump runs as root, its own connections would be redirected to
    itself.
    """
    if user.isdigit():
        uid = int(user)
    else:
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            raise ValueError(f"no such user: {user!r}") from None
    if uid == 0:
        raise ValueError("the target user must not be root: mitmproxy runs as root, and its own "
                         "connections would be redirected to itself; run the SDK's tests as another user")
    return uid
