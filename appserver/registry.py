"""What the app server has open: connections by id, control sessions, the active suite."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

from appserver.errors import UnknownConnection
from appserver.suite import Interception

if TYPE_CHECKING:
    from appserver.connection import Connection
    from appserver.control import ControlSession


class Registry:
    def __init__(self, interception: Interception) -> None:
        self.interception = interception
        self.connections: dict[str, Connection] = {}
        self.sessions: set[ControlSession] = set()

    @contextlib.contextmanager
    def track(self, connection: Connection) -> Iterator[None]:
        self.connections[connection.id] = connection
        try:
            yield
        finally:
            del self.connections[connection.id]

    def connection(self, connection_id: str) -> Connection:
        try:
            return self.connections[connection_id]
        except KeyError:
            raise UnknownConnection(f"no open connection with connectionID {connection_id!r}") from None
