"""The trace's memory stays within its limit however much it records (SPEC Part 5)."""

from __future__ import annotations

import gc
from pathlib import Path

from appserver.trace.record import Tracer
from appserver.verdict import PASS, Replace
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


def test_a_replaced_frame_shows_its_replacement_and_what_changed_whatever_its_size() -> None:
    """A replacement is shown as the trace shows any frame, with the paths it changed: a small frame and its
    replacement are kept whole and worked out when read; a large one's are worked out when recorded, and only
    the data limit of either is kept (an identical replacement, shown alike, changed nothing)."""
    tracer = Tracer(limit=100, data_limit=64)
    tracer.start()
    small = Frame.text('{"action":15,"channel":"a","id":"1"}')
    small_edit = Frame.text('{"action":15,"channel":"b","id":"1"}')
    big = Frame.text('{"action":15,"channel":"room","messages":[{"data":"' + "x" * 5000 + '"}]}')
    big_edit = Frame.text('{"action":15,"channel":"hall","messages":[{"data":"' + "x" * 5000 + '"}]}')
    tracer.frame("c1", True, small, Replace(small_edit), "suite")
    tracer.frame("c1", True, big, Replace(Frame.text(str(big.data))), "suite")  # an equal copy
    tracer.frame("c1", False, big, Replace(big_edit), "suite")
    trace = tracer.current()
    assert trace is not None
    kept = [entry[3] for entry in trace._entries]  # noqa: SLF001 - what stays in memory
    assert kept[0]["_frame"] is small and kept[0]["_replacedBy"] is small_edit
    assert all(len(value["_data"]) <= 64 for fields in kept[1:] for key, value in fields.items()
               if key in ("_kept", "_replacedKept"))  # fmt: skip
    first, same, changed = trace.events()[0]
    assert first["decision"] == "replace" and first["by"] == "suite" and first["channel"] == "a"
    assert first["replacedBy"] == {"type": "text", "size": len(small_edit.data), "action": "MESSAGE",
                                   "channel": "b", "data": small_edit.data}  # fmt: skip
    assert first["changed"] == {"channel": ["a", "b"]}
    assert same["replacedBy"] == {k: same[k] for k in ("type", "size", "action", "channel", "data", "truncated")}
    assert "changed" not in same and len(same["replacedBy"]["data"]) == 64
    assert changed["replacedBy"]["channel"] == "hall" and changed["replacedBy"]["truncated"] is True
    assert changed["changed"] == {"channel": ["room", "hall"]} and changed["fromClient"] is False
