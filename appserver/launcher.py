"""Launch and supervise mitmdump with the redirector addon.

Independent of the rest of appserver/: the app server's ``startInterception``
handler calls ``MitmproxyLauncher.ensure()``, and forwards the
``mitmproxyReady`` notification of its control API to ``notify_ready()``.

Local mode (by pid) on Linux needs root, a cgroup2 bind mount, a sudo shim and
a canary process: see local_capture.py. Ready means the canary's probe was
captured (ready_on=canary).

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
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from appserver import local_capture, transparent
from appserver.processes import alive, exited, free_loopback_port, port_in_use, terminate_group
from shared.constants import DEFAULT_CANARY_HOST, DEFAULT_CONTROL_PORT, DEFAULT_HOST, DEFAULT_MITMPROXY_PORT, \
    DEFAULT_PROXY_PORT

logger = logging.getLogger(__name__)
output_logger = logging.getLogger("appserver.mitmdump")

ADDON_PATH = Path(__file__).resolve().parent.parent / "redirector" / "addon.py"
KEEP_LINES = 50
TAIL_LINES = 20
OUTPUT_LINE_LIMIT = 1 << 20
RELEASE_TIMEOUT = 5.0  # seconds for before_stop to end what runs through a mitmdump being stopped


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
        #: Called with mitmdump's process group before a ready mitmdump is stopped on purpose, so the
        #: app server can end, while mitmdump can still pass the ends on, what runs through it.
        self.before_stop: Callable[[int], Awaitable[None]] | None = None
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
        try:
            if mode is ProxyMode.PROXY:
                await self._start_proxy(binary)
            elif mode is ProxyMode.TRANSPARENT:
                rules = await self._start_transparent(binary, uid)
            else:
                await self._start_local(binary, pid)
        except (local_capture.LocalCaptureError, transparent.Unavailable) as exc:
            raise LaunchError(str(exc)) from exc
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
        iptables = transparent.check_target(uid, s.iptables)
        if port_in_use(s.listen_host, s.listen_port):
            raise LaunchError(f"cannot start mitmdump: port {s.listen_host}:{s.listen_port} is already in use")
        port = s.transparent_port or free_loopback_port()
        if s.transparent_port and port_in_use("127.0.0.1", port):
            raise LaunchError(f"cannot start mitmdump: port 127.0.0.1:{port} (transparent mode) is already in use")
        rules = transparent.RedirectRules(uid=uid, to_port=port, iptables=iptables,
                                          exclude_ports=(*appserver_ports(s), s.listen_port, port))
        await asyncio.to_thread(transparent.check_chain_free, rules)
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
            wrapper = local_capture.linux_local_wrapper(env, tmpdir) if sys.platform == "linux" else []
            run.listener, run.canary = await local_capture.start_canary()
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
                if (reason := local_capture.fatal_reason(line)) is not None:
                    run.outcome.set_result(reason)

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
            await self._before_stop(run)
            await cleanup(run)
            logger.info("mitmdump stopped (%s mode)", run.mode.value)


    async def _before_stop(self, run: _Run) -> None:
        proc = run.proc
        ready = run.outcome.done() and run.outcome.result() is None
        if self.before_stop is None or proc is None or proc.returncode is not None or not ready:
            return
        try:
            await asyncio.wait_for(self.before_stop(proc.pid), RELEASE_TIMEOUT)
        except TimeoutError:
            logger.warning("mitmdump stopped before every connection through it was ended (%gs)", RELEASE_TIMEOUT)


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
