"""What the rules tell others: a match's ``ruleMatched`` params (SPEC Part 3), and a decision for the trace
(SPEC Part 5)."""

from __future__ import annotations

from typing import Any

from appserver.rules.compile import CompiledRule
from appserver.rules.engine import Outcome
from appserver.rules.subject import Subject
from shared.wire import jsonable


def matched_params(rule: CompiledRule, subject: Subject, extra: dict[str, Any] | None, message_id: str,
                   decoded: bool) -> dict[str, Any]:  # fmt: skip
    frame = subject.frame
    if frame is not None:  # the common case (observing frames), built in one go
        params: dict[str, Any] = {"ruleId": rule.id, "event": subject.event, "connectionID": subject.connection_id,
                                  "fromClient": subject.from_client, "id": message_id, "type": frame.type.value,
                                  "data": frame.wire_data(), "matched": rule.matched}  # fmt: skip
        if decoded:
            params["message"] = jsonable(subject.message())
        return params
    params = {"ruleId": rule.id, "event": subject.event, "connectionID": subject.connection_id,
              "matched": rule.matched}  # fmt: skip
    if subject.from_client is not None:
        params["fromClient"] = subject.from_client
    if subject.event == "connect":
        h = subject.handshake
        params.update(path=h.path, query=h.query, headers=h.headers, host=h.host)
    elif subject.event == "http":
        params.update(method=subject.method, url=subject.handshake.url)
    if extra:
        params.update(extra)
    return params


def decision_fields(subject: Subject, outcome: Outcome) -> dict[str, Any]:
    """A decision about anything but a frame (a frame's is on its own trace event): which rule, what."""
    fields: dict[str, Any] = {"event": subject.event}
    if subject.from_client is not None:
        fields["fromClient"] = subject.from_client
    if outcome.decided_by is not None and outcome.fate is not None:
        fields.update(ruleId=outcome.decided_by.id, action=outcome.fate.name)
    if outcome.effects:
        fields["effects"] = [{"ruleId": rule.id, "action": unit.name} for rule, unit in outcome.effects]
    if subject.event in ("connect", "http"):
        fields["url"] = subject.handshake.url
    return fields
