"""The pytest plugin's per-test sessions under pytest-xdist: tests/sdk/per_session/scenarios.py (real
ably-js, one session per test) against one shared app server, with 4 workers and with 1. Each worker opens
its own sessions; all pass, and 4 workers take less wall time than 1."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from yarl import URL

from tests.conftest import make_config, running_app_server
from tests.fake_ably import FakeAbly

ROOT = Path(__file__).parents[2]
SCENARIOS = Path(__file__).parent / "per_session" / "scenarios.py"


async def run_scenarios(control_port: int, workers: int) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", str(SCENARIOS), "-q", "-p", "no:cacheprovider", "-n", str(workers),
        "-o", "asyncio_mode=auto", "-o", "python_files=*.py",
        f"--interception-url=ws://127.0.0.1:{control_port}/", "--interception-mode=none",
        "--interception-session=per-test", cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), time.monotonic() - started


async def test_per_test_sessions_under_xdist(no_leaks: None) -> None:
    async with FakeAbly() as fake, running_app_server(make_config(default_upstream=URL(f"ws://{fake.host}/"))) as server:
        code4, out4, wall4 = await run_scenarios(server.control_port, 4)
        assert code4 == 0 and "8 passed" in out4, out4
        code1, out1, wall1 = await run_scenarios(server.control_port, 1)
        assert code1 == 0 and "8 passed" in out1, out1
        assert server.registry.sessions == {}  # every test's session closed with it
    assert wall4 < wall1, f"4 workers took {wall4:.1f}s, 1 worker {wall1:.1f}s"
