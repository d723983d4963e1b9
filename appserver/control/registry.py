"""What the control methods act on: the scopes (the classic suite's, and each session's: SPEC Part 6),
the open connections, the control connections."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

from appserver.control.scope import Scope
from appserver.control.suite import ActiveSuite
from appserver.errors import UnknownConnection
from appserver.relay.connection import Connection
from appserver.events import LogSink
from appserver.relay.table import Connections
from appserver.trace.record import DEFAULT_DATA_LIMIT, DEFAULT_LIMIT

if TYPE_CHECKING:
    from appserver.control.socket import ControlSocket
    from appserver.control.sessions import Session


class Registry:
    def __init__(self, suite: ActiveSuite, connections: Connections, message_id: Callable[[], str],
                 trace: bool = True, trace_limit: int = DEFAULT_LIMIT,
                 trace_data_limit: int = DEFAULT_DATA_LIMIT) -> None:  # fmt: skip
        self.connections = connections
        #: Ids unique per message for the app server's lifetime (transforms and injections).
        self.next_message_id = message_id
        self.log = LogSink()
        self._trace = (trace, trace_limit, trace_data_limit)
        self._transform_timeout = suite.transform_timeout
        self._idle_warning = suite.idle_warning
        #: The classic single active suite (startInterception): the default scope.
        self.classic = self.new_scope(suite)
        #: The control connections.
        self.controls: set[ControlSocket] = set()
        #: Sessions (SPEC Part 6) by id, and by the control connection that holds each.
        self.sessions: dict[str, Session] = {}
        self.session_ids = itertools.count(1)
        self.session_of: dict[ControlSocket, Session] = {}
        #: The redirector's control connection in the running mitmdump (it sent mitmproxyReady), and what to
        #: do each time one is ready (a restarted mitmdump gets the sessions' listeners again).
        self.mitmproxy_channel: ControlSocket | None = None
        self.on_mitmproxy_ready: list[Callable[[], None]] = []

    def new_scope(self, suite: ActiveSuite | None = None, session_id: str | None = None,
                  trace_data_limit: int | None = None) -> Scope:  # fmt: skip
        """``trace_data_limit``: this scope's, when not the app server's (a uts-proxy session logs whole
        messages), and then traced even under --no-trace."""
        suite = suite or ActiveSuite(self._transform_timeout, self.next_message_id, idle_warning=self._idle_warning)
        trace, limit, data_limit = self._trace
        if trace_data_limit is not None:
            trace, data_limit = True, trace_data_limit
        return Scope(suite, self.next_message_id, self.log, trace, limit, data_limit, session_id)

    # the classic scope's parts, by their old names
    @property
    def suite(self) -> ActiveSuite:
        return self.classic.suite

    def scope_of(self, control: ControlSocket) -> Scope:
        """The scope a control connection acts on: its session's, else the classic suite's."""
        session = self.session_of.get(control)
        return session.scope if session is not None else self.classic

    def connection_of(self, scope: Scope, connection_id: str) -> Connection:
        """An open connection of this scope; another scope's (or nobody's) is as unknown as any (-32002)."""
        connection = self.connections.open(connection_id)
        if connection.owner is not scope:
            raise UnknownConnection(f"no open connection with connectionID {connection_id!r}")
        return connection
