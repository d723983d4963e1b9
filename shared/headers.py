"""HTTP header rules both the redirector and the app server apply (no I/O, any header container)."""

from __future__ import annotations

from collections.abc import Iterable


def connection_tokens(connection_values: Iterable[str]) -> set[str]:
    """The lower-cased comma-separated tokens of every Connection header (RFC 9110 §7.6.1)."""
    return {token.strip().lower() for value in connection_values for token in value.split(",") if token.strip()}


def is_websocket_upgrade(upgrade: str, connection_values: Iterable[str]) -> bool:
    """RFC 6455 §4.1: Upgrade is websocket and Connection lists "upgrade" among its tokens,
    in any case and spacing (browsers send "keep-alive, Upgrade")."""
    return upgrade.strip().lower() == "websocket" and "upgrade" in connection_tokens(connection_values)
