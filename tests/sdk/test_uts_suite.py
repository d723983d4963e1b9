"""What ably-js's UTS proxy suite needs of the proxy (SPEC Part 8), test by test, with the real ably-js from npm:
tests/js/uts/proxy_suite.test.mjs drives the app server's --uts-port with the same calls and bodies as ably-js's
helpers/proxy.ts (tests/js/uts/proxy_helper.mjs), sessions aimed at Ably's sandbox hosts, which --route sends to
the project's fake Ably server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from yarl import URL

from appserver.app import AppServer
from tests.conftest import make_config, running_app_server
from tests.fake_ably import FakeAbly
from tests.sdk.test_javascript_client import JS, run

SANDBOX = "sandbox.realtime.ably-nonprod.net"
#: Each of ably-js's UTS proxy tests, with RTN15a's close-frame and TCP-close variants each also making RTN15b's
#: assertions (one test per variant).
TESTS = 27


@pytest.fixture
async def sandbox(no_leaks: None) -> AsyncIterator[FakeAbly]:
    """The fake, as the sandbox behaves: a new connectionKey on resume; a short maxIdleInterval and frequent
    pings, so heartbeat starvation shows in seconds."""
    async with FakeAbly(new_key_on_resume=True, max_idle_interval=3000, ping_interval=1.0) as fake:
        yield fake


@pytest.fixture
async def uts_proxy(sandbox: FakeAbly) -> AsyncIterator[AppServer]:
    config = make_config(uts_port=0, routes=((SANDBOX, URL(f"ws://{sandbox.host}")),))
    async with running_app_server(config) as server:
        yield server


async def test_ably_js_uts_proxy_needs(uts_proxy: AppServer, sandbox: FakeAbly, tmp_path: Path) -> None:
    code, out = await run(str(JS / "node_modules" / ".bin" / "mocha"), "--timeout", "60000", "--reporter", "spec",
                          "uts/proxy_suite.test.mjs", cwd=JS, timeout=600,
                          env={"PROXY_CONTROL_PORT": str(uts_proxy.uts_port), "FAKE_ABLY_PORT": str(sandbox.port),
                               "HOME": str(tmp_path)})  # fmt: skip
    assert code == 0, out
    assert re.search(rf"\b{TESTS} passing\b", out), out
    assert uts_proxy.uts is not None and not uts_proxy.uts.sessions, "a session was left open"
