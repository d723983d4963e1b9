"""JSON read quickly, and exactly as Python's standard library reads it.

Every intercepted message a suite answers is a JSON envelope to parse on each
end, and the standard library's ``json.loads`` with ``parse_constant`` builds a
new decoder on every call. msgspec parses the same documents to the same values
(integers of any size stay integers, floats round the same, duplicate keys keep
the last) several times faster; what it refuses, the standard library is asked
again, so that a lone surrogate escape, a UTF-8 BOM in bytes or a number beyond
a double (``1e400``, infinity to Python) still read as they always did, and
what neither reads fails with the standard library's own message. NaN and
Infinity, which Python accepts and JSON does not, are refused (ValueError).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

_fast = msgspec.json.Decoder().decode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Any:
    """Parse one JSON document; ValueError (or RecursionError for absurd nesting) when it is not JSON."""
    try:
        return _fast(text)
    except msgspec.MsgspecError:  # rare: asked again, with every check and message of json.loads
        return json.loads(text, parse_constant=_reject_constant)
