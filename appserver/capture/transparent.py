"""iptables rules for mitmproxy's transparent mode, by user id (Linux, root).

The rules send every TCP connection that one user's processes open to
mitmproxy's transparent listener on loopback (nat OUTPUT REDIRECT; mitmproxy
reads the original destination with SO_ORIGINAL_DST). They live in a chain of
their own, so that they are removed in three commands and seen at a glance in
``iptables -t nat -S``::

    -N ABLY_INTERCEPT_<uid>
    -A ABLY_INTERCEPT_<uid> -p tcp -m addrtype --dst-type LOCAL --dport <app server port> -j RETURN   (one per port)
    -A ABLY_INTERCEPT_<uid> -p tcp -j REDIRECT --to-ports <transparent port>
    -I OUTPUT -p tcp -m owner --uid-owner <uid> -j ABLY_INTERCEPT_<uid>

Only that uid's TCP matches: never mitmproxy's own connections (mitmdump runs
as root, and root is refused as a target), never UDP, never IPv6 (iptables,
not ip6tables). Connections to this host's own app server and mitmproxy ports
are left alone, so the user's test suite can reach the control API.

Command construction is pure (:class:`RedirectRules`); :func:`install`,
:func:`remove` and :func:`chain_exists` run them, synchronously (callers in
asyncio use ``asyncio.to_thread``, which also lets a removal finish when its
caller is cancelled). :func:`check_target` and :func:`check_chain_free` are the
launcher's checks before it starts anything.

``python -m appserver.transparent show|remove USER`` prints or runs the
removal by hand, e.g. after the app server was killed with SIGKILL.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass

from appserver.capture.spec import target_uid

logger = logging.getLogger(__name__)

CHAIN_PREFIX = "ABLY_INTERCEPT_"
IPTABLES = "iptables"
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"  # not on every root PATH (su without a login shell, some CI)
COMMAND_TIMEOUT = 20.0
# install() and remove() never interleave: a removal requested while an installation is still
# running (its caller was cancelled) waits for it, then removes everything it added.
_lock = threading.RLock()


class IptablesError(Exception):
    """An iptables command failed; the message has its stderr."""


class Unavailable(Exception):
    """Transparent capture cannot work on this host, or for that uid (the message says why)."""


def find_iptables(name: str = IPTABLES) -> str | None:
    """The iptables binary: on PATH, else in the sbin directories."""
    return shutil.which(name) or shutil.which(name, path=SBIN_PATH)


def target_gid(uid: int) -> int:
    """The user's primary group, or a group of the same number when the uid has no passwd entry."""
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid


@dataclass(frozen=True)
class RedirectRules:
    """The rules for one user: what to redirect where, and what to leave alone."""

    uid: int
    to_port: int  # mitmproxy's transparent listener on 127.0.0.1
    exclude_ports: tuple[int, ...] = ()  # local destinations never redirected (app server, mitmproxy)
    iptables: str = IPTABLES

    def __post_init__(self) -> None:
        if self.uid <= 0:
            raise ValueError(f"uid must be a positive user id, got {self.uid}")
        for port in (self.to_port, *self.exclude_ports):
            if not 0 < port < 65536:
                raise ValueError(f"not a port number: {port}")

    @property
    def chain(self) -> str:
        return f"{CHAIN_PREFIX}{self.uid}"

    def _nat(self, *args: str) -> list[str]:
        return [self.iptables, "-w", "-t", "nat", *args]

    def _jump(self) -> list[str]:
        return ["OUTPUT", "-p", "tcp", "-m", "owner", "--uid-owner", str(self.uid), "-j", self.chain]

    def setup_commands(self) -> list[list[str]]:
        """Chain first, then the jump into it (inserted first in OUTPUT): no half-built rule ever matches."""
        commands = [self._nat("-N", self.chain)]
        for port in sorted(set(self.exclude_ports)):
            commands.append(self._nat("-A", self.chain, "-p", "tcp", "-m", "addrtype", "--dst-type", "LOCAL",
                                      "--dport", str(port), "-j", "RETURN"))
        commands.append(self._nat("-A", self.chain, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(self.to_port)))
        commands.append(self._nat("-I", *self._jump()))
        return commands

    def teardown_commands(self) -> list[list[str]]:
        """The jump first (traffic flows directly again), then the chain's rules, then the chain."""
        return [self._nat("-D", *self._jump()), self._nat("-F", self.chain), self._nat("-X", self.chain)]

    def show_command(self) -> list[str]:
        return self._nat("-S", self.chain)


