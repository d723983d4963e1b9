"""What one test suite acts on: its suite link, its rules, its trace, its connections (SPEC Part 6).

The classic single active suite (``startInterception``) is one scope; every
session (``openSession``) is another, side by side. A connection or HTTP
exchange is given its scope's :class:`~appserver.relay.endpoint.Handlers` when
it arrives and keeps them: once a scope is closed they have nothing left to
say (no suite, no rules, no trace), so what was its traffic passes through
unchanged, and belongs to nobody.
"""

from __future__ import annotations

from collections.abc import Callable

from appserver.control.suite import ActiveSuite
from appserver.relay.endpoint import Handlers
from appserver.events import LogSink
from appserver.rules.hooks import RuleHooks
from appserver.rules.verdicts import Rules
from appserver.trace.record import DEFAULT_DATA_LIMIT, DEFAULT_LIMIT, Tracer
from appserver.verdict import Chain


class Scope:
    def __init__(self, suite: ActiveSuite, message_id: Callable[[], str], log: LogSink, trace: bool = True,
                 trace_limit: int = DEFAULT_LIMIT, trace_data_limit: int = DEFAULT_DATA_LIMIT,
                 session_id: str | None = None) -> None:  # fmt: skip
        self.suite = suite
        #: None for the classic suite; a session's id (a string) otherwise.
        self.session_id = session_id
        #: The scope's trace (SPEC Part 5): a sink on each of its connections, started and gone with its suite.
        self.tracer = Tracer(trace_limit, trace_data_limit, enabled=trace)
        suite.decisions = self.tracer
        suite.on_claim.append(self.tracer.start)
        #: The scope's rules (SPEC Part 3): gone with its suite.
        self.rules = Rules(suite, message_id, self.tracer)
        hooks = RuleHooks(self.rules)
        suite.on_release.append(self._forget_rules)
        suite.on_release.append(self.tracer.forget)
        chain = Chain((self.rules, suite))
        self.rules.on_engaged.append(chain.refresh)
        suite.on_engaged.append(chain.refresh)
        self.handlers = Handlers(chain=chain, sinks=(log, suite, self.rules, self.tracer),
                                 gate=hooks, hooks=hooks, http_gate=hooks, owner=self)  # fmt: skip

    def _forget_rules(self) -> None:
        self.rules.forget("the test suite went away")


def nobodys(log: LogSink) -> Handlers:
    """For traffic stamped with a session that is gone: logged, passed through unchanged, nobody's."""
    return Handlers(chain=Chain(), sinks=(log,))
