"""The real ably-js SDK, driven from asyncio through tests/js/driver.mjs.

    async with AblyDriver(fake_ably_options(fake.host)) as sdk:
        await sdk.wait_for_state("connected")
        await sdk.command("publish", channel="ch", name="n", data="hi")

Events (see driver.mjs) are kept in order; `next_event` returns the next one
of a kind that no earlier `next_event` of that kind returned, so a test can
wait for "disconnected" and then "connected" without racing the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).parent / "js"
DRIVER = JS_DIR / "driver.mjs"
#: The same protocol, ably-js's browser bundle in headless Chromium (see browser_driver.mjs).
BROWSER_DRIVER = JS_DIR / "browser_driver.mjs"

Event = dict[str, Any]


class DriverError(RuntimeError):
    """The driver process could not run, or died."""


class CommandError(Exception):
    """A driver command failed; ``error`` is the SDK's ErrorInfo (code, statusCode, message)."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        super().__init__(f"{command}: {error}")
        self.error = error


def fake_ably_options(host: str, **overrides: Any) -> dict[str, Any]:
    """ClientOptions that point ably-js at a plain-WebSocket server on host ("127.0.0.1:PORT").

    Every request ably-js makes goes to that host: the realtime WebSocket, REST
    calls, and both connectivity checks (which would otherwise go to
    internet-up.ably-realtime.com and ws-up.ably-realtime.com). The key is a
    syntactically valid fake, sent as ``key=`` (basic auth, no token request).
    """
    name, _, port = host.rpartition(":")
    options: dict[str, Any] = {
        "key": "fakeApp.fakeKey:fakeSecret",
        "endpoint": name,
        "port": int(port),
        "tls": False,
        "fallbackHosts": [],
        "connectivityCheckUrl": f"http://{host}/is-the-internet-up.txt",
        "wsConnectivityCheckUrl": f"ws://{host}/ws-up",
    }
    return {**options, **overrides}


class AblyDriver:
    """A `node driver.mjs` child process with one Realtime client (made on enter if options are given).

    ``script`` and ``args`` choose another driver speaking the same protocol, e.g.
    ``AblyDriver(options, script=BROWSER_DRIVER, args=["--proxy-server", "http://127.0.0.1:8080"])``.
    """

    def __init__(
        self, options: dict[str, Any] | None = None, *, node: str = "node", script: Path = DRIVER,
        args: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self.options = options
        self.node = node
        self.script = script
        self.args = tuple(args)
        self.events: list[Event] = []
        self.stderr = bytearray()
        self._process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._pending: dict[int, asyncio.Future[Event]] = {}
        self._ids = 0
        self._cursors: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._exited = False

    async def __aenter__(self) -> AblyDriver:
        await self.start()
        try:
            if self.options is not None:
                await self.command("create", options=self.options)
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if not (JS_DIR / "node_modules" / "ably").is_dir():
            raise DriverError(
                f"ably-js is not installed in {JS_DIR}: run `npm ci --prefix tests/js` from the repository root"
                " (make test does)"
            )
        node = shutil.which(self.node)
        if node is None:
            raise DriverError(f"{self.node!r} not found: Node.js 18+ is needed for the ably-js tests")
        self._process = await asyncio.create_subprocess_exec(
            node,
            str(self.script),
            *self.args,
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._readers = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]

    async def stop(self, timeout: float = 5) -> None:
        """Close stdin (the driver closes its client and exits); kill it if it does not."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
            with contextlib.suppress(ConnectionError):
                await process.stdin.wait_closed()
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._process = None

    async def command(self, cmd: str, timeout: float = 15, **params: Any) -> Any:
        """Run one command; its value, or CommandError with the SDK's error."""
        process = self._process
        if process is None or process.stdin is None or self._exited:
            raise DriverError(f"driver is not running; stderr: {self.stderr.decode(errors='replace')}")
        self._ids += 1
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._pending[self._ids] = future
        process.stdin.write(json.dumps({"id": self._ids, "cmd": cmd, **params}).encode() + b"\n")
        await process.stdin.drain()
        try:
            async with asyncio.timeout(timeout):
                result = await future
        finally:
            self._pending.pop(self._ids, None)
        if not result["ok"]:
            raise CommandError(cmd, result["error"])
        return result["value"]

    async def next_event(
        self, kind: str, predicate: Callable[[Event], bool] | None = None, timeout: float = 15
    ) -> Event:
        """The next event of that kind (after the last one returned) that matches predicate."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                start = self._cursors.get(kind, 0)
                for index in range(start, len(self.events)):
                    event = self.events[index]
                    if event["event"] == kind and (predicate is None or predicate(event)):
                        self._cursors[kind] = index + 1
                        return event
                if self._exited:
                    raise DriverError(f"driver exited; stderr: {self.stderr.decode(errors='replace')}")
                await self._changed.wait()

    async def wait_for_state(self, state: str, timeout: float = 15) -> Event:
        """The next connection state change to that state."""
        return await self.next_event("state", lambda e: e["current"] == state, timeout)

    def states(self) -> list[str]:
        """Every connection state reached so far, in order."""
        return [e["current"] for e in self.events if e["event"] == "state"]

    async def _read_stdout(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        try:
            async for line in self._process.stdout:
                event = json.loads(line)
                if event["event"] == "result":
                    future = self._pending.get(event["id"])
                    if future is not None and not future.done():
                        future.set_result(event)
                    continue
                async with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        finally:
            self._exited = True
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(DriverError("driver exited before answering"))
            async with self._changed:
                self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        while chunk := await self._process.stderr.read(65536):
            self.stderr += chunk


REPO = Path(__file__).resolve().parent.parent
PYTHON_SDK_VENV = REPO / ".venv-ably-python"
PYTHON_DRIVER = Path(__file__).parent / "py_sdk" / "driver.py"


def ably_python_options(host: str, **overrides: Any) -> dict[str, Any]:
    """ably-python 3.x ClientOptions for a plain-WebSocket server on host ("127.0.0.1:PORT"): its realtime
    transport puts the endpoint in the URL as it is, so the port goes inside it; a fake key (basic auth);
    no fallback hosts."""
    options: dict[str, Any] = {"key": "fakeApp.fakeKey:fakeSecret", "endpoint": host, "tls": False,
                               "fallback_hosts": []}  # fmt: skip
    return {**options, **overrides}


class AblyPythonDriver(AblyDriver):
    """The real ably-python SDK in a child process of its own virtualenv (tests/py_sdk/driver.py),
    speaking the same protocol as the Node driver (commands create, connect, connection, attach,
    publish, close; state and channelState events)."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options, node=str(PYTHON_SDK_VENV / "bin" / "python"), script=PYTHON_DRIVER)

    async def start(self) -> None:
        if not (PYTHON_SDK_VENV / "bin" / "python").exists():
            raise DriverError(f"ably-python is not installed in {PYTHON_SDK_VENV}: run `make test-deps`")
        self._process = await asyncio.create_subprocess_exec(
            self.node, str(self.script), cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._readers = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]