def shell_line(command: list[str]) -> str:
    return " ".join(command)


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(command, 127, "", str(exc))


def chain_exists(rules: RedirectRules) -> bool:
    return _run(rules.show_command()).returncode == 0


def check_target(uid: int, iptables: str) -> str:
    """The iptables binary to capture that uid's connections with; Unavailable if this host or uid will not do."""
    if sys.platform != "linux":
        raise Unavailable("transparent mode by user id needs Linux and iptables; use local mode (by pid) here")
    if os.geteuid() != 0:
        raise Unavailable("transparent mode needs root (it installs iptables rules); run the app server as root")
    if uid in (0, os.geteuid()):
        raise Unavailable(f"transparent mode cannot capture uid {uid}: mitmdump runs as that user, its own "
                          "connections would be redirected to itself; run the SDK's tests as another user")
    found = find_iptables(iptables)
    if found is None:
        raise Unavailable(f"transparent mode needs iptables, not found ({iptables!r}); "
                          "on Debian/Ubuntu: apt-get install -y iptables")
    return found


def check_chain_free(rules: RedirectRules) -> None:
    """Unavailable if the rules' chain exists already: someone else's, or left behind by a killed app server."""
    if chain_exists(rules):
        removal = "; ".join(shell_line(c) for c in rules.teardown_commands())
        raise Unavailable(f"iptables chain {rules.chain} already exists: another app server is capturing "
                          f"uid {rules.uid}, or one was killed before it could remove its rules. If nothing "
                          f"uses it, remove it (python -m appserver.transparent remove {rules.uid}, or: {removal})")


def install(rules: RedirectRules) -> None:
    """Run the setup commands; on the first failure, undo what was done and raise IptablesError."""
    with _lock:
        for command in rules.setup_commands():
            result = _run(command)
            if result.returncode != 0:
                remove(rules)
                raise IptablesError(f"`{shell_line(command)}` failed: {result.stderr.strip() or result.returncode}")
            logger.debug("ran %s", shell_line(command))
    logger.info("iptables: TCP from uid %d now goes to 127.0.0.1:%d (chain %s)", rules.uid, rules.to_port,
                rules.chain)


def remove(rules: RedirectRules) -> list[str]:
    """Run every teardown command, whatever fails; returns the failures (none: all gone).

    A rule or chain that is not there counts as removed, so this is safe to repeat.
    """
    failures = []
    removed = 0
    with _lock:
        for command in rules.teardown_commands():
            result = _run(command)
            if result.returncode == 0:
                removed += 1
            elif not _absent(result.stderr):
                failures.append(f"`{shell_line(command)}`: {result.stderr.strip() or result.returncode}")
    if failures:
        logger.error("iptables rules for uid %d may be left behind:\n%s", rules.uid, "\n".join(failures))
    elif removed:
        logger.info("iptables: rules for uid %d removed", rules.uid)
    else:
        logger.info("iptables: there were no rules for uid %d: nothing to remove", rules.uid)
    return failures


def _absent(stderr: str) -> bool:
    text = stderr.lower()
    return any(marker in text for marker in ("does a matching rule exist", "no chain/target/match by that name",
                                             "doesn't exist", "does not exist"))


def main(argv: list[str]) -> int:
    """``show USER``: print the removal commands; ``remove USER``: run them."""
    if len(argv) != 3 or argv[1] not in ("show", "remove"):
        print("usage: python -m appserver.transparent show|remove USER", file=sys.stderr)
        return 2
    try:
        uid = target_uid(argv[2])
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    # the port plays no part in removal
    rules = RedirectRules(uid=uid, to_port=1, iptables=find_iptables() or IPTABLES)
    if argv[1] == "show":
        for command in rules.teardown_commands():
            print(shell_line(command))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return 1 if remove(rules) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
