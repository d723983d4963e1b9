"""Tests for shared.ably: the Ably realtime protocol codec (pure, no event loop)."""

from __future__ import annotations

import json
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ably import (
    Action,
    DecodeError,
    EncodeError,
    Flag,
    Format,
    action_name,
    decode,
    describe,
    encode,
    flag_names,
    summarize,
)

# A CONNECTED message with nested connectionDetails, as Ably sends it.
CONNECTED: dict[str, Any] = {
    "action": 4,
    "connectionId": "abc",
    "connectionKey": "abc!xyz-1",
    "connectionDetails": {
        "clientId": "client-é",
        "connectionKey": "abc!xyz-1",
        "maxMessageSize": 65536,
        "connectionStateTtl": 120000.5,
        "serverId": None,
    },
}

# An ERROR with a nested ErrorInfo and non-ASCII text.
ERROR: dict[str, Any] = {
    "action": 9,
    "error": {
        "code": 40140,
        "statusCode": 401,
        "message": "Token expired ⏰ — renew",
        "href": None,
    },
}

MESSAGE: dict[str, Any] = {
    "action": 15,
    "channel": "ünïcode:チャンネル",
    "msgSerial": 3,
    "messages": [
        {"name": "greeting", "data": "héllo 👋", "extras": {"headers": {"k": [1, 2.5, True]}}},
        {"name": "empty", "data": ""},
    ],
}


# --- action and flag numbers -------------------------------------------------


@pytest.mark.parametrize(
    ("action", "number"),
    [
        (Action.HEARTBEAT, 0),
        (Action.ACK, 1),
        (Action.NACK, 2),
        (Action.CONNECT, 3),
        (Action.CONNECTED, 4),
        (Action.DISCONNECT, 5),
        (Action.DISCONNECTED, 6),
        (Action.CLOSE, 7),
        (Action.CLOSED, 8),
        (Action.ERROR, 9),
        (Action.ATTACH, 10),
        (Action.ATTACHED, 11),
        (Action.DETACH, 12),
        (Action.DETACHED, 13),
        (Action.PRESENCE, 14),
        (Action.MESSAGE, 15),
        (Action.SYNC, 16),
        (Action.AUTH, 17),
        (Action.ACTIVATE, 18),
        (Action.OBJECT, 19),
        (Action.OBJECT_SYNC, 20),
        (Action.ANNOTATION, 21),
    ],
)
def test_action_numbers_match_ably_js(action: Action, number: int) -> None:
    """Each action has the number ably-js 2.x protocolmessagecommon.ts gives it."""
    assert action == number


def test_actions_are_exactly_zero_to_twenty_one() -> None:
    """The actions are 0..21 with no gaps and nothing extra."""
    assert sorted(a.value for a in Action) == list(range(22))


@pytest.mark.parametrize(
    ("flag", "bit"),
    [
        (Flag.HAS_PRESENCE, 0),
        (Flag.HAS_BACKLOG, 1),
        (Flag.RESUMED, 2),
        (Flag.TRANSIENT, 4),
        (Flag.ATTACH_RESUME, 5),
        (Flag.HAS_OBJECTS, 7),
        (Flag.PRESENCE, 16),
        (Flag.PUBLISH, 17),
        (Flag.SUBSCRIBE, 18),
        (Flag.PRESENCE_SUBSCRIBE, 19),
        (Flag.ANNOTATION_PUBLISH, 21),
        (Flag.ANNOTATION_SUBSCRIBE, 22),
        (Flag.OBJECT_SUBSCRIBE, 24),
        (Flag.OBJECT_PUBLISH, 25),
    ],
)
def test_flag_bits_match_ably_js(flag: Flag, bit: int) -> None:
    """Each flag is the bit ably-js 2.x protocolmessagecommon.ts gives it."""
    assert flag == 1 << bit


def test_mode_all_is_the_union_of_channel_modes() -> None:
    """MODE_ALL covers the eight channel-mode flags and no attach-state flag."""
    modes = [f for f in Flag if f & Flag.MODE_ALL]
    assert [f.name for f in modes] == [
        "PRESENCE",
        "PUBLISH",
        "SUBSCRIBE",
        "PRESENCE_SUBSCRIBE",
        "ANNOTATION_PUBLISH",
        "ANNOTATION_SUBSCRIBE",
        "OBJECT_SUBSCRIBE",
        "OBJECT_PUBLISH",
    ]


