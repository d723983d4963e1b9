"""Per-test interception contexts of the test-suite client, and the messages their callbacks get.

Part of the client library: import these from :mod:`shared.client`.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from shared import ably
from shared.wire import ConnectionClosed, ConnectionOpened, Frame, MessageType

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
    _opened: asyncio.Queue[ConnectionOpened] = field(default_factory=asyncio.Queue)
    _closed: dict[str, asyncio.Future[ConnectionClosed]] = field(default_factory=dict)

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

    async def _decide(self, item: Intercepted) -> Frame | None:
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
