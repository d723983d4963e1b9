"""Per-test interception contexts of the test-suite client, and the messages their callbacks get.

Part of the client library: import these from :mod:`shared.client`.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from shared import ably
from shared.connections import ConnectionClosed, ConnectionOpened
from shared.wire import Frame, MessageType

if TYPE_CHECKING:
    from shared.client import InterceptionClient


@dataclass
class Intercepted:
    """One intercepted message, decoded. ``message`` is None when the frame is not a protocol message."""

    id: str
    connection_id: str
    from_client: bool
    frame: Frame
    message: dict[str, Any] | None

    @property
    def format(self) -> ably.Format:
        return ably.Format.for_frame(self.frame.type is MessageType.BINARY)

    @property
    def action(self) -> int | None:
        return None if self.message is None else self.message.get("action")

    def __str__(self) -> str:
        return ably.describe(self.frame.data, self.format)


#: A transform callback: return the message to deliver, or None to drop it (may be async).
Transform = Callable[[Intercepted], "dict[str, Any] | None | Awaitable[dict[str, Any] | None]"]
#: A spy callback: observes, returns nothing (may be async).
Spy = Callable[[Intercepted], "None | Awaitable[None]"]


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@dataclass
class InterceptionContext:
    """Per-test callbacks and connection events. Use through :meth:`InterceptionClient.intercept`."""

    client: InterceptionClient
    transform_client_message: Transform | None = None
    transform_server_message: Transform | None = None
    spy_client_message: Spy | None = None
    spy_server_message: Spy | None = None
    connections: list[ConnectionOpened] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    #: HTTP transform callbacks (for http rules whose action is transform): get an HttpExchange,
    #: return None to pass it on, or an answer of shared.http_dialogue (may be async).
    transform_http_request: Callable[[Any], Any] | None = None
    transform_http_response: Callable[[Any], Any] | None = None
    #: Called with the params of every ruleMatched notification (may be async).
    on_rule_matched: Callable[[dict[str, Any]], Any] | None = None
    rule_matches: list[dict[str, Any]] = field(default_factory=list)
    rules_added: bool = False
    _opened: asyncio.Queue[ConnectionOpened] = field(default_factory=asyncio.Queue)
    _closed: dict[str, asyncio.Future[ConnectionClosed]] = field(default_factory=dict)

    async def add_rules(self, *rules: Any, position: str = "append") -> list[str]:
        """Rules for this test (shared.rules helpers, or dicts); cleared when the context ends."""
        self.rules_added = True
        return await self.client.add_rules(*rules, position=position)

    async def wait_for_rule(self, rule_id: str, count: int = 1, timeout_ms: int = 10_000) -> int:
        return await self.client.wait_for_rule(rule_id, count, timeout_ms)

    async def list_rules(self) -> list[dict[str, Any]]:
        return await self.client.list_rules()

    async def remove_rules(self, *ids: str) -> int:
        return await self.client.remove_rules(*ids)

    async def send_ping(self, connection_id: str, side: str, data: str = "") -> None:
        await self.client.send_ping(connection_id, side, data)

    def _rule_matched(self, params: dict[str, Any]) -> None:
        self.rule_matches.append(params)
        if self.on_rule_matched is not None:
            try:
                result = self.on_rule_matched(params)
                if inspect.isawaitable(result):
                    asyncio.ensure_future(result)
            except Exception as exc:  # a test's callback failed: fail the test at exit
                self.errors.append(exc)

    async def next_connection(self, timeout: float = 10) -> ConnectionOpened:
        """The next connection opened while this context is active."""
        async with asyncio.timeout(timeout):
            return await self._opened.get()

    async def connection_closed(self, connection_id: str, timeout: float = 10) -> ConnectionClosed:
        future = self._closed.setdefault(connection_id, asyncio.get_running_loop().create_future())
        async with asyncio.timeout(timeout):
            return await asyncio.shield(future)

    async def inject_message(self, connection_id: str, message: Mapping[str, Any] | Frame, *, from_client: bool) -> str:
        return await self.client.inject_message(connection_id, message, from_client=from_client)

    async def close_connection(self, connection_id: str, **kwargs: Any) -> None:
        await self.client.close_connection(connection_id, **kwargs)

    async def decide(self, item: Intercepted) -> Frame | None:
        """What this test answers for one intercepted message: its spy sees it, then its transform decides (the
        client calls this for each transformInterceptedMessage while the context is active)."""
        spy = self.spy_client_message if item.from_client else self.spy_server_message
        transform = self.transform_client_message if item.from_client else self.transform_server_message
        if spy is not None:
            await _maybe_await(spy(item))
        if transform is None:
            return item.frame
        result = await _maybe_await(transform(item))
        if result is None:
            return None
        if isinstance(result, Frame):
            return result
        encoded = ably.encode(result, item.format)
        return Frame(item.frame.type, encoded)
