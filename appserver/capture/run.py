"""One mitmdump process and everything started for it, and how all of it is stopped."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field

from appserver.capture import transparent
from appserver.capture.processes import terminate_group
from appserver.capture.spec import ProxyMode


class LaunchError(Exception):
    """mitmdump could not be started in the requested mode, or was not ready in time."""


@dataclass
class Run:
    mode: ProxyMode
    pid: int | None
    uid: int | None = None  # transparent mode: whose connections are redirected
    rules: transparent.RedirectRules | None = None  # installed (or being installed): ours to remove
    proc: asyncio.subprocess.Process | None = None
    # Result None: ready; a string: why it failed before it was ready.
    outcome: asyncio.Future[str | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    canary: asyncio.subprocess.Process | None = None
    listener: asyncio.Server | None = None
    tmpdir: str | None = None
    stopping: bool = False

    @property
    def ready(self) -> bool:
        return self.outcome.done() and self.outcome.result() is None


async def remove_rules(run: Run) -> None:
    """Remove a run's iptables rules, once; in a thread, so a cancelled caller does not stop it halfway."""
    rules, run.rules = run.rules, None
    if rules is not None:
        await asyncio.to_thread(transparent.remove, rules)


async def cleanup(run: Run) -> None:
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
