"""The control API's methods of SPEC Part 3: rules, waiting for them, and the suite's own pings."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from appserver.control.registry import Registry
from appserver.control.socket import ControlSocket
from appserver.errors import NotTheActiveSuite, RuleWaitTimedOut
from appserver.relay.lifecycle import Side
from appserver.rules.engine import wait_for
from appserver.rules.compile import add_rules as compile_and_add
from appserver.rules.verdicts import Rules
from appserver.rules.schema import RuleError
from shared.constants import (
    METHOD_ADD_RULES,
    METHOD_CLEAR_RULES,
    METHOD_LIST_RULES,
    METHOD_REMOVE_RULES,
    METHOD_SEND_PING,
    METHOD_WAIT_FOR_RULE,
)
from shared.wire import WireError, require

Method = Callable[..., Awaitable[dict[str, Any]]]
MAX_PING_BYTES = 125  # a control frame's payload (RFC 6455 §5.5)


def make_rule_methods(registry: Registry) -> dict[str, Method]:
    def active(session: ControlSocket) -> Rules:
        scope = registry.scope_of(session)
        if scope.suite.active is not session:
            raise NotTheActiveSuite("only the active test suite may use rules: call startInterception (or "
                                    "openSession) first")  # fmt: skip
        return scope.rules

    async def add_rules(session: ControlSocket, **params: Any) -> dict[str, Any]:
        return {"ids": compile_and_add(active(session).ruleset, params)}

    async def remove_rules(session: ControlSocket, **params: Any) -> dict[str, Any]:
        rules = active(session)
        ids = require(params, "ids", list)
        if not all(isinstance(i, str) for i in ids):
            raise WireError("ids", "must be a list of rule ids (strings)")
        return {"removed": rules.ruleset.remove(ids)}

    async def clear_rules(session: ControlSocket, **params: Any) -> dict[str, Any]:
        return {"removed": active(session).ruleset.clear()}

    async def list_rules(session: ControlSocket, **params: Any) -> dict[str, Any]:
        return {"rules": active(session).ruleset.listed()}

    async def wait_for_rule(session: ControlSocket, **params: Any) -> dict[str, Any]:
        rules = active(session)
        rule_id = require(params, "id", str)
        count = require(params, "count", int) if "count" in params else 1
        timeout_ms = require(params, "timeoutMs", int) if "timeoutMs" in params else 10_000
        if count < 1 or timeout_ms < 0:
            raise WireError("count" if count < 1 else "timeoutMs", "must be positive")
        rule = rules.ruleset.get(rule_id)
        try:
            return {"matched": await wait_for(rule, count, timeout_ms)}
        except TimeoutError:
            raise RuleWaitTimedOut(f"rule {rule_id!r} matched {rule.matched} of {count} in {timeout_ms} ms") from None
        except RuleError as exc:  # removed or cleared while waiting
            raise RuleWaitTimedOut(f"rule {rule_id!r}: {exc}") from None

    async def send_ping(session: ControlSocket, **params: Any) -> dict[str, Any]:
        connection = registry.connection_of(registry.scope_of(session), require(params, "connectionID", str))
        side = require(params, "side", str)
        if side not in ("client", "server"):
            raise WireError("side", "must be 'client' or 'server'")
        data = require(params, "data", str).encode() if "data" in params else b""
        if len(data) > MAX_PING_BYTES:
            raise WireError("data", f"must be at most {MAX_PING_BYTES} UTF-8 bytes")
        await connection.send_ping(Side(side), data)
        return {}

    return {
        METHOD_ADD_RULES: add_rules,
        METHOD_REMOVE_RULES: remove_rules,
        METHOD_CLEAR_RULES: clear_rules,
        METHOD_LIST_RULES: list_rules,
        METHOD_WAIT_FOR_RULE: wait_for_rule,
        METHOD_SEND_PING: send_ping,
    }