def test_action_name_known_and_unknown() -> None:
    """action_name gives the ably-js name, or UNKNOWN(n) for an undefined number."""
    assert action_name(15) == "MESSAGE"
    assert action_name(Action.ANNOTATION) == "ANNOTATION"
    assert action_name(42) == "UNKNOWN(42)"
    assert action_name(-1) == "UNKNOWN(-1)"


def test_flag_names_lists_set_bits_and_unknown_bits() -> None:
    """flag_names joins set flags with | in bit order and shows unknown bits in hex."""
    assert flag_names(0) == "0"
    assert flag_names(Flag.ATTACH_RESUME | Flag.PUBLISH) == "ATTACH_RESUME|PUBLISH"
    assert flag_names(Flag.HAS_PRESENCE | (1 << 3)) == "HAS_PRESENCE|0x8"


def test_format_for_frame() -> None:
    """Binary frames are msgpack and text frames JSON."""
    assert Format.for_frame(is_binary=True) is Format.MSGPACK
    assert Format.for_frame(is_binary=False) is Format.JSON
    assert Format.JSON.value == "json" and Format.MSGPACK.value == "msgpack"


# --- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize("message", [CONNECTED, ERROR, MESSAGE, {"action": 0}])
def test_round_trip(message: dict[str, Any], fmt: Format) -> None:
    """decode(encode(m)) == m in both formats, with unicode and nested maps intact."""
    assert decode(encode(message, fmt), fmt) == message


def test_encode_types_per_format() -> None:
    """JSON encodes to compact str, msgpack to bytes."""
    assert encode({"action": 0}, Format.JSON) == '{"action":0}'
    assert encode({"action": 0}, Format.MSGPACK) == b"\x81\xa6action\x00"


def test_msgpack_round_trips_binary_data() -> None:
    """Binary message data survives a msgpack round trip as bytes, strings as str."""
    message = {"action": 15, "channel": "c", "messages": [{"data": b"\x00\xff\x10", "name": "b"}]}
    wire = encode(message, Format.MSGPACK)
    assert isinstance(wire, bytes)
    decoded = decode(wire, Format.MSGPACK)
    assert decoded == message
    assert isinstance(decoded["messages"][0]["data"], bytes)
    assert isinstance(decoded["messages"][0]["name"], str)


def test_msgpack_bytes_use_bin_type() -> None:
    """Bytes are packed as msgpack bin (0xc4), not as str, so other SDKs see binary."""
    wire = encode({"data": b"ab"}, Format.MSGPACK)
    assert isinstance(wire, bytes) and b"\xc4\x02ab" in wire


def test_action_members_encode_as_ints() -> None:
    """An Action member for "action" is written as its plain number."""
    assert encode({"action": Action.ATTACH}, Format.JSON) == '{"action":10}'
    assert decode(encode({"action": Action.ATTACH}, Format.MSGPACK), Format.MSGPACK) == {
        "action": 10
    }


def test_json_encode_is_compact_and_keeps_unicode() -> None:
    """JSON output has no spaces and writes non-ASCII characters as themselves."""
    wire = encode({"channel": "é", "msgSerial": 1}, Format.JSON)
    assert wire == '{"channel":"é","msgSerial":1}'


def test_json_base64_encodes_message_data_like_ably_js() -> None:
    """Bytes in messages[].data become base64 with "base64" appended to the encoding."""
    message: dict[str, Any] = {
        "action": 15,
        "messages": [{"data": b"\x00\x01", "encoding": "utf-8"}, {"data": b"hi"}],
        "presence": [{"data": b"\xff"}],
    }
    wire = json.loads(encode(message, Format.JSON))
    assert wire["messages"] == [
        {"data": "AAE=", "encoding": "utf-8/base64"},
        {"data": "aGk=", "encoding": "base64"},
    ]
    assert wire["presence"] == [{"data": "/w==", "encoding": "base64"}]
    assert message["messages"][0]["data"] == b"\x00\x01", "input must not be mutated"


