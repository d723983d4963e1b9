"""Dotted paths into decoded JSON-like values (``error.code``, ``messages.0.name``): get, set, unset.

Used by rules (match ``fields``, ``patch``) and by the HTTP path (``patchResponse``).
"""

from __future__ import annotations

from typing import Any


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
