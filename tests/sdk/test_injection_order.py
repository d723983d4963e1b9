"""SPEC Part 9, injection order: a suite in the SDK's own Node process awaits an injection and then finds
the SDK already holding the frame — every time (tests/js/inject_race.mjs: ably-js and the suite together,
an unsolicited DETACHED, then the channel must be attaching, UTS RTL13a). Before the fix 140 of 150
trials missed; a frame is now answered for only once written, uncompressed (ably-js in Node inflates a
compressed message on zlib's thread pool, after the control socket's answer has been read)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from appserver.app import AppServer
from tests.fake_ably import FakeAbly
from tests.sdk_fixtures import direct, fake  # noqa: F401 - fixtures are found by name

SCRIPT = Path(__file__).parents[1] / "js" / "inject_race.mjs"
TRIALS = 350


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_an_awaited_injection_is_already_with_the_sdk(direct: AppServer, fake: FakeAbly, fmt: str) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed for this test"
    proc = await asyncio.create_subprocess_exec(
        node, str(SCRIPT), cwd=SCRIPT.parent, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "CONTROL_URL": f"ws://127.0.0.1:{direct.control_port}/",
             "UPSTREAM": f"ws://{fake.host}/", "TRIALS": str(TRIALS), "FORMAT": fmt},
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["trials"] == TRIALS
    assert result["misses"] == 0, (result, err.decode()[-3000:])
