"""The active suite as the last link of a connection's chain (verdict.Chain): in it while a suite answers, out
while none does, so that with no suite a frame passes with no call at all."""

from __future__ import annotations

from dataclasses import dataclass

from appserver.control.suite import ActiveSuite
from appserver.verdict import Chain


@dataclass
class FakeSocket:
    id: int
    answers: bool = True


def test_the_suite_is_in_the_chain_while_one_answers() -> None:
    suite = ActiveSuite(1.0, lambda: "m")
    chain = Chain((suite,))
    suite.on_engaged.append(chain.refresh)
    assert chain.deciders == ()
    first, stand_in = FakeSocket(1), FakeSocket(2, answers=False)
    suite.claim(first)  # type: ignore[arg-type]
    assert chain.deciders == (suite,)
    suite.hand_over(stand_in)  # type: ignore[arg-type]  # a uts-proxy session's stand-in answers nothing
    assert chain.deciders == ()
    suite.hand_over(first)  # type: ignore[arg-type]
    assert chain.deciders == (suite,)
    suite.release(first)  # type: ignore[arg-type]
    assert chain.deciders == ()