def test_json_rejects_bytes_outside_message_data() -> None:
    """Bytes anywhere else raise EncodeError naming where they are."""
    with pytest.raises(EncodeError, match=r"extras\.blob\[1\]"):
        encode({"action": 15, "messages": [{"extras": {"blob": [1, b"x"]}}]}, Format.JSON)
    with pytest.raises(EncodeError, match="JSON cannot carry bytes"):
        encode({"action": 15, "auth": b"token"}, Format.JSON)


def test_json_rejects_nan() -> None:
    """NaN is not JSON: encoding it raises EncodeError, decoding it DecodeError."""
    with pytest.raises(EncodeError):
        encode({"timestamp": float("nan")}, Format.JSON)
    with pytest.raises(DecodeError, match="NaN"):
        decode('{"timestamp":NaN}', Format.JSON)


def test_msgpack_rejects_unencodable_values() -> None:
    """Values msgpack cannot carry raise EncodeError, not TypeError or OverflowError."""
    with pytest.raises(EncodeError):
        encode({"x": object()}, Format.MSGPACK)
    with pytest.raises(EncodeError):
        encode({"msgSerial": 2**64}, Format.MSGPACK)


# --- decode errors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fmt", "reason"),
    [
        ("{", Format.JSON, "invalid JSON"),
        ("[1, 2]", Format.JSON, "list, not a map"),
        ("null", Format.JSON, "null, not a map"),
        (b"\xff{}", Format.JSON, "not UTF-8"),
        (b"\xc1", Format.MSGPACK, "invalid msgpack"),
        (b"\x92\x01", Format.MSGPACK, "incomplete"),
        (b"\x81\xa1a\x01\x00", Format.MSGPACK, "invalid msgpack"),
        (msgpack.packb([1, 2]), Format.MSGPACK, "list, not a map"),
        (msgpack.packb({1: 2}), Format.MSGPACK, "non-string key"),
        ('{"action": 1}', Format.MSGPACK, "binary frame"),
    ],
)
def test_decode_errors_say_what_was_wrong(data: str | bytes, fmt: Format, reason: str) -> None:
    """Undecodable input or a non-map top level raises DecodeError with the reason."""
    with pytest.raises(DecodeError, match=reason):
        decode(data, fmt)


def test_decode_error_is_a_value_error() -> None:
    """DecodeError and EncodeError are ValueErrors, so generic handlers catch them."""
    assert issubclass(DecodeError, ValueError) and issubclass(EncodeError, ValueError)


def test_json_decodes_from_bytes_too() -> None:
    """A JSON payload handed over as UTF-8 bytes decodes like the text."""
    assert decode('{"channel":"é"}'.encode(), Format.JSON) == {"channel": "é"}


# --- describe -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (MESSAGE, "MESSAGE channel=ünïcode:チャンネル msgSerial=3 messages=2"),
        ({"action": 1, "msgSerial": 3, "count": 1}, "ACK msgSerial=3 count=1"),
        (CONNECTED, "CONNECTED connectionId=abc"),
        (ERROR, "ERROR code=40140 statusCode=401 message=Token expired ⏰ — renew"),
        (
            {"action": 10, "channel": "foo", "flags": Flag.ATTACH_RESUME | Flag.SUBSCRIBE},
            "ATTACH channel=foo flags=ATTACH_RESUME|SUBSCRIBE",
        ),
        (
            {"action": 13, "channel": "foo", "error": {"code": 90001, "message": "gone"}},
            "DETACHED channel=foo code=90001 message=gone",
        ),
        ({"action": 14, "channel": "p", "presence": [{}, {}, {}]}, "PRESENCE channel=p presence=3"),
        ({"action": 0}, "HEARTBEAT"),
        ({"action": 42, "channel": "x"}, "UNKNOWN(42) channel=x"),
        ({"channel": "x"}, "NO_ACTION channel=x"),
        ({"action": "15"}, "INVALID_ACTION('15')"),
    ],
)
@pytest.mark.parametrize("fmt", list(Format))
def test_describe(message: dict[str, Any], expected: str, fmt: Format) -> None:
    """describe() summarises a frame in one line, same text for both formats."""
    assert describe(encode(message, fmt)) == expected


