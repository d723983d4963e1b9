"""Launch and supervise mitmdump with the redirector addon.

Independent of the rest of appserver/: the app server's ``startInterception``
handler calls ``MitmproxyLauncher.ensure()``, and forwards the
``mitmproxyReady`` notification of its control API to ``notify_ready()``.

Local mode on Linux, as measured with mitmproxy 12.3.1 / mitmproxy_rs 0.12.15
on kernel 6.18 (running as root, no sudo installed, cgroup2 at
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

Transparent mode (Linux, root), the alternative to local mode: every TCP
connection of one user id is redirected by iptables (see transparent.py) to
mitmdump's transparent listener on 127.0.0.1, which reads the original
destination with SO_ORIGINAL_DST. The same mitmdump also listens in regular
mode on the mitmproxy port, so a suite's ``startInterception {mode: "proxy"}``
is served by it and starts nothing new. Ready means: the addon's ``running``
hook sent mitmproxyReady, then the rules were installed. The rules are removed
on stop(), on any failure, and when mitmdump dies.
"""

import asyncio
import collections
import enum
import logging
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from appserver import canary as canary_probe
from appserver import transparent
from shared.constants import DEFAULT_CANARY_HOST, DEFAULT_CONTROL_PORT, DEFAULT_HOST, DEFAULT_MITMPROXY_PORT, \
    DEFAULT_PROXY_PORT

logger = logging.getLogger(__name__)
output_logger = logging.getLogger("appserver.mitmdump")

ADDON_PATH = Path(__file__).resolve().parent.parent / "redirector" / "addon.py"
CANARY_PATH = Path(canary_probe.__file__).resolve()
KEEP_LINES = 50
TAIL_LINES = 20
STOP_GRACE = 5.0
OUTPUT_LINE_LIMIT = 1 << 20
PF_EXITING = 0x4  # a task's flags in /proc/PID/stat (include/linux/sched.h): it is being torn down
# Output that means local capture cannot work although mitmdump may keep running.
LOCAL_FATAL_MARKERS = ("eBPF initialization failed", "Failed to run sudo", "Failed to elevate privileges",
                       "[linux-redirector] exited", "failed to establish connection to Linux redirector")
SUDO_SHIM = '#!/bin/sh\n# We are root already: drop sudo\'s options and run the command.\n' \
            'while [ $# -gt 0 ]; do case "$1" in --) shift; break;; -*) shift;; *) break;; esac; done\n' \
            'exec "$@"\n'


class ProxyMode(enum.Enum):
    PROXY = "proxy"
    LOCAL = "local"
    TRANSPARENT = "transparent"


def default_mitmdump() -> str:
    """The mitmdump beside our interpreter (same venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "mitmdump"
    return str(beside) if beside.exists() else shutil.which("mitmdump") or "mitmdump"


@dataclass(frozen=True)
class LauncherSettings:
    mitmdump: str = field(default_factory=default_mitmdump)
    listen_host: str = DEFAULT_HOST
    listen_port: int = DEFAULT_MITMPROXY_PORT
    appserver_proxy: str = f"{DEFAULT_HOST}:{DEFAULT_PROXY_PORT}"
    appserver_control: str = f"ws://{DEFAULT_HOST}:{DEFAULT_CONTROL_PORT}/"
    ready_timeout: float = 20.0
    extra_args: tuple[str, ...] = ()
    transparent_port: int = 0  # transparent mode's listener on 127.0.0.1; 0: a free port picked at start
    iptables: str = transparent.IPTABLES


class LaunchError(Exception):
    """mitmdump could not be started in the requested mode, or was not ready in time."""


def cgroup2_mount() -> str | None:
    """Where the cgroup2 hierarchy is mounted, from /proc/self/mountinfo."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    found = [before.split(" ")[4] for before, _, after in (line.partition(" - ") for line in lines)
             if after.split(" ", 1)[0] == "cgroup2"]
    return "/sys/fs/cgroup" if "/sys/fs/cgroup" in found else next(iter(found), None)


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


@dataclass
class _Run:
    """One mitmdump process and everything started for it."""
    mode: ProxyMode
    pid: int | None
    uid: int | None = None  # transparent mode: whose connections are redirected
    rules: transparent.RedirectRules | None = None  # installed (or being installed): ours to remove
    proc: asyncio.subprocess.Process | None = None
    # Result None: ready; a string: why it failed before it was ready.
    outcome: "asyncio.Future[str | None]" = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    tasks: set["asyncio.Task[None]"] = field(default_factory=set)
    canary: asyncio.subprocess.Process | None = None
    listener: asyncio.Server | None = None
    tmpdir: str | None = None
    stopping: bool = False


