"""The active suite as the last link of a connection's chain (verdict.Chain): in it while a suite answers, out
while none does, so that with no suite a frame passes with no call at all."""

from __future__ import annotations

from dataclasses import dataclass, field

from appserver.control.suite import ActiveSuite
from appserver.verdict import Chain


@dataclass
class FakeSocket:
    id: int
    answers: bool = True
    cork: None = None  # writes nothing


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


@dataclass
class FakeCork:
    whole_turns: bool = False


@dataclass
class CorkedSocket:
    id: int
    answers: bool = True
    cork: FakeCork = field(default_factory=FakeCork)


def test_only_the_active_suites_connection_holds_whole_turns_and_only_with_a_window() -> None:
    """shared/cork.py: the requests a turn writes to the suite leave together, the first too, while its window is
    > 1; a connection that is not (or no longer) the suite's writes a lone message at once."""
    suite = ActiveSuite(1.0, lambda: "m")
    first, second = CorkedSocket(1), CorkedSocket(2)
    suite.set_window(8)  # set before the claim (openSession), then claimed
    suite.claim(first)  # type: ignore[arg-type]
    assert first.cork.whole_turns
    suite.hand_over(second)  # type: ignore[arg-type]  # attachSession: another connection answers from now on
    assert (first.cork.whole_turns, second.cork.whole_turns) == (False, True)
    suite.set_window(1)
    assert not second.cork.whole_turns
    suite.set_window(16)
    assert second.cork.whole_turns
    suite.release(second)  # type: ignore[arg-type]
    assert not second.cork.whole_turns and suite.window == 1
