"""`python -m appserver doctor`: every step in plain words, an end-to-end proof, exit status by outcome."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appserver.capture import local
from appserver.doctor.checks import Step
from appserver.doctor.proof import CANARY, _seen
from tests.mitm_helpers import pids_with_arg


def doctor(*args: str, confdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appserver", "doctor", "--mitmproxy-confdir", str(confdir), *args],
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def test_proxy_mode_is_proven_end_to_end(tmp_path: Path) -> None:
    """Proxy mode: the checks pass, a real mitmdump is started, the canaries come through the app server; exit 0,
    and nothing of it is left running."""
    confdir = tmp_path / "conf"
    done = doctor(confdir=confdir)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for line in ("[ ok ] Python: 3.1", "[ ok ] mitmproxy: 12.", f"[ ok ] mitmproxy CA: {confdir}/mitmproxy-ca-cert.pem (created now)",
                 "[ ok ] start interception (proxy mode): mitmdump listens on 127.0.0.1:",
                 "[ ok ] WebSocket canary: echoed; the app server relayed it as connection",
                 "[ ok ] HTTP canary: GET http://127.0.0.1:", "interception works in proxy mode"):  # fmt: skip
        assert line in out, out
    assert "what to do: for wss:// and https://" in out or "[ ok ] trust in Node" in out
    assert "certutil -d sql:$HOME/.pki/nssdb" in out  # the Chromium hint
    assert pids_with_arg(str(confdir)) == []


@pytest.mark.skipif(os.geteuid() != 0 or local.cgroup2_mount() is None,
                    reason="local mode needs root and cgroup2 (doctor then says so: see the failing-step test)")
def test_local_mode_is_proven_with_a_captured_probe(tmp_path: Path) -> None:
    """Local mode: a probe process is captured by pid and its canaries reach the app server; --pid is checked."""
    done = doctor("--mode", "local", "--pid", str(os.getpid()), confdir=tmp_path / "conf")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"[ ok ] process {os.getpid()}: " in done.stdout
    assert "[ ok ] start interception (local mode): mitmdump captures the probe process" in done.stdout
    assert "interception works in local mode" in done.stdout


def test_a_failed_step_says_what_to_do_and_exits_1(tmp_path: Path) -> None:
    """A pid that does not exist and a confdir that cannot be made: FAIL with what to do, no proof run, exit 1."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    done = doctor("--mode", "local", "--pid", "999999999", confdir=not_a_dir / "conf")
    assert done.returncode == 1
    assert "[FAIL] process 999999999: no such process" in done.stdout
    assert "[FAIL] mitmproxy CA: cannot create it in" in done.stdout
    assert "what to do: make that directory writable, or pass --mitmproxy-confdir DIR" in done.stdout
    assert "the end-to-end proof was not run" in done.stdout


class Tracing:
    """A suite's client whose trace is given (what _seen reads)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    async def get_trace(self) -> tuple[list[dict[str, Any]], int]:
        return self.events, len(self.events) + 1


def test_canaries_that_bypass_the_app_server_fail() -> None:
    """Canaries answered, but the app server's trace shows none of them (traffic went around the proxy): both
    steps fail and say why."""
    sent = {"ws": CANARY, "http": [200, CANARY]}
    steps: list[Step] = asyncio.run(_seen(Tracing([]), 1234, sent))  # type: ignore[arg-type]
    assert [(s.name, s.ok) for s in steps] == [("WebSocket canary", False), ("HTTP canary", False)]
    assert "not seen by the app server" in steps[0].found and "does not reach the app server" in steps[0].todo
    assert "not seen by the app server" in steps[1].found
