"""The active test suite: the last link of every decider chain, and a sink for connection events.

Connections do not know about control sessions: they are given this object as
one :class:`~appserver.verdict.Decider` and one :class:`~appserver.relay.events.Sink`.
Whatever goes wrong in the dialogue (no suite, suite gone, error, invalid
result, timeout), the message passes on unchanged; the failures are logged at
ERROR with the message id.
"""

from __future__ import annotations

import logging
from typing import Callable

from appserver.control.session import ControlSession
from appserver.errors import SuiteAlreadyActive
from appserver.relay.events import Closed, Event, Opened
from appserver.verdict import DROP, PASS, Replace, Verdict
from shared.constants import EVENT_CONNECTION_CLOSED, EVENT_CONNECTION_OPENED, METHOD_TRANSFORM
from shared.jsonrpc import PeerGone, RemoteError
from shared.wire import Action, Frame, InterceptedMessage, TransformResult, WireError

log = logging.getLogger(__name__)


class ActiveSuite:
    #: Only connections opening and closing are notified; frames are asked about, not published.
    frames = False

    def __init__(self, transform_timeout: float, message_id: Callable[[], str]) -> None:
        self.transform_timeout = transform_timeout
        self._message_id = message_id
        self.active: ControlSession | None = None

    def claim(self, session: ControlSession) -> None:
        if self.active is not None and self.active is not session:
            raise SuiteAlreadyActive(
                f"another control connection (session {self.active.id}) is already the active test suite"
            )
        if self.active is None:
            log.info("control session %d is now the active test suite", session.id)
        self.active = session

    def release(self, session: ControlSession) -> None:
        if self.active is session:
            log.info("control session %d closed: no active test suite, messages pass through", session.id)
            self.active = None

    async def publish(self, event: Event) -> None:
        suite = self.active
        if suite is None:
            return
        if isinstance(event, Opened):
            await suite.notify(EVENT_CONNECTION_OPENED, event.info.to_json())
        elif isinstance(event, Closed):
            await suite.notify(EVENT_CONNECTION_CLOSED, event.closed.to_json())

    async def decide(self, connection_id: str, frame: Frame, from_client: bool) -> Verdict | None:
        """The suite's verdict (transformInterceptedMessage); PASS whenever it cannot give one."""
        suite = self.active
        if suite is None:
            return None
        message = InterceptedMessage(self._message_id(), connection_id, frame, from_client)
        params = message.to_json()
        try:
            raw = await suite.call(METHOD_TRANSFORM, params, self.transform_timeout)
            result = TransformResult.from_json(raw, sent=frame, sent_data=params["data"])
        except PeerGone:
            log.debug("message %s released unchanged: the test suite went away", message.id)
            return PASS
        except TimeoutError:
            log.error("message %s passed on unchanged: no answer within %gs", message.id, self.transform_timeout)
            return PASS
        except (RemoteError, WireError) as exc:
            log.error("message %s passed on unchanged: the test suite's answer was unusable: %s", message.id, exc)
            return PASS
        if result.action is not Action.REPLACE:
            return DROP
        assert result.frame is not None
        return PASS if result.frame is frame else Replace(result.frame)
