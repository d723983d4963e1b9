"""The rooms one message walks through: which of the product's files run while it is handled, in order.

A *visit* is a stretch of execution in one product file (appserver/, shared/, redirector/): it starts when
the file's code is called or resumed from anywhere else (another product file, a library, the event loop)
and lasts while the calls stay in that file or leave the product altogether (aiohttp, asyncio, msgpack …:
their code is the floor the rooms stand on, not a room). A file entered twice is a file with two visits.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = tuple(str(ROOT / name) + "/" for name in ("appserver", "shared", "redirector"))


def _room(filename: str) -> str | None:
    if filename.startswith(PRODUCT):
        return str(Path(filename).relative_to(ROOT))
    return None


class Walk:
    """Records the visits while active (``with Walk() as walk:``)."""

    def __init__(self) -> None:
        self.visits: list[str] = []
        #: Each visit as (file, the function it begins in).
        self.calls: list[tuple[str, str]] = []
        self._previous: Any = None

    def _profile(self, frame: FrameType, event: str, arg: object) -> None:
        if event != "call":
            return
        room = _room(frame.f_code.co_filename)
        if room is None:
            return
        caller = frame.f_back
        while caller is not None and _room(caller.f_code.co_filename) is None:
            caller = caller.f_back
        came_from = None if caller is None else _room(caller.f_code.co_filename)
        # A call from the same file stays in its visit; a call from another file, or from no product code at
        # all (the event loop running a task or a callback), is a new one.
        if came_from != room:
            self.visits.append(room)
            self.calls.append((room, frame.f_code.co_qualname))

    def __enter__(self) -> "Walk":
        self._previous = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(self._previous)

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(self.visits))

    def entered(self, besides: tuple[str, ...] = ()) -> dict[str, int]:
        """How many times each file was entered, not counting visits that begin in the functions ``besides``
        (qualified names)."""
        counts: dict[str, int] = {}
        for room, function in self.calls:
            if function not in besides:
                counts[room] = counts.get(room, 0) + 1
        return counts
