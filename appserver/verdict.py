"""What may happen to one intercepted frame, and who decides it.

A connection's pump asks a chain of deciders (:class:`Chain`) about every
data frame (relay/pump.py); the first that has an opinion
gives the :data:`Verdict`, and the pump applies it without knowing where it
came from. The chain is the rule engine (rules/verdicts.py) and then the active
test suite (control/suite.py). Each verdict (pass, drop, replace, delay, and the
side effects inject, close, silence) is a frozen value here, applied in
relay/pump.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.connections import ConnectionOpened
from shared.wire import Frame


@dataclass(frozen=True, slots=True)
class Pass:
    """Deliver the frame as it arrived."""


@dataclass(frozen=True, slots=True)
class Drop:
    """Deliver nothing."""


@dataclass(frozen=True, slots=True)
class Replace:
    """Deliver this frame instead."""

    frame: Frame


@dataclass(frozen=True, slots=True)
class Delay:
    """Deliver the frame ``ms`` later; the frames behind it in its direction wait too (order holds)."""

    ms: int


# -- side effects, applied right after the frame's fate -------------------------------------------


@dataclass(frozen=True, slots=True)
class Inject:
    """Send this frame on one leg (``from_client``: towards the server). ``done`` is called once the
    frame has been written to that leg's socket, or could not be (SPEC Part 9: whatever tells the suite
    of the injection — a rule's ``waitForRule`` and ``ruleMatched`` — waits for it)."""

    frame: Frame
    from_client: bool
    done: Callable[[], None] | None = field(default=None, compare=False)
    #: Sent before the matched frame is delivered (not after it).
    before: bool = False


@dataclass(frozen=True, slots=True)
class CloseLegs:
    """Close these sides, after the frames already queued for them are delivered."""

    sides: tuple[str, ...]  # "client", "server"
    code: int | None
    reason: str
    abrupt: bool


@dataclass(frozen=True, slots=True)
class Silence:
    """From now on drop every frame, ping and pong of the connection, both ways; close nothing."""


@dataclass(frozen=True, slots=True)
class SuppressOnwards:
    """From now on drop every frame and ping in this direction, on every connection of the suite open now (the
    rules apply it themselves, at once: it never reaches the pump)."""

    from_client: bool


Effect = Inject | CloseLegs | Silence
Fate = Pass | Drop | Replace | Delay


@dataclass(frozen=True, slots=True)
class Decision:
    """A fate with side effects."""

    fate: Fate
    effects: tuple[Effect, ...]


Verdict = Pass | Drop | Replace | Delay | Decision
#: What a decider may answer with at once (anything else it answers is an awaitable of one of these).
VERDICTS = (Pass, Drop, Replace, Delay, Decision)
PASS = Pass()
DROP = Drop()


def split(verdict: Verdict) -> tuple[Fate, tuple[Effect, ...]]:
    return (verdict.fate, verdict.effects) if isinstance(verdict, Decision) else (verdict, ())


# -- a client's handshake, before the upstream is dialled ---------------------------------------


