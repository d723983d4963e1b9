"""The lifetime rules as tables: no event loop, no sockets."""

from __future__ import annotations

import pytest

from appserver.relay.lifecycle import (
    awaits_close_answer,
    DELIVERY,
    TRANSITIONS,
    PassOn,
    Delivery,
    End,
    IllegalTransition,
    LegEvent,
    LegState,
    check_sendable,
    close_action,
    close_payload,
    code_from_wire,
    transition,
)

from shared.headers import is_websocket_upgrade

S, E = LegState, LegEvent


@pytest.mark.parametrize(
    "state, event, after",
    [
        (S.OPEN, E.RECEIVED_CLOSE, S.CLOSE_RECEIVED),
        (S.OPEN, E.SENT_CLOSE, S.CLOSE_SENT),
        (S.OPEN, E.TRANSPORT_LOST, S.CLOSED),
        (S.CLOSE_RECEIVED, E.SENT_CLOSE, S.CLOSED),
        (S.CLOSE_RECEIVED, E.TRANSPORT_LOST, S.CLOSED),
        (S.CLOSE_SENT, E.RECEIVED_CLOSE, S.CLOSED),
        (S.CLOSE_SENT, E.TRANSPORT_LOST, S.CLOSED),
        (S.CLOSED, E.TRANSPORT_LOST, S.CLOSED),
    ],
)
def test_legal_transitions(state: LegState, event: LegEvent, after: LegState) -> None:
    """Each leg follows RFC 6455's closing handshake."""
    assert transition(state, event) is after


@pytest.mark.parametrize(
    "state, event",
    [(s, e) for s in S for e in E if e not in TRANSITIONS[s]],
)
def test_illegal_transitions_raise(state: LegState, event: LegEvent) -> None:
    """An event that cannot happen in a state raises a named error, never passes silently."""
    with pytest.raises(IllegalTransition, match=event.value):
        transition(state, event)


def test_every_state_has_a_way_to_closed() -> None:
    """Losing the transport closes a leg from any state, so nothing can hang open."""
    for state in S:
        assert transition(state, E.TRANSPORT_LOST) is S.CLOSED


@pytest.mark.parametrize(
    "state, delivery",
    [(S.OPEN, Delivery.NOW), (S.CLOSE_RECEIVED, Delivery.NOW), (S.CLOSE_SENT, Delivery.NEVER), (S.CLOSED, Delivery.NEVER)],
)
def test_delivery_by_destination_state(state: LegState, delivery: Delivery) -> None:
    """Data may go to a leg until we have sent it a close frame (RFC 6455 §5.5.1)."""
    assert DELIVERY[state] is delivery


@pytest.mark.parametrize(
    "end, state, action",
    [
        (End.close(4000, "bye"), S.OPEN, PassOn.SEND_CLOSE),
        (End.close(4000, "bye"), S.CLOSE_RECEIVED, PassOn.ANSWER_CLOSE),
        (End.close(4000, "bye"), S.CLOSE_SENT, PassOn.NOTHING),
        (End.close(4000, "bye"), S.CLOSED, PassOn.NOTHING),
        (End.close(None), S.OPEN, PassOn.SEND_CLOSE),
        (End.drop(), S.OPEN, PassOn.ABORT),
        (End.drop(), S.CLOSE_RECEIVED, PassOn.ABORT),
        (End.drop(), S.CLOSE_SENT, PassOn.ABORT),
        (End.drop(), S.CLOSED, PassOn.NOTHING),
    ],
)
def test_close_passed_on(end: End, state: LegState, action: PassOn) -> None:
    """A clean close is passed on as a close; an abrupt drop as an abrupt drop."""
    assert close_action(end, state) is action


@pytest.mark.parametrize("received, normalised", [(0, None), (None, None), (1005, None), (1006, None), (1015, None),
                                                  (1000, 1000), (4000, 4000), (1001, 1001)])  # fmt: skip
def test_code_from_wire(received: int | None, normalised: int | None) -> None:
    """aiohttp's 0 for an empty close frame, and reserved codes, mean 'no code'."""
    assert code_from_wire(received) == normalised


@pytest.mark.parametrize(
    "code, reason, payload",
    [
        (None, "", b""),
        (1005, "", b""),
        (1006, "x", b""),
        (1015, "", b""),
        (1000, "", b"\x03\xe8"),
        (4000, "bye", b"\x0f\xa0bye"),
    ],
)
def test_close_payload(code: int | None, reason: str, payload: bytes) -> None:
    """1005, 1006 and 1015 never go on the wire; no code means an empty close frame."""
    assert close_payload(code, reason) == payload


def test_close_payload_truncates_long_reason() -> None:
    """A close frame's payload never exceeds 125 bytes."""
    assert len(close_payload(4000, "x" * 500)) == 125


@pytest.mark.parametrize(
    "code, reason, problem",
    [(1005, "", "may not be sent"), (1006, "", "may not be sent"), (999, "", "may not be sent"),
     (5000, "", "may not be sent"), (None, "why", "needs a close code"), (4000, "é" * 70, "longer than")],
)  # fmt: skip
def test_check_sendable_rejects(code: int | None, reason: str, problem: str) -> None:
    """Codes and reasons that cannot go in a close frame are refused with the reason."""
    with pytest.raises(ValueError, match=problem):
        check_sendable(code, reason)


@pytest.mark.parametrize("code", [None, 1000, 1001, 1011, 3000, 4999])
def test_check_sendable_accepts(code: int | None) -> None:
    """Ordinary, application and missing codes are sendable."""
    check_sendable(code, "")


def test_end_without_code_has_no_reason() -> None:
    """A close frame without a code cannot carry a reason."""
    assert End.close(None, "ignored") == End(abrupt=False, code=None, reason="")


@pytest.mark.parametrize("state", list(S))
def test_only_a_sent_close_awaits_an_answer(state: LegState) -> None:
    """Only a leg we sent a close frame to waits (with the close timeout) for the peer's answer."""
    assert awaits_close_answer(state) is (state is S.CLOSE_SENT)


@pytest.mark.parametrize(
    "upgrade, connection, expected",
    [("websocket", ["Upgrade"], True), ("WebSocket", ["keep-alive, Upgrade"], True),
     ("websocket", ["keep-alive", " upgrade "], True), ("websocket", [], False), ("h2c", ["Upgrade"], False),
     ("", ["Upgrade"], False)],
)  # fmt: skip
def test_websocket_upgrade_rule(upgrade: str, connection: list[str], expected: bool) -> None:
    """The upgrade rule both the redirector and the app server use: tokens in any case, spacing or header."""
    assert is_websocket_upgrade(upgrade, connection) is expected
