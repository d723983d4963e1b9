"""What one event is about, as rules see it: its connection's handshake, its frame, its decoded message.

The Ably message of a frame is decoded at most once, and only when a rule
asks for it (:meth:`Subject.message`); a catch-all rule never decodes.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any

from shared import ably
from shared.dotted import MISSING, path_get, path_set, path_unset  # noqa: F401 - the rules' dotted paths
from shared.connections import ConnectionOpened
from shared.wire import Frame, MessageType

_UNDECODED: Any = object()

__all__ = ["MISSING", "Subject", "glob", "path_get", "path_set", "path_unset"]


@dataclass(slots=True)
class Subject:
    event: str
    handshake: ConnectionOpened
    from_client: bool | None = None
    frame: Frame | None = None
    payload: bytes | None = None  # a ping's or pong's
    method: str | None = None  # an HTTP request's
    body: bytes | None = None  # an HTTP request's, when read
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
            if self.body is not None:  # an HTTP request: its JSON body, if it is JSON
                try:
                    decoded = json.loads(self.body)
                except (ValueError, UnicodeDecodeError):
                    decoded = None
                self._message = decoded if isinstance(decoded, dict) else None
            elif self.frame is not None:
                try:
                    self._message = ably.decode(self.frame.data, self.format)
                except ably.DecodeError:
                    pass
        return self._message  # type: ignore[no-any-return]


def glob(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """Shell-style: ``*`` matches anything, ``/`` included; ``?`` one character; ``[…]`` a class."""
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE if ignore_case else 0)