@dataclass(frozen=True, slots=True)
class Refuse:
    """Fail the client's handshake with this HTTP response; never dial the upstream."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    """Dial this upstream instead of the one the client meant."""

    host: str
    proto: str


@dataclass(frozen=True, slots=True)
class Admit:
    """Go on with the handshake: after ``delay_ms``, to ``route`` (or the client's target) unless
    ``serve`` is set: then accept without any upstream, and apply these effects (inject, close)."""

    delay_ms: int = 0
    route: Route | None = None
    serve: tuple[Effect, ...] | None = None
    effects: tuple[Effect, ...] = ()  # applied once the connection is open (e.g. silence)


ConnectVerdict = Refuse | Admit
ADMIT = Admit()


class Decider(Protocol):
    """One link of a decider chain."""

    def decide(self, connection_id: str, frame: Frame, from_client: bool) -> Verdict | Awaitable[Verdict] | None:
        """The frame's verdict, at once or as an awaitable (someone else must be asked: the suite), or None: no
        opinion, the next link decides."""
        ...

    #: Who gave the verdict decide() returned last, for the trace: a rule's id, "suite" (None: unknown). Read
    #: right after decide() returns, with no suspension in between.
    decided_by: str | None

    @property
    def window(self) -> int:
        """How many of its awaitables a pump may have outstanding at once, per direction (SPEC Part 10's
        ``window: N``; 1: one at a time, the next frame is asked about once this one is delivered)."""
        ...

    @property
    def engaged(self) -> bool:
        """Whether it may have an opinion at all (rules to apply, a suite to ask): one that is not is left out
        of its :class:`Chain` until it is."""
        ...


class Chain:
    """A connection's deciders, in order. The pump reads :attr:`deciders` for every frame: only the members
    that may have an opinion, so a frame no one has a say on costs no call at all. A member calls
    :meth:`refresh` whenever it gains or loses its say (rules added or gone, a suite claiming or leaving)."""

    __slots__ = ("members", "deciders")

    def __init__(self, members: tuple[Decider, ...] = ()) -> None:
        self.members = members
        self.deciders: tuple[Decider, ...] = ()
        self.refresh()

    def refresh(self) -> None:
        self.deciders = tuple(member for member in self.members if member.engaged)


class DecisionRecorder(Protocol):
    """Where the rules and the suite record what they decided (the trace: appserver/trace/record.py)."""

    def decision(self, connection_id: str | None, **fields: Any) -> None: ...


class ConnectGate(Protocol):
    """Asked about a client's handshake before the upstream is dialled."""

    async def admit(self, info: ConnectionOpened) -> ConnectVerdict: ...


#: A timer of one connection: seconds after it opened, and what it then does.
Timer = tuple[float, Callable[[], tuple[Effect, ...]]]


class ConnectionHooks(Protocol):
    """Asked about a connection's other events: pings, pongs, closes, timers."""

    def control(self, event: str, connection_id: str, from_client: bool, payload: bytes) -> Verdict:
        """A ping or pong from one leg: PASS, DROP or Delay (with effects)."""
        ...

    def closing(self, connection_id: str, from_client: bool, code: int | None, reason: str, abrupt: bool) -> Verdict:
        """A close frame or drop from one leg, before it is passed on: PASS or Delay (with effects)."""
        ...

    def timers(self, info: ConnectionOpened) -> list[Timer]: ...


# -- a plain HTTP exchange (SPEC Part 4) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A whole response a rule answers with: the upstream is never contacted."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class HttpDrop:
    """No response: ``reset`` closes the client's connection, ``hang`` never answers until it gives up."""

    mode: str = "reset"


@dataclass(frozen=True, slots=True)
class ResponseEdit:
    """Change the upstream's response: status, headers (set), the whole body, or dotted set/unset in a
    JSON body (which is then read whole)."""

    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    set: tuple[tuple[tuple[str, ...], object], ...] = ()
    unset: tuple[tuple[str, ...], ...] = ()

    @property
    def needs_body(self) -> bool:
        return bool(self.set or self.unset)


@dataclass(frozen=True, slots=True)
class RequestEdit:
    """The suite's replacement for parts of a request (transformInterceptedHttpRequest)."""

    method: str | None = None
    url: str | None = None
    headers: tuple[tuple[str, str], ...] | None = None
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class HttpVerdict:
    """What happens to one HTTP request: answered here, dropped, or forwarded after ``delay_ms`` to
    ``route`` (or where the client meant), changed by ``request`` first, its response then changed by
    ``edit`` or asked of the suite (``transform_response``: the rule's id)."""

    respond: HttpResponse | None = None
    drop: HttpDrop | None = None
    delay_ms: int = 0
    route: Route | None = None
    edit: ResponseEdit | None = None
    request: RequestEdit | None = None
    transform_response: str | None = None


HTTP_FORWARD = HttpVerdict()


class HttpGate(Protocol):
    """Asked about each plain HTTP request before it is forwarded; ``info`` describes it as a
    connection's handshake is described (its id is the exchange's)."""

    @property
    def quiet(self) -> bool:
        """Whether it would forward every request as it came without reading its body (no rules): the plain
        HTTP relay below aiohttp (relay/front.py) may then take a request without asking."""
        ...

    def wants_body(self, info: ConnectionOpened, method: str) -> bool:
        """Whether deciding needs the request body (a rule's ``fields``): it is then read first."""
        ...

    async def decide_http(self, info: ConnectionOpened, method: str, body: bytes | None) -> HttpVerdict: ...

    async def transform_response(
        self, info: ConnectionOpened, rule_id: str, response: HttpResponse
    ) -> HttpResponse | HttpDrop: ...
