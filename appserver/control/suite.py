"""The active test suite: the last link of every decider chain, and a sink for connection events.

Connections do not know about control connections: they are given this object as
one :class:`~appserver.verdict.Decider` and one :class:`~appserver.events.Sink`.
Whatever goes wrong in the dialogue (no suite, suite gone, error, invalid
result, timeout), the message passes on unchanged; the failures are logged at
ERROR with the message id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from appserver.control.socket import ControlSocket
from appserver.errors import SuiteAlreadyActive
from appserver.events import Closed, Event, Failed, Opened
from appserver.control.http_dialogue import (parse_request_answer, parse_response_answer, request_params,
                                             response_params)
from appserver.verdict import (DROP, HTTP_FORWARD, PASS, DecisionRecorder, HttpDrop, HttpResponse, HttpVerdict, Replace,
                               Verdict)
from shared.connections import ConnectionOpened
from shared.constants import (EVENT_CONNECTION_CLOSED, EVENT_CONNECTION_OPENED, METHOD_HTTP_REQUEST,
                              METHOD_HTTP_RESPONSE, METHOD_TRANSFORM)
from shared.jsonrpc import PeerGone, RemoteError
from shared import ably
from shared.wire import Answer, Frame, InterceptedMessage, MessageType, TransformResult, WireError, jsonable

log = logging.getLogger(__name__)


class ActiveSuite:
    #: Only connections opening and closing are notified; frames are asked about, not published.
    frames = False

    def __init__(self, transform_timeout: float, message_id: Callable[[], str],
                 decisions: DecisionRecorder | None = None, idle_warning: float = 0.0) -> None:  # fmt: skip
        self.transform_timeout = transform_timeout
        #: Seconds after a claim with no connection opened before a WARNING says so (0: never).
        self.idle_warning = idle_warning
        self._idle_timer: asyncio.TimerHandle | None = None
        self._message_id = message_id
        #: Where the suite's answers are recorded (the trace), set by the app.
        self.decisions = decisions
        self.active: ControlSocket | None = None
        #: startInterception {"decoded": true}: transforms and ruleMatched carry the decoded message.
        self.decoded = False
        #: startInterception/openSession {"window": N}: N transformInterceptedMessage per connection and direction
        #: may be with the suite at once (SPEC Part 10). Set with set_window (read for every frame: an attribute).
        self.window = 1
        #: Called when a suite becomes the active one, and when the active suite goes away (its rules go with it).
        self.on_claim: list[Callable[[], None]] = []
        self.on_release: list[Callable[[], None]] = []
        #: Called whenever there comes to be, or no longer is, a suite that answers (its chains' refresh).
        self.on_engaged: list[Callable[[], None]] = []

    def set_window(self, value: int) -> None:
        self.window = value
        self._cork_turns(self.active)

    def _cork_turns(self, session: ControlSocket | None) -> None:
        """With a window the requests a turn writes to the suite leave together, the first one too (shared/cork.py);
        without, a lone request leaves at once. Only the active suite's connection writes them."""
        if session is not None and session.cork is not None:
            session.cork.whole_turns = session is self.active and self.window > 1

    @property
    def engaged(self) -> bool:
        """In the decider chain only while a suite answers: otherwise frames pass with no call at all."""
        return self.active is not None and self.active.answers

    def _engaged_changed(self) -> None:
        for callback in self.on_engaged:
            callback()

    def claim(self, session: ControlSocket) -> None:
        if self.active is not None and self.active is not session:
            raise SuiteAlreadyActive(
                f"another control connection (number {self.active.id}) is already the active test suite"
            )
        if self.active is None:
            log.info("control connection %d is now the active test suite", session.id)
            self.active = session
            self._cork_turns(session)
            self._engaged_changed()
            for callback in self.on_claim:
                callback()
            if self.idle_warning > 0:
                self._idle_timer = asyncio.get_running_loop().call_later(self.idle_warning, self._no_connection, session)
        self.active = session

    def hand_over(self, session: ControlSocket) -> None:
        """Another control connection answers for the suite from now on (attachSession, and back): its rules
        and trace stay as they are."""
        if self.active is not None:
            previous, self.active = self.active, session
            self._cork_turns(previous)
            self._cork_turns(session)
            self._engaged_changed()

    def _no_connection(self, session: ControlSocket) -> None:
        self._idle_timer = None
        if self.active is session:
            log.warning("control connection %d has been the active test suite for %.0f s and no connection came through "
                        "the proxy: is the SDK pointed at it? ably-js in Node ignores HTTPS_PROXY for realtime (use "
                        "direct mode or local mode); Chromium needs --proxy-bypass-list=\"<-loopback>\" for "
                        "loopback hosts", session.id, self.idle_warning)  # fmt: skip

    def _seen_connection(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def release(self, session: ControlSocket) -> None:
        if self.active is session:
            log.info("control connection %d closed: no active test suite, messages pass through", session.id)
            self.active = None
            self.decoded = False
            self.window = 1
            self._cork_turns(session)
            self._engaged_changed()
            self._seen_connection()  # no warning for a suite that is gone
            for callback in self.on_release:
                callback()

    @property
    def raw_frames(self) -> bool:
        """Whether the active suite's connection carries frame data as bytes (msgpack), not Base64."""
        return self.active is not None and self.active.encoding.binary

    def notify_soon(self, method: str, params: dict[str, Any]) -> None:
        """A notification that never makes the caller wait (ruleMatched)."""
        if self.active is not None:
            self.active.notify_soon(method, params)

    async def publish(self, event: Event) -> None:
        suite = self.active
        if suite is None:
            return
        if isinstance(event, Opened):
            self._seen_connection()
            await suite.notify(EVENT_CONNECTION_OPENED, event.info.to_json())
        elif isinstance(event, Closed):
            await suite.notify(EVENT_CONNECTION_CLOSED, event.closed.to_json())
        elif isinstance(event, Failed):  # a refused handshake came through the proxy all the same
            self._seen_connection()

    def seen(self, event: Any) -> None:
        """Not a frame sink (``frames`` is False): never told per-frame events."""

    def records_http(self) -> bool:
        return False

    def frame(self, connection_id: str, from_client: bool, frame: Frame, verdict: Verdict, by: str | None) -> None:
        """Not a frame sink."""

    #: It only has an opinion when it was asked.
    decided_by: str | None = "suite"

    def _answered(self, connection_id: str | None, answer: str, **fields: Any) -> None:
        if self.decisions is not None:
            self.decisions.decision(connection_id, by="suite", answer=answer, **fields)

    async def ask_raw(self, method: str, params: dict[str, Any], what: str) -> Any:
        """A call to the suite whose answer the caller parses; None (logged at ERROR, or DEBUG when the
        suite went away) when there is no usable answer: the caller then passes ``what`` on unchanged."""
        suite = self.active
        if suite is None or not suite.answers:
            return None
        exchange = params.get("connectionID")
        try:
            answer = await suite.call(method, params, self.transform_timeout)
        except PeerGone:
            log.debug("%s released unchanged: the test suite went away", what)
            self._answered(exchange, "gone", event=method, id=params.get("id"))
        except TimeoutError:
            log.error("%s passed on unchanged: no answer within %gs", what, self.transform_timeout)
            self._answered(exchange, "timeout", event=method, id=params.get("id"))
        except RemoteError as exc:
            log.error("%s passed on unchanged: the test suite answered with an error: %s", what, exc)
            self._answered(exchange, "error", event=method, id=params.get("id"), error=str(exc))
        else:
            action = answer.get("action") if isinstance(answer, dict) else None
            self._answered(exchange, str(action), event=method, id=params.get("id"))
            return answer
        return None

    def next_id(self) -> str:
        return self._message_id()

    async def ask_http(self, info: ConnectionOpened, method: str, body: bytes | None, rule_id: str,
                       response: bool) -> HttpVerdict:  # fmt: skip
        """transformInterceptedHttpRequest for a rule's ``transform``; what the suite said (forward unchanged
        when it said nothing usable), and whether to ask about the response too."""
        exchange = self._message_id()
        what = f"HTTP request {exchange} ({method} {info.url})"
        raw = await self.ask_raw(METHOD_HTTP_REQUEST, request_params(exchange, info, method, body, rule_id), what)
        verdict: HttpVerdict | None = None
        if raw is not None:
            try:
                verdict = parse_request_answer(raw)
            except WireError as exc:
                log.error("%s passed on unchanged: the test suite's answer was unusable: %s", what, exc)
        if response and (verdict is None or verdict.request is not None):
            return HttpVerdict(request=verdict.request if verdict else None, transform_response=rule_id)
        return verdict or HTTP_FORWARD

    async def transform_response(self, info: ConnectionOpened, rule_id: str,
                                 response: HttpResponse) -> HttpResponse | HttpDrop:  # fmt: skip
        """transformInterceptedHttpResponse; the response unchanged when the suite gives nothing usable."""
        exchange = self._message_id()
        what = f"HTTP response {exchange} ({response.status} for {info.url})"
        raw = await self.ask_raw(METHOD_HTTP_RESPONSE, response_params(exchange, info, response), what)
        if raw is None:
            return response
        try:
            return parse_response_answer(raw, response)
        except WireError as exc:
            log.error("%s passed on unchanged: the test suite's answer was unusable: %s", what, exc)
            return response

    async def ask(self, connection_id: str, frame: Frame, from_client: bool, rule_id: str | None = None) -> Verdict:
        """transformInterceptedMessage; PASS whenever the suite cannot give an answer."""
        suite = self.active
        if suite is None or not suite.answers:
            return PASS
        message = InterceptedMessage(self._message_id(), connection_id, frame, from_client)
        params = message.to_json(suite.encoding.binary)
        if rule_id is not None:
            params["ruleId"] = rule_id
        fmt = ably.Format.MSGPACK if frame.type is MessageType.BINARY else ably.Format.JSON
        if self.decoded:
            params["message"] = decoded_or_none(frame, fmt)
        asked = {"event": "message", "fromClient": from_client, "id": message.id}
        if rule_id is not None:
            asked["ruleId"] = rule_id
        try:  # the answer awaited here, directly: it resumes this call, not the control socket's
            raw = await (await suite.ask(METHOD_TRANSFORM, params, self.transform_timeout))
            if type(raw) is dict and raw.get("action") == "replace" and raw.get("type") == frame.type and \
                    raw.get("data") == params["data"]:  # fmt: skip
                # The common answer, the very message asked about (TransformResult.from_json's first case):
                # passed on as it came, nothing parsed or built.
                self._answered(connection_id, "pass", **asked)
                return PASS
            result = TransformResult.from_json(raw, sent=frame, sent_data=params["data"], fmt=fmt)
        except PeerGone:
            log.debug("message %s released unchanged: the test suite went away", message.id)
            self._answered(connection_id, "gone", **asked)
            return PASS
        except TimeoutError:
            log.error("message %s passed on unchanged: no answer within %gs", message.id, self.transform_timeout)
            self._answered(connection_id, "timeout", **asked)
            return PASS
        except (RemoteError, WireError) as exc:
            log.error("message %s passed on unchanged: the test suite's answer was unusable: %s", message.id, exc)
            self._answered(connection_id, "error", error=str(exc), **asked)
            return PASS
        if result.action is not Answer.REPLACE:
            self._answered(connection_id, "drop", **asked)
            return DROP
        assert result.frame is not None
        self._answered(connection_id, "pass" if result.frame is frame else "replace", **asked)
        return PASS if result.frame is frame else Replace(result.frame)

    #: The last link of the chain (in it only while a suite answers: :attr:`engaged`): what the suite says.
    decide = ask


def decoded_or_none(frame: Frame, fmt: ably.Format) -> Any:
    """The frame's Ably message for JSON (binary fields as Base64), or None when it does not decode."""
    try:
        return jsonable(ably.decode(frame.data, fmt))
    except ably.DecodeError:
        return None
