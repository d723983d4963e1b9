"""JSON read with msgspec (shared/jsonrpc.py's json_loads, shared/ably.py's JSON frames): exactly the values, and
the errors, of Python's standard library."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import ably
from shared.jsonrpc import JSON, json_loads


def strict(text: str | bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0 here; NaN never occurs)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


# What msgspec alone refuses, and the standard library reads: each must read as it always did.
@pytest.mark.parametrize("text, expected", [
    (r'"\ud800"', "\ud800"),                      # a lone surrogate escape
    (r'{"a": "\udc00\ud800x"}', {"a": "\udc00\ud800x"}),
    (b'\xef\xbb\xbf{"a": 1}', {"a": 1}),          # bytes with a UTF-8 BOM
    ('{"a": 1}'.encode("utf-16"), {"a": 1}),      # bytes in UTF-16, detected
    ("1e400", math.inf),                          # beyond a double
    ("[-1e400]", [-math.inf]),
])  # fmt: skip
def test_what_the_fast_parser_refuses_reads_as_before(text: str | bytes, expected: Any) -> None:
    assert same(json_loads(text), expected)


@pytest.mark.parametrize("text", [
    "123456789012345678901234567890", "-9223372036854775809", '{"id": 18446744073709551616}', "9007199254740993",
    '{"a": 1, "a": 2}', "1e2", "-0", "-0.0", "2.5e-324", "1e-400", "0.1", '"\\u0000"', ' {"x": [true, false, null]} ',
])  # fmt: skip
def test_values_and_types_are_the_standard_librarys(text: str) -> None:
    assert same(json_loads(text), strict(text))
    assert same(json_loads(text.encode()), strict(text))


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"id": -Infinity}', "01", "1.", "+1", "[1,]", "[1 2]", "nulL",
                                  '"a\x01b"', '"\t"', "[]x", "\ufeff{}", "", "{"])  # fmt: skip
def test_not_json_fails_with_the_standard_librarys_message(text: str) -> None:
    with pytest.raises(ValueError) as ours:
        json_loads(text)
    with pytest.raises(ValueError) as theirs:
        strict(text)
    assert str(ours.value) == str(theirs.value)


def test_nan_names_the_constant() -> None:
    with pytest.raises(ValueError, match="NaN is not JSON"):
        json_loads('{"timestamp": NaN}')
    with pytest.raises(ValueError, match="NaN is not JSON"):
        JSON.loads('{"jsonrpc": "2.0", "id": NaN}')


@pytest.mark.parametrize("text", [r'{"action": 15, "channel": "\ud800"}', '{"action": 15, "id": 123456789012345678901234567890}',
                                  '{"action": 15, "timestamp": 1e400}', '{"action": 0, "a": 1, "a": 2}'])  # fmt: skip
def test_an_ably_json_frame_reads_as_the_standard_library_reads_it(text: str) -> None:
    assert same(ably.decode(text, ably.Format.JSON), strict(text))
    assert same(ably.decode(text.encode(), ably.Format.JSON), strict(text))


@pytest.mark.parametrize("text, reason", [('{"timestamp": NaN}', "NaN is not valid JSON"),
                                          ('{"action": 1,}', "Illegal trailing comma")])
def test_an_ably_json_frame_that_is_not_json_says_why_as_before(text: str, reason: str) -> None:
    with pytest.raises(ably.DecodeError, match=reason):
        ably.decode(text, ably.Format.JSON)


def test_absurd_nesting_is_a_recursion_error() -> None:
    with pytest.raises(RecursionError):
        json_loads("[" * 100_000 + "]" * 100_000)


def test_invalid_utf8_is_a_unicode_error() -> None:
    with pytest.raises(UnicodeDecodeError):
        json_loads(b'"\xff"')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats(allow_nan=False)
    | st.text(), lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(json_values, st.booleans(), st.booleans())
def test_any_document_reads_as_the_standard_library_reads_it(value: Any, ascii_only: bool, as_bytes: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)  # infinity written as Infinity: refused by both
    data: str | bytes = text.encode("utf-8", "surrogatepass") if as_bytes else text
    try:
        expected = strict(data)
    except ValueError as exc:
        with pytest.raises(ValueError) as ours:
            json_loads(data)
        assert str(ours.value) == str(exc)
        return
    assert same(json_loads(data), expected)
