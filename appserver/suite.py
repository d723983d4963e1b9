"""The active test suite, and the one question a connection asks it.

Connections do not know about control sessions: they are handed
:meth:`Interception.transform`, a narrow callable. Whatever goes wrong in the
dialogue (no suite, suite gone, error, invalid result, timeout), the message
is passed on unchanged; the failures are logged at ERROR with the message id.
"""

from __future__ import annotations

import logging
from typing import Any

from appserver.control import ControlSession, RemoteError
from appserver.errors import SuiteAlreadyActive, SuiteGone
from appserver.relay import next_message_id
from shared.constants import METHOD_TRANSFORM
from shared.wire import Action, Frame, InterceptedMessage, TransformResult, WireError

log = logging.getLogger(__name__)


class Interception:
    def __init__(self, transform_timeout: float) -> None:
        self.transform_timeout = transform_timeout
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

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        if self.active is not None:
            await self.active.notify(method, params)

    async def transform(self, connection_id: str, frame: Frame, from_client: bool) -> Frame | None:
        """What to deliver in place of ``frame`` (None: drop it)."""
        suite = self.active
        if suite is None:
            return frame
        message = InterceptedMessage(next_message_id(), connection_id, frame, from_client)
        params = message.to_json()
        try:
            raw = await suite.call(METHOD_TRANSFORM, params, self.transform_timeout)
            result = TransformResult.from_json(raw, sent=frame, sent_data=params["data"])
        except SuiteGone:
            log.debug("message %s released unchanged: the test suite went away", message.id)
            return frame
        except TimeoutError:
            reason = f"no answer within {self.transform_timeout:g}s"
            log.error("message %s passed on unchanged: %s", message.id, reason)
            return frame
        except (RemoteError, WireError) as exc:
            log.error("message %s passed on unchanged: the test suite's answer was unusable: %s", message.id, exc)
            return frame
        return result.frame if result.action is Action.REPLACE else None