def test_describe_truncates_long_values() -> None:
    """Long values are cut with an ellipsis so a log line stays short."""
    line = describe(encode({"action": 9, "error": {"message": "x" * 500}}, Format.JSON))
    assert line.startswith("ERROR message=xxx") and line.endswith("…")
    assert len(line) < 100


def test_describe_keeps_one_line() -> None:
    """Control characters in values are escaped so the summary stays on one line."""
    line = describe(encode({"action": 15, "channel": "a\nb\x00"}, Format.MSGPACK))
    assert "\n" not in line and "\x00" not in line
    assert line == "MESSAGE channel=a\\nb\\x00"


def test_describe_undecodable_frames() -> None:
    """Garbage is reported as an undecodable text or binary frame with its size and reason."""
    assert describe("{nope").startswith("undecodable text frame (5 bytes): invalid JSON")
    assert describe(b"\xc1\xc1").startswith("undecodable binary frame (2 bytes): invalid msgpack")
    assert describe("[]") == "undecodable text frame (2 bytes): top-level value is list, not a map"


def test_describe_uses_explicit_format() -> None:
    """An explicit format overrides the one guessed from the payload's type."""
    assert describe(b'{"action":0}', Format.JSON) == "HEARTBEAT"
    assert describe("x", Format.MSGPACK).startswith("undecodable text frame (1 bytes)")


def test_summarize_decoded_message() -> None:
    """summarize() gives describe()'s line for an already decoded message."""
    assert summarize({"action": Action.CLOSED}) == "CLOSED"


def test_describe_never_raises_on_odd_types() -> None:
    """Values of unexpected types still produce a line instead of an exception."""
    odd = {"action": 11, "flags": "x", "messages": 5, "error": [1], "count": None}
    assert describe(encode(odd, Format.MSGPACK)) == (
        "ATTACHED count=None flags=x messages=5 error=[1]"
    )
    assert describe(bytearray(b"\x80")) == "NO_ACTION"  # type: ignore[arg-type]
    assert describe(None).startswith("undecodable")  # type: ignore[arg-type]


# --- properties -----------------------------------------------------------------

_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_FLOAT = st.floats(allow_nan=False, allow_infinity=False)
_FIELD_NAMES = st.sampled_from(
    ["action", "channel", "msgSerial", "messages", "presence", "connectionDetails", "error"]
)


def _values(with_bytes: bool) -> st.SearchStrategy[Any]:
    leaves: st.SearchStrategy[Any] = st.none() | st.booleans() | _INT64 | _FLOAT | st.text()
    if with_bytes:
        leaves |= st.binary()
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )


def _messages(with_bytes: bool) -> st.SearchStrategy[dict[str, Any]]:
    keys = _FIELD_NAMES | st.text(max_size=10)
    return st.dictionaries(keys, _values(with_bytes), max_size=6)


@given(st.binary() | st.text())
def test_describe_never_raises_on_arbitrary_input(data: str | bytes) -> None:
    """describe() returns a single line for any bytes or str, whatever they hold."""
    line = describe(data)
    assert isinstance(line, str) and "\n" not in line


@given(st.binary(), st.sampled_from(list(Format)))
def test_describe_never_raises_with_wrong_format(data: bytes, fmt: Format) -> None:
    """describe() never raises even when the format does not match the payload."""
    assert isinstance(describe(data, fmt), str)


@given(_messages(with_bytes=True))
def test_msgpack_round_trip_property(message: dict[str, Any]) -> None:
    """decode(encode(m)) == m in msgpack for any message, binary values included."""
    assert decode(encode(message, Format.MSGPACK), Format.MSGPACK) == message


@given(_messages(with_bytes=False))
def test_json_round_trip_property(message: dict[str, Any]) -> None:
    """decode(encode(m)) == m in JSON for any message without binary values."""
    assert decode(encode(message, Format.JSON), Format.JSON) == message


@given(_messages(with_bytes=True), st.sampled_from(list(Format)))
def test_describe_never_raises_on_encoded_messages(message: dict[str, Any], fmt: Format) -> None:
    """describe() summarises any encodable message in one line."""
    try:
        wire = encode(message, fmt)
    except EncodeError:
        return
    line = describe(wire)
    assert "\n" not in line and not line.startswith("undecodable")
