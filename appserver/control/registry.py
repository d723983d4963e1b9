"""What the control methods act on: the active suite, the open connections, the control sessions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from appserver.control.suite import ActiveSuite
from appserver.relay.table import Connections
from appserver.rules.hooks import Rules

if TYPE_CHECKING:
    from appserver.control.session import ControlSession


class Registry:
    def __init__(self, suite: ActiveSuite, connections: Connections, message_id: Callable[[], str]) -> None:
        self.suite = suite
        self.connections = connections
        #: The active suite's rules (SPEC Part 3): gone with it.
        self.rules = Rules(suite, message_id)
        suite.on_release.append(self._forget_rules)
        self.sessions: set[ControlSession] = set()
        #: Ids unique per message for the app server's lifetime (transforms and injections).
        self.next_message_id = message_id

    def _forget_rules(self) -> None:
        self.rules.ruleset.clear("the test suite went away")
