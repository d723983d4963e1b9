"""The command docs/uts-proxy.md gives: `python -m appserver --uts-port PORT` (what `make run-uts` runs) serves
uts-proxy's API, answers ably-js's helper's /health, and stops on SIGTERM leaving nothing behind."""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from tests.capture.test_entry_point import free_port


async def test_the_app_server_serves_uts_proxys_api_on_its_port(no_leaks: None) -> None:
    control, proxy, uts = free_port(), free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver", "--uts-port", str(uts), "--control-port", str(control),
        "--proxy-port", str(proxy), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    printed: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any(f"uts-proxy's API on http://127.0.0.1:{uts}/" in line for line in printed):
                line = (await proc.stderr.readline()).decode()
                assert line, "the app server stopped: " + "".join(printed)
                printed.append(line)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://localhost:{uts}/health") as health:
                assert health.status == 200 and await health.json() == {"ok": True}
            async with http.post(f"http://localhost:{uts}/sessions",
                                 json={"target": {"realtimeHost": "127.0.0.1:9", "insecure": True}}) as created:
                assert created.status == 201, await created.text()
    finally:
        proc.terminate()
        await proc.communicate()
    assert proc.returncode == 0
