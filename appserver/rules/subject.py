"""What one event is about, as rules see it: its connection's handshake, its frame, its decoded message.

The Ably message of a frame is decoded at most once, and only when a rule
asks for it (:meth:`Subject.message`); a catch-all rule never decodes.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from shared import ably
from shared.wire import ConnectionOpened, Frame, MessageType

_UNDECODED: Any = object()


@dataclass(slots=True)
class Subject:
    event: str
    handshake: ConnectionOpened
    from_client: bool | None = None
    frame: Frame | None = None
    payload: bytes | None = None  # a ping's or pong's
    _message: Any = field(default=_UNDECODED)

    @property
    def connection_id(self) -> str:
        return self.handshake.id

    @property
    def format(self) -> ably.Format:
        """The frame's format (binary frames are msgpack), else the connection's (its format= query)."""
        if self.frame is not None:
            return ably.Format.for_frame(self.frame.type is MessageType.BINARY)
        return self.handshake.format

    def message(self) -> dict[str, Any] | None:
        """The frame's Ably protocol message, or None when there is none or it does not decode."""
        if self._message is _UNDECODED:
            self._message = None
            if self.frame is not None:
                try:
                    self._message = ably.decode(self.frame.data, self.format)
                except ably.DecodeError:
                    pass
        return self._message  # type: ignore[no-any-return]


def glob(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """Shell-style: ``*`` matches anything, ``/`` included; ``?`` one character; ``[…]`` a class."""
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE if ignore_case else 0)


def path_get(value: Any, path: tuple[str, ...]) -> Any:
    """The value at a dotted path (array indices are numbers), or the sentinel MISSING."""
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return MISSING
    return value


def path_set(value: dict[str, Any], path: tuple[str, ...], new: Any) -> None:
    """Set the value at a dotted path, creating missing objects on the way."""
    for index, key in enumerate(path[:-1]):
        nxt = path_get(value, (key,))
        if nxt is MISSING or not isinstance(nxt, (dict, list)):
            nxt = {}
            _put(value, key, nxt)
        value = nxt
    _put(value, path[-1], new)


def path_unset(value: Any, path: tuple[str, ...]) -> None:
    parent = path_get(value, path[:-1])
    if isinstance(parent, dict):
        parent.pop(path[-1], None)
    elif isinstance(parent, list) and path[-1].isdigit() and int(path[-1]) < len(parent):
        del parent[int(path[-1])]


def _put(container: Any, key: str, new: Any) -> None:
    if isinstance(container, list) and key.isdigit() and int(key) < len(container):
        container[int(key)] = new
    elif isinstance(container, dict):
        container[key] = new


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
