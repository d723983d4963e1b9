"""The control API's methods of SPEC Parts 3 and 5 for the test-suite client: rules, and the trace.

:class:`ProxyMethods` is a base of :class:`shared.client.InterceptionClient`,
whose ``call`` they use.
"""

from __future__ import annotations

from typing import Any, Mapping

from shared.constants import (
    METHOD_ADD_RULES,
    METHOD_CLEAR_RULES,
    METHOD_CLEAR_TRACE,
    METHOD_EXPORT_TRACE,
    METHOD_GET_TRACE,
    METHOD_LIST_RULES,
    METHOD_REMOVE_RULES,
    METHOD_SEND_PING,
    METHOD_WAIT_FOR_RULE,
)
from shared.rules import Rule


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

    async def clear_trace(self) -> int:
        return int((await self.call(METHOD_CLEAR_TRACE, {}))["cleared"])

    async def export_trace(self, fmt: str = "jsonl", connection_id: str | None = None) -> str:
        """The trace as JSON Lines (``jsonl``) or a HAR 1.2 document (``har``), as text."""
        params: dict[str, Any] = {"format": fmt}
        if connection_id is not None:
            params["connectionID"] = connection_id
        return str((await self.call(METHOD_EXPORT_TRACE, params))["data"])
