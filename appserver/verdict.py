"""What may happen to one intercepted frame, and who decides it.

A connection's pump asks a chain of deciders about every data frame; the first
that has an opinion gives the :data:`Verdict`, and the pump applies it without
knowing where it came from. Today the chain has one link, the active test
suite (control/suite.py); the rule engine will be its first link. The verdicts
grow with it (delay, inject, close …): each is a frozen value here, applied in
relay/pump.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.wire import Frame


@dataclass(frozen=True, slots=True)
class Pass:
    """Deliver the frame as it arrived."""


@dataclass(frozen=True, slots=True)
class Drop:
    """Deliver nothing."""


@dataclass(frozen=True, slots=True)
class Replace:
    """Deliver this frame instead."""

    frame: Frame


Verdict = Pass | Drop | Replace
PASS = Pass()
DROP = Drop()


class Decider(Protocol):
    """One link of a decider chain."""

    async def decide(self, connection_id: str, frame: Frame, from_client: bool) -> Verdict | None:
        """The frame's verdict, or None: no opinion, the next link decides."""
        ...


async def decide(chain: Sequence[Decider], connection_id: str, frame: Frame, from_client: bool) -> Verdict:
    """Ask the links in order; a frame no link has an opinion on passes."""
    for decider in chain:
        verdict = await decider.decide(connection_id, frame, from_client)
        if verdict is not None:
            return verdict
    return PASS
