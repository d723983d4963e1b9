"""What the control methods act on: the active suite, the open connections, the control sessions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from appserver.control.suite import ActiveSuite
from appserver.relay.table import Connections
from appserver.rules.hooks import Rules
from appserver.trace.record import DEFAULT_DATA_LIMIT, DEFAULT_LIMIT, Tracer

if TYPE_CHECKING:
    from appserver.control.session import ControlSession


class Registry:
    def __init__(self, suite: ActiveSuite, connections: Connections, message_id: Callable[[], str],
                 trace: bool = True, trace_limit: int = DEFAULT_LIMIT,
                 trace_data_limit: int = DEFAULT_DATA_LIMIT) -> None:  # fmt: skip
        self.suite = suite
        self.connections = connections
        #: The active suite's trace (SPEC Part 5): a sink on every connection, gone with the suite.
        self.tracer = Tracer(trace_limit, trace_data_limit, enabled=trace)
        suite.on_claim.append(self.tracer.start)
        suite.decisions = self.tracer
        #: The active suite's rules (SPEC Part 3): gone with it.
        self.rules = Rules(suite, message_id, self.tracer)
        suite.on_release.append(self._forget_rules)
        suite.on_release.append(self.tracer.forget)
        self.sessions: set[ControlSession] = set()
        #: Ids unique per message for the app server's lifetime (transforms and injections).
        self.next_message_id = message_id

    def _forget_rules(self) -> None:
        self.rules.ruleset.clear("the test suite went away")
