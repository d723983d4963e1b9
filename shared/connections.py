"""The connection notifications of the contract (SPEC.md): `interceptedConnectionOpened` and
`interceptedConnectionClosed`, as dataclasses both the app server and the suite's client use.

An HTTP exchange is described by the same :class:`ConnectionOpened` (its URL, host, headers), so
rules and the trace see WebSocket connections and HTTP requests alike.
"""

from __future__ import annotations

import enum
import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping

from shared import ably

#: Connection ids: this process's random half, then a count (unique without a system call per id, as
#: drawing 16 random bytes for each would cost: an HTTP request is described with one too).
_ID_PREFIX = secrets.token_hex(8)
_id_count = itertools.count()


def new_id() -> str:
    """A new connection id: 32 hex digits, unique in this process and unlikely to repeat in another."""
    return f"{_ID_PREFIX}{next(_id_count):016x}"


@dataclass(frozen=True)
class ConnectionOpened:
    """Params of the `interceptedConnectionOpened` notification: an intercepted connection."""

    url: str
    host: str
    proto: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    id: str = field(default_factory=new_id)  # 32 hex digits, as uuid4().hex
    #: Where the proxy sends it (SPEC Part 9): ``url`` and ``host`` are what the client asked for.
    upstream: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "connectionID": self.id,
            "url": self.url,
            "host": self.host,
            "proto": self.proto,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "upstream": self.upstream,
        }

    @classmethod
    def from_json(cls, params: Mapping[str, Any]) -> ConnectionOpened:
        return cls(
            id=params["connectionID"], url=params["url"], host=params["host"], proto=params["proto"],
            path=params["path"], query=dict(params["query"]), headers=dict(params["headers"]),
            upstream=params.get("upstream") or "",
        )  # fmt: skip

    @property
    def format(self) -> ably.Format:
        """The connection's protocol format, from its `format` query parameter (Ably's default is JSON)."""
        return ably.Format.MSGPACK if self.query.get("format") == "msgpack" else ably.Format.JSON


class ClosedBy(enum.StrEnum):
    CLIENT = "client"
    SERVER = "server"
    PROXY = "proxy"


@dataclass(frozen=True)
class ConnectionClosed:
    """Params of the `interceptedConnectionClosed` notification. ``code`` is None for a close
    frame without a code and for an abrupt drop (``clean`` False)."""

    id: str
    closed_by: ClosedBy
    code: int | None
    reason: str
    clean: bool

    def to_json(self) -> dict[str, Any]:
        return {"connectionID": self.id, "closedBy": self.closed_by.value, "code": self.code,
                "reason": self.reason, "clean": self.clean}  # fmt: skip

    @classmethod
    def from_json(cls, params: Mapping[str, Any]) -> ConnectionClosed:
        return cls(params["connectionID"], ClosedBy(params["closedBy"]), params["code"], params["reason"],
                   params["clean"])  # fmt: skip