class MitmproxyLauncher:
    def __init__(self, settings: LauncherSettings) -> None:
        self.settings = settings
        self._lock = asyncio.Lock()
        self._run: _Run | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=KEEP_LINES)
        # Set by a transparent start, until another mode is started or stop(): the uid whose
        # transparent run serves PROXY requests too (restarted for them if mitmdump died).
        self._transparent_uid: int | None = None

    @property
    def running_mode(self) -> tuple[ProxyMode, int | None] | None:
        """The mode mitmdump is ready in, with the pid (local mode) or uid (transparent mode)."""
        run = self._run
        if run is None or run.proc is None or run.proc.returncode is not None or not run.outcome.done():
            return None
        if exited(run.proc.pid):  # dead, though asyncio has not reaped it yet
            return None
        return run.mode, run.uid if run.mode is ProxyMode.TRANSPARENT else run.pid

    async def ensure(self, mode: ProxyMode, pid: int | None = None, uid: int | None = None) -> None:
        """Have mitmdump ready in that mode: ``pid`` for LOCAL, ``uid`` for TRANSPARENT.

        Once started in transparent mode, PROXY requests are served by the transparent run
        (it also listens as a regular proxy), until another mode is asked for or stop().
        """
        async with self._lock:
            if mode is ProxyMode.PROXY and self._transparent_uid is not None:
                mode, uid = ProxyMode.TRANSPARENT, self._transparent_uid
            wanted = (mode, pid if mode is ProxyMode.LOCAL else uid if mode is ProxyMode.TRANSPARENT else None)
            if self.running_mode == wanted:
                return
            await self._stop_locked()
            try:
                await self._start(mode, pid, uid)
            except BaseException:
                await self._stop_locked()  # nothing may be left running after a failure
                raise
            self._transparent_uid = uid if mode is ProxyMode.TRANSPARENT else None

    def notify_ready(self) -> None:
        run = self._run
        if run is None or run.outcome.done():
            logger.debug("mitmproxyReady with no mitmdump starting: ignored")
            return
        run.outcome.set_result(None)

    async def stop(self) -> None:
        async with self._lock:
            self._transparent_uid = None
            await self._stop_locked()

    # -- starting ---------------------------------------------------------

    async def _start(self, mode: ProxyMode, pid: int | None, uid: int | None = None) -> None:
        self._tail.clear()
        binary = shutil.which(self.settings.mitmdump)
        if binary is None:
            raise LaunchError(f"mitmdump binary not found: {self.settings.mitmdump!r}")
        rules = None
        if mode is ProxyMode.PROXY:
            await self._start_proxy(binary)
        elif mode is ProxyMode.TRANSPARENT:
            rules = await self._start_transparent(binary, uid)
        else:
            await self._start_local(binary, pid)
        run = self._run
        assert run is not None and run.proc is not None
        await self._await_ready(run)
        if rules is not None:  # listening: now send the user's connections to it
            run.rules = rules  # from here on, cleanup() removes them, whatever happens
            try:
                await asyncio.to_thread(transparent.install, rules)
            except transparent.RuleError as exc:
                raise LaunchError(f"mitmdump (transparent mode): could not install the iptables rules: {exc}") \
                    from exc
        if run.canary is not None:  # it has done its job: capture is active
            await terminate_group(run.canary)
        logger.info("mitmdump ready in %s mode (pid %s)", mode.value, run.proc.pid)

    async def _start_proxy(self, binary: str) -> None:
        s = self.settings
        if port_in_use(s.listen_host, s.listen_port):
            raise LaunchError(f"cannot start mitmdump: port {s.listen_host}:{s.listen_port} is already in use")
        args = [binary, *self._common_args("running"),
                "--listen-host", s.listen_host, "--listen-port", str(s.listen_port)]
        await self._spawn(_Run(ProxyMode.PROXY, None), args, os.environ.copy())

    async def _start_transparent(self, binary: str, uid: int | None) -> transparent.RedirectRules:
        """Check everything the rules need, then start mitmdump; returns the rules to install once it is ready."""
        s = self.settings
        if uid is None:
            raise LaunchError("transparent mode needs the uid of the user whose connections to capture")
        if sys.platform != "linux":
            raise LaunchError("transparent mode by user id needs Linux and iptables; use local mode (by pid) here")
        if os.geteuid() != 0:
            raise LaunchError("transparent mode needs root (it installs iptables rules); run the app server as root")
        if uid in (0, os.geteuid()):
            raise LaunchError(f"transparent mode cannot capture uid {uid}: mitmdump runs as that user, its own "
                              "connections would be redirected to itself; run the SDK's tests as another user")
        iptables = transparent.find_iptables(s.iptables)
        if iptables is None:
            raise LaunchError(f"transparent mode needs iptables, not found ({s.iptables!r}); "
                              "on Debian/Ubuntu: apt-get install -y iptables")
        if port_in_use(s.listen_host, s.listen_port):
            raise LaunchError(f"cannot start mitmdump: port {s.listen_host}:{s.listen_port} is already in use")
        port = s.transparent_port or free_loopback_port()
        if s.transparent_port and port_in_use("127.0.0.1", port):
            raise LaunchError(f"cannot start mitmdump: port 127.0.0.1:{port} (transparent mode) is already in use")
        rules = transparent.RedirectRules(uid=uid, to_port=port, iptables=iptables,
                                          exclude_ports=(*appserver_ports(s), s.listen_port, port))
        if await asyncio.to_thread(transparent.chain_exists, rules):
            removal = "; ".join(transparent.shell_line(c) for c in rules.teardown_commands())
            raise LaunchError(f"iptables chain {rules.chain} already exists: another app server is capturing "
                              f"uid {uid}, or one was killed before it could remove its rules. If nothing "
                              f"uses it, remove it (python -m appserver.transparent remove {uid}, or: {removal})")
        host = f"[{s.listen_host}]" if ":" in s.listen_host else s.listen_host
        args = [binary, *self._common_args("running"),
                "--mode", f"regular@{host}:{s.listen_port}", "--mode", f"transparent@127.0.0.1:{port}"]
        await self._spawn(_Run(ProxyMode.TRANSPARENT, None, uid=uid), args, os.environ.copy())
        return rules

    async def _start_local(self, binary: str, pid: int | None) -> None:
        if pid is None:
            raise LaunchError("local mode needs the pid of the process to capture")
        if not alive(pid):
            raise LaunchError(f"local mode: no process with pid {pid}")
        env = os.environ.copy()
        tmpdir = tempfile.mkdtemp(prefix="mitmdump-local-")
        # Until _spawn has recorded them in a _Run, these are ours to clean up.
        run = _Run(ProxyMode.LOCAL, pid, tmpdir=tmpdir)
        try:
            wrapper = linux_local_wrapper(env, tmpdir) if sys.platform == "linux" else []
            run.listener, port = await canary_probe.start_listener()
            run.canary = await asyncio.create_subprocess_exec(
                sys.executable, str(CANARY_PATH), str(port), DEFAULT_CANARY_HOST,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
            args = [*wrapper, binary, *self._common_args("canary"), "--mode", f"local:{pid},{run.canary.pid}"]
            await self._spawn(run, args, env)
        except BaseException:
            if self._run is not run:
                await cleanup(run)
            raise

    def _common_args(self, ready_on: str) -> list[str]:
        s = self.settings
        return ["-s", str(ADDON_PATH),
                "--set", "connection_strategy=lazy", "--set", "websocket=false",
                "--set", f"appserver_proxy={s.appserver_proxy}",
                "--set", f"appserver_control={s.appserver_control}",
                "--set", f"ready_on={ready_on}", "--set", f"canary_host={DEFAULT_CANARY_HOST}",
                *s.extra_args]

    async def _spawn(self, run: _Run, args: list[str], env: dict[str, str]) -> None:
        logger.info("starting %s", " ".join(args))
        try:
            # Its own session, so that stop() can kill the whole tree (the
            # local redirector runs as root in the same process group).
            run.proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True, limit=OUTPUT_LINE_LIMIT)
        except OSError as exc:
            raise LaunchError(f"cannot start {args[0]}: {exc}") from exc
        self._run = run
        for coro in (self._pump_output(run), self._watch(run)):
            task = asyncio.create_task(coro)
            run.tasks.add(task)
            task.add_done_callback(run.tasks.discard)

    async def _await_ready(self, run: _Run) -> None:
        try:
            failure = await asyncio.wait_for(asyncio.shield(run.outcome), self.settings.ready_timeout)
        except TimeoutError:
            failure = f"not ready within {self.settings.ready_timeout:g}s"
        if failure is not None:
            raise LaunchError(f"mitmdump ({run.mode.value} mode): {failure}\n{self.tail()}")

    # -- supervision ------------------------------------------------------

    def tail(self, lines: int = TAIL_LINES) -> str:
        kept = list(self._tail)[-lines:]
        return "--- last lines of mitmdump's output ---\n" + "\n".join(kept) if kept else "(no output)"

    async def _pump_output(self, run: _Run) -> None:
        assert run.proc is not None and run.proc.stdout is not None
        async for raw in run.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._tail.append(line)
            output_logger.info("mitmdump: %s", line)
            if run.mode is ProxyMode.LOCAL and not run.outcome.done():
                if any(marker in line for marker in LOCAL_FATAL_MARKERS):
                    run.outcome.set_result(f"local capture is impossible on this host: {line.strip()}")

    async def _watch(self, run: _Run) -> None:
        assert run.proc is not None
        code = await run.proc.wait()
        if not run.outcome.done():
            run.outcome.set_result(self._early_exit_reason(run, code))
        elif not run.stopping:
            logger.error("mitmdump (%s mode) exited unexpectedly with code %s\n%s",
                         run.mode.value, code, self.tail())
            await remove_rules(run)  # or the user's connections would go to a closed port

    def _early_exit_reason(self, run: _Run, code: int) -> str:
        """Why mitmdump exited before it was ready, in words where its output tells."""
        reason = f"exited with code {code} before it was ready"
        if any("already in use" in line for line in self._tail):
            s = self.settings
            if run.mode is ProxyMode.TRANSPARENT:
                return f"{reason}: port {s.listen_host}:{s.listen_port} or its transparent port is already in use"
            return f"{reason}: port {s.listen_host}:{s.listen_port} is already in use"
        if run.mode is ProxyMode.LOCAL:
            return f"{reason}: local capture is impossible on this host"
        return reason

    # -- stopping ---------------------------------------------------------

    async def _stop_locked(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            await cleanup(run)
            logger.info("mitmdump stopped (%s mode)", run.mode.value)


def appserver_ports(settings: LauncherSettings) -> tuple[int, ...]:
    """The app server's proxy endpoint and control API ports (never redirected in transparent mode)."""
    ports = [urlsplit(f"//{settings.appserver_proxy}").port, urlsplit(settings.appserver_control).port]
    return tuple(port for port in ports if port)


async def remove_rules(run: _Run) -> None:
    """Remove a run's iptables rules, once; in a thread, so a cancelled caller does not stop it halfway."""
    rules, run.rules = run.rules, None
    if rules is not None:
        await asyncio.to_thread(transparent.remove, rules)


async def cleanup(run: _Run) -> None:
    """Stop everything a run started: iptables rules first (traffic flows directly again),
    then mitmdump's process group, canary, listener, files."""
    run.stopping = True
    await remove_rules(run)
    for proc in (run.proc, run.canary):
        if proc is not None:
            await terminate_group(proc)
    if run.listener is not None:
        run.listener.close()
        await run.listener.wait_closed()
    for task in list(run.tasks):
        task.cancel()
    await asyncio.gather(*run.tasks, return_exceptions=True)
    if run.tmpdir is not None:
        shutil.rmtree(run.tmpdir, ignore_errors=True)


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


def linux_local_wrapper(env: dict[str, str], tmpdir: str) -> list[str]:
    """Command prefix (and PATH change) so mitmproxy's eBPF redirector can work here."""
    if os.geteuid() != 0:
        raise LaunchError("local capture on Linux needs root (mitmproxy's eBPF redirector); "
                          "run the app server as root")
    mount = cgroup2_mount()
    if mount is None:
        raise LaunchError("local capture is impossible on this host: no cgroup2 hierarchy is mounted")
    if shutil.which("sudo", path=env.get("PATH")) is None:
        shim = Path(tmpdir) / "sudo"
        shim.write_text(SUDO_SHIM)
        shim.chmod(stat.S_IRWXU)
        env["PATH"] = f"{tmpdir}{os.pathsep}{env.get('PATH', os.defpath)}"
    if mount == "/sys/fs/cgroup":
        return []
    unshare = shutil.which("unshare", path=env.get("PATH"))
    if unshare is None:
        raise LaunchError(f"local capture needs cgroup2 at /sys/fs/cgroup (it is at {mount}) "
                          "and unshare(1) to bind-mount it there; unshare not found")
    # A private mount namespace: the bind mount is seen by mitmdump and its
    # redirector only, the host's /sys/fs/cgroup stays as it is.
    return [unshare, "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$0" /sys/fs/cgroup && exec "$@"', mount]
