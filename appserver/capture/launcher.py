"""Launch and supervise mitmdump with the redirector addon.

Independent of the rest of appserver/: the app server's ``startInterception``
handler calls ``MitmproxyLauncher.ensure()``, and forwards the
``mitmproxyReady`` notification of its control API to ``notify_ready()``.
What each capture mode checks and starts is in modes.py; this module spawns
mitmdump, waits until it is ready, keeps its output, notices when it dies, and
stops it (after ``before_stop``) with everything started for it.
"""

import asyncio
import collections
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from appserver.capture import local, transparent
from appserver.capture.modes import ADDON_PATH, PLANS, Plan, appserver_ports, early_exit_reason
from appserver.capture.processes import exited, terminate_group
from appserver.capture.run import LaunchError, Run, cleanup, remove_rules
from appserver.capture.spec import ProxyMode
from shared.constants import DEFAULT_CONTROL_PORT, DEFAULT_HOST, DEFAULT_MITMPROXY_PORT, DEFAULT_PROXY_PORT

__all__ = ["ADDON_PATH", "LaunchError", "LauncherSettings", "MitmproxyLauncher", "ProxyMode", "appserver_ports"]

logger = logging.getLogger(__name__)
output_logger = logging.getLogger("appserver.mitmdump")

KEEP_LINES = 50
TAIL_LINES = 20
OUTPUT_LINE_LIMIT = 1 << 20
RELEASE_TIMEOUT = 5.0  # seconds for before_stop to end what runs through a mitmdump being stopped


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


class MitmproxyLauncher:
    def __init__(self, settings: LauncherSettings) -> None:
        self.settings = settings
        #: Called with mitmdump's process group before a ready mitmdump is stopped on purpose, so the
        #: app server can end, while mitmdump can still pass the ends on, what runs through it.
        self.before_stop: Callable[[int], Awaitable[None]] | None = None
        self._lock = asyncio.Lock()
        self._run: Run | None = None
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
            if not self.would_restart(mode, pid, uid):
                return
            await self._stop_locked()
            try:
                await self._start(mode, pid, uid)
            except BaseException:
                await self._stop_locked()  # nothing may be left running after a failure
                raise
            self._transparent_uid = uid if mode is ProxyMode.TRANSPARENT else None

    def would_restart(self, mode: ProxyMode, pid: int | None = None, uid: int | None = None) -> bool:
        """Whether ensure() in that mode would (re)start mitmdump rather than keep the running one."""
        if mode is ProxyMode.PROXY and self._transparent_uid is not None:
            mode, uid = ProxyMode.TRANSPARENT, self._transparent_uid  # a transparent run serves PROXY too
        wanted = (mode, pid if mode is ProxyMode.LOCAL else uid if mode is ProxyMode.TRANSPARENT else None)
        return self.running_mode != wanted

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
        try:
            plan = await PLANS[mode](self.settings, binary, pid, uid)
        except (local.LocalCaptureError, transparent.Unavailable) as exc:
            raise LaunchError(str(exc)) from exc
        await self._spawn(plan)
        run = plan.run
        assert run.proc is not None
        await self._await_ready(run)
        if plan.rules is not None:  # listening: now send the user's connections to it
            run.rules = plan.rules  # from here on, cleanup() removes them, whatever happens
            try:
                await asyncio.to_thread(transparent.install, plan.rules)
            except transparent.IptablesError as exc:
                raise LaunchError(f"mitmdump (transparent mode): could not install the iptables rules: {exc}") \
                    from exc
        if run.canary is not None:  # it has done its job: capture is active
            await terminate_group(run.canary)
        logger.info("mitmdump ready in %s mode (pid %s)", mode.value, run.proc.pid)

    async def _spawn(self, plan: Plan) -> None:
        run, args = plan.run, plan.args
        logger.info("starting %s", " ".join(args))
        try:
            # Its own session, so that stop() can kill the whole tree (the
            # local redirector runs as root in the same process group).
            run.proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=plan.env, start_new_session=True, limit=OUTPUT_LINE_LIMIT)
        except BaseException as exc:
            await cleanup(run)  # what the plan started (a canary, its listener) goes too
            if isinstance(exc, OSError):
                raise LaunchError(f"cannot start {args[0]}: {exc}") from exc
            raise
        self._run = run
        for coro in (self._pump_output(run), self._watch(run)):
            task = asyncio.create_task(coro)
            run.tasks.add(task)
            task.add_done_callback(run.tasks.discard)

    async def _await_ready(self, run: Run) -> None:
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

    async def _pump_output(self, run: Run) -> None:
        assert run.proc is not None and run.proc.stdout is not None
        async for raw in run.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._tail.append(line)
            output_logger.info("mitmdump: %s", line)
            if run.mode is ProxyMode.LOCAL and not run.outcome.done():
                if (reason := local.fatal_reason(line)) is not None:
                    run.outcome.set_result(reason)

    async def _watch(self, run: Run) -> None:
        assert run.proc is not None
        code = await run.proc.wait()
        if not run.outcome.done():
            run.outcome.set_result(early_exit_reason(self.settings, run, code, list(self._tail)))
        elif not run.stopping:
            logger.error("mitmdump (%s mode) exited unexpectedly with code %s\n%s",
                         run.mode.value, code, self.tail())
            await remove_rules(run)  # or the user's connections would go to a closed port

    # -- stopping ---------------------------------------------------------

    async def _stop_locked(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            await self._before_stop(run)
            await cleanup(run)
            logger.info("mitmdump stopped (%s mode)", run.mode.value)


    async def _before_stop(self, run: Run) -> None:
        proc = run.proc
        if self.before_stop is None or proc is None or proc.returncode is not None or not run.ready:
            return
        try:
            await asyncio.wait_for(self.before_stop(proc.pid), RELEASE_TIMEOUT)
        except TimeoutError:
            logger.warning("mitmdump stopped before every connection through it was ended (%gs)", RELEASE_TIMEOUT)
