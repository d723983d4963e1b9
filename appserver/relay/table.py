"""The connections open right now, by id: what the control methods look connections up in."""

from __future__ import annotations

import contextlib
from typing import Iterator

from appserver.errors import UnknownConnection
from appserver.relay.connection import Connection


class Connections(dict[str, Connection]):
    @contextlib.contextmanager
    def track(self, connection: Connection) -> Iterator[None]:
        """Listed while the block runs; forgotten at once when it ends (nothing kept of a closed one)."""
        self[connection.id] = connection
        try:
            yield
        finally:
            del self[connection.id]

    def open(self, connection_id: str) -> Connection:
        try:
            return self[connection_id]
        except KeyError:
            raise UnknownConnection(f"no open connection with connectionID {connection_id!r}") from None
