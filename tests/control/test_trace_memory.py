"""The trace's memory stays within its limit however much it records (SPEC Part 5)."""

from __future__ import annotations

import gc
from pathlib import Path

from appserver.trace.record import Tracer
from appserver.verdict import PASS
from shared.wire import Frame


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_rss_is_flat_over_a_million_traced_frames() -> None:
    """1,000,000 frames of 2 KiB each through a trace limited to 1,000 events and 64 bytes of data: RSS after
    the first 100,000 and after the million differ by less than 5 MB, and the trace holds 1,000 events."""
    tracer = Tracer(limit=1000, data_limit=64)
    tracer.start()
    frames = [Frame.text('{"action":15,"channel":"room","messages":[{"data":"' + f"{n:04d}" + "x" * 2000 + '"}]}')
              for n in range(100)]  # fmt: skip
    for n in range(100_000):
        tracer.frame("c1", n % 2 == 0, frames[n % 100], PASS, "r1")
    gc.collect()
    before = rss_kb()
    for n in range(900_000):
        tracer.frame("c1", n % 2 == 0, frames[n % 100], PASS, "r1")
    gc.collect()
    after = rss_kb()
    trace = tracer.current()
    assert trace is not None
    events, _ = trace.events()
    assert events[0] == {**events[0], "kind": "dropped", "count": 999_000}
    assert len(events) == 1001 and trace.next_seq == 1_000_001
    assert all(e["truncated"] and e["action"] == "MESSAGE" and len(e["data"]) == 64 for e in events[1:])
    assert after - before < 5 * 1024, f"RSS grew {after - before} kB over 900,000 traced frames"
