"""The control API's methods of SPEC Parts 3, 5 and 6 for the test-suite client: rules, the trace, sessions.

:class:`ProxyMethods` is a base of :class:`shared.client.InterceptionClient`,
whose ``call`` they use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from shared.constants import (
    METHOD_ADD_RULES,
    METHOD_CLEAR_RULES,
    METHOD_CLEAR_TRACE,
    METHOD_CLOSE_SESSION,
    METHOD_EXPORT_TRACE,
    METHOD_GET_TRACE,
    METHOD_LIST_RULES,
    METHOD_OPEN_SESSION,
    METHOD_REMOVE_RULES,
    METHOD_SEND_PING,
    METHOD_WAIT_FOR_RULE,
)
from shared.rules import Rule


@dataclass(frozen=True)
class SessionInfo:
    """An open session (SPEC Part 6) and where its SDK goes: ``proxy_port`` (direct mode: point the SDK at
    127.0.0.1 on it) or ``mitmproxy_port`` (proxy mode: the SDK's HTTP proxy, ``proxy_url``)."""

    session_id: str
    mode: str
    proxy_port: int | None = None
    mitmproxy_port: int | None = None

    @property
    def proxy_url(self) -> str | None:
        return None if self.mitmproxy_port is None else f"http://127.0.0.1:{self.mitmproxy_port}"


class ProxyMethods:
    async def call(self, method: str, params: Mapping[str, Any], timeout: float = 60) -> Any:
        raise NotImplementedError

    # --- rules (SPEC Part 3) --------------------------------------------------

    async def add_rules(self, *rules: Rule | Mapping[str, Any], position: str = "append") -> list[str]:
        """Add rules (all or nothing: ProxyCallError naming the bad one); their ids, in order."""
        payload = [r.to_json() if isinstance(r, Rule) else dict(r) for r in rules]
        result = await self.call(METHOD_ADD_RULES, {"rules": payload, "position": position})
        return list(result["ids"])

    async def remove_rules(self, *ids: str) -> int:
        return int((await self.call(METHOD_REMOVE_RULES, {"ids": list(ids)}))["removed"])

    async def clear_rules(self) -> int:
        return int((await self.call(METHOD_CLEAR_RULES, {}))["removed"])

    async def list_rules(self) -> list[dict[str, Any]]:
        """Every rule as added, with ``matched`` and ``remaining``."""
        return list((await self.call(METHOD_LIST_RULES, {}))["rules"])

    async def wait_for_rule(self, rule_id: str, count: int = 1, timeout_ms: int = 10_000) -> int:
        """Once the rule has matched ``count`` times in all (past matches count): its match count."""
        params = {"id": rule_id, "count": count, "timeoutMs": timeout_ms}
        result = await self.call(METHOD_WAIT_FOR_RULE, params, timeout=timeout_ms / 1000 + 10)
        return int(result["matched"])

    async def send_ping(self, connection_id: str, side: str, data: str = "") -> None:
        """A WebSocket ping of our own to the client or the server; its pong stops at the proxy."""
        await self.call(METHOD_SEND_PING, {"connectionID": connection_id, "side": side, "data": data})

    # --- the trace (SPEC Part 5) ----------------------------------------------

    async def get_trace(self, since: int = 0, connection_id: str | None = None,
                        limit: int | None = None) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
        """The active suite's trace events from seq ``since`` on (one connection's, if given), and the
        seq to pass next time."""
        params: dict[str, Any] = {"since": since}
        if connection_id is not None:
            params["connectionID"] = connection_id
        if limit is not None:
            params["limit"] = limit
        result = await self.call(METHOD_GET_TRACE, params)
        return list(result["events"]), int(result["next"])

    # --- sessions (SPEC Part 6) ------------------------------------------------

    async def open_session(self, mode: str, *, upstream: str | None = None, pid: int | None = None,
                           pids: list[int] | None = None, port: int | None = None,
                           window: int | None = None) -> SessionInfo:  # fmt: skip
        """Make this connection the suite of a new session: ``direct`` (a port of its own, relaying to
        ``upstream``), ``proxy`` (a mitmproxy listener of its own) or ``local`` (these processes). ``window``: how
        many messages per connection and direction may be with the suite at once (SPEC Part 10)."""
        params: dict[str, Any] = {"mode": mode}
        for name, value in (("upstream", upstream), ("pid", pid), ("pids", pids), ("port", port), ("window", window)):
            if value is not None:
                params[name] = value
        result = await self.call(METHOD_OPEN_SESSION, params)
        return SessionInfo(str(result["sessionID"]), mode, result.get("proxyPort"), result.get("mitmproxyPort"))

    async def close_session(self, close_connections: bool = False) -> None:
        """End this connection's session: its connections are released (or closed with 1001)."""
        await self.call(METHOD_CLOSE_SESSION, {"closeConnections": close_connections})

    async def clear_trace(self) -> int:
        return int((await self.call(METHOD_CLEAR_TRACE, {}))["cleared"])

    async def export_trace(self, fmt: str = "jsonl", connection_id: str | None = None) -> str:
        """The trace as JSON Lines (``jsonl``) or a HAR 1.2 document (``har``), as text."""
        params: dict[str, Any] = {"format": fmt}
        if connection_id is not None:
            params["connectionID"] = connection_id
        return str((await self.call(METHOD_EXPORT_TRACE, params))["data"])
