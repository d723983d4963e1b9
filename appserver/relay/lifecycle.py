"""Connection lifetime rules, with no I/O: the one place they live.

A proxied connection has two legs: the client's WebSocket (we are its server)
and the upstream WebSocket (we are its client). Each leg follows the RFC 6455
closing handshake on its own; the relay (leg.py, pump.py) only moves frames and asks
this module what a leg's state allows.

Closes travel *behind* the messages of the leg they came from: a reader puts
an :class:`End` at the tail of its direction's queue, and the pump acts on it
only once everything queued before it has been delivered or dropped.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass


class Side(enum.StrEnum):
    CLIENT = "client"
    SERVER = "server"

    @property
    def other(self) -> Side:
        return Side.SERVER if self is Side.CLIENT else Side.CLIENT


class LegState(enum.Enum):
    OPEN = "open"
    CLOSE_RECEIVED = "close-received"  # the peer sent a close frame; we have not answered
    CLOSE_SENT = "close-sent"  # we sent a close frame; awaiting the peer's
    CLOSED = "closed"  # handshake done, or the transport is gone


class LegEvent(enum.Enum):
    RECEIVED_CLOSE = "received-close"
    SENT_CLOSE = "sent-close"
    TRANSPORT_LOST = "transport-lost"  # the peer dropped TCP, or we aborted it


class IllegalTransition(RuntimeError):
    """An event that cannot happen in the leg's current state."""

    def __init__(self, state: LegState, event: LegEvent) -> None:
        super().__init__(f"{event.value} is illegal in state {state.value}")


_S, _E = LegState, LegEvent
TRANSITIONS: dict[LegState, dict[LegEvent, LegState]] = {
    _S.OPEN: {
        _E.RECEIVED_CLOSE: _S.CLOSE_RECEIVED,
        _E.SENT_CLOSE: _S.CLOSE_SENT,
        _E.TRANSPORT_LOST: _S.CLOSED,
    },
    _S.CLOSE_RECEIVED: {
        _E.SENT_CLOSE: _S.CLOSED,  # our answer completes the handshake (RFC 6455 §5.5.1)
        _E.TRANSPORT_LOST: _S.CLOSED,
    },
    _S.CLOSE_SENT: {
        _E.RECEIVED_CLOSE: _S.CLOSED,
        _E.TRANSPORT_LOST: _S.CLOSED,
    },
    _S.CLOSED: {
        _E.TRANSPORT_LOST: _S.CLOSED,
    },
}


def transition(state: LegState, event: LegEvent) -> LegState:
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise IllegalTransition(state, event) from None


def awaits_close_answer(state: LegState) -> bool:
    """A leg we sent a close frame to waits for the peer's (RFC 6455 §7.1.1), but only for
    the close timeout: a peer that never answers is then dropped, so nothing hangs."""
    return state is LegState.CLOSE_SENT


class Delivery(enum.Enum):
    NOW = "now"
    NEVER = "never"


# May a data frame be sent on a leg in this state? After we send a close
# frame we must not send data (RFC 6455 §5.5.1); until then we may, even if
# the peer has already sent its own close.
DELIVERY: dict[LegState, Delivery] = {
    _S.OPEN: Delivery.NOW,
    _S.CLOSE_RECEIVED: Delivery.NOW,
    _S.CLOSE_SENT: Delivery.NEVER,
    _S.CLOSED: Delivery.NEVER,
}


@dataclass(frozen=True, slots=True)
class End:
    """How a leg ended, queued behind that leg's messages.

    ``abrupt``: the transport went away without a close frame. Otherwise a
    close frame arrived, with ``code`` None when it carried no code.
    """

    abrupt: bool
    code: int | None = None
    reason: str = ""

    @classmethod
    def drop(cls) -> End:
        return cls(abrupt=True)

    @classmethod
    def close(cls, code: int | None, reason: str = "") -> End:
        return cls(abrupt=False, code=code, reason=reason if code is not None else "")


class PassOn(enum.Enum):
    SEND_CLOSE = "send-close"  # start the handshake on the destination leg
    ANSWER_CLOSE = "answer-close"  # finish the handshake, then close the transport
    ABORT = "abort"  # drop the destination's transport, no close frame
    NOTHING = "nothing"


# What an End arriving from one leg does to the other leg, by that leg's state.
_CLEAN: dict[LegState, PassOn] = {
    _S.OPEN: PassOn.SEND_CLOSE,
    _S.CLOSE_RECEIVED: PassOn.ANSWER_CLOSE,
    _S.CLOSE_SENT: PassOn.NOTHING,  # both closed at once; its peer's answer will come
    _S.CLOSED: PassOn.NOTHING,
}
_ABRUPT: dict[LegState, PassOn] = {
    _S.OPEN: PassOn.ABORT,
    _S.CLOSE_RECEIVED: PassOn.ABORT,
    _S.CLOSE_SENT: PassOn.ABORT,
    _S.CLOSED: PassOn.NOTHING,
}


def close_action(end: End, destination: LegState) -> PassOn:
    return (_ABRUPT if end.abrupt else _CLEAN)[destination]


# --- Close codes are data (RFC 6455 §7.4) -----------------------------------

#: Reserved codes that must never be sent in a close frame (RFC 6455 §7.4.1).
NEVER_ON_WIRE = frozenset({1005, 1006, 1015})
#: Codes an endpoint may send (RFC 6455 §7.4.1, §7.4.2 and the IANA registry).
SENDABLE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)}) | frozenset(range(3000, 5000))
MAX_REASON_BYTES = 123  # a control frame's payload is at most 125 bytes (§5.5)


def code_from_wire(code: int | None) -> int | None:
    """Normalise a received close code: aiohttp reports an empty close frame as 0."""
    if not code or code in NEVER_ON_WIRE:
        return None
    return code


def check_sendable(code: int | None, reason: str) -> None:
    """Raise ValueError when a close code and reason cannot go in a close frame."""
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return
    if code not in SENDABLE:
        raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
    if len(reason.encode("utf-8")) > MAX_REASON_BYTES:
        raise ValueError(f"close reason is longer than {MAX_REASON_BYTES} bytes")


def close_payload(code: int | None, reason: str = "") -> bytes:
    """The payload of a close frame: empty without a code, else code + UTF-8 reason."""
    if code is None or code in NEVER_ON_WIRE:
        return b""
    return struct.pack("!H", code) + reason.encode("utf-8")[:MAX_REASON_BYTES]
