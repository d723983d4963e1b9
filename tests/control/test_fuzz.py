"""Fuzzing the control API with hypothesis.

Properties: every frame gets only valid JSON-RPC 2.0 responses, on the
connection that sent it, with ids taken from the frame (or null); a request
with an id gets an answer; the server never crashes, and interception still
works afterwards. `make test` runs a short run; `make fuzz` runs ≥ 10,000
examples (HYPOTHESIS_PROFILE=fuzz).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from appserver.app import AppServer
from tests.conftest import make_config

settings.register_profile("fuzz", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.register_profile("default", max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

METHODS = ["startInterception", "injectMessage", "closeConnection", "mitmproxyReady", "transformInterceptedMessage",
           "nope", ""]  # fmt: skip

json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=20) | \
    st.floats(allow_nan=False, allow_infinity=False)  # fmt: skip
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
ids = st.none() | st.integers(min_value=-(2**64), max_value=2**64) | st.text(max_size=12) | st.just(10**30)
params = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        "mode": st.sampled_from(["proxy", "local", "x"]) | json_scalars,
        "pid": st.integers(min_value=-5, max_value=2**40) | json_scalars,
        "connectionID": st.text(max_size=8) | json_scalars,
        "fromClient": st.booleans() | json_scalars,
        "type": st.sampled_from(["text", "binary", "xml"]) | json_scalars,
        "data": st.text(max_size=50) | st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()) |
                st.just("not base64!"),
        "side": st.sampled_from(["client", "server", "both", "up"]),
        "code": st.integers(min_value=0, max_value=70000),
        "abrupt": json_scalars,
    }),
)  # fmt: skip
requests = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0", 2])},
    optional={"method": st.sampled_from(METHODS) | st.text(max_size=10) | json_scalars, "params": params, "id": ids,
              "result": json_values, "error": json_values},
)  # fmt: skip
payloads = st.one_of(requests, st.lists(requests, max_size=4), json_values, st.lists(st.lists(requests, max_size=2), max_size=2))
frames = st.one_of(
    payloads.map(lambda p: json.dumps(p)),
    payloads.map(lambda p: json.dumps(p)[:-1]),  # truncated: near-valid JSON
    st.text(max_size=200),
    st.binary(max_size=200),
    st.just("NaN"), st.just('{"jsonrpc": "2.0", "method": "x", "id": NaN}'), st.just("[" * 5000 + "]" * 5000),
    st.just(json.dumps({"jsonrpc": "2.0", "method": "injectMessage", "id": 1, "params": {"data": "x" * 200_000}})),
)  # fmt: skip


class ServerThread:
    """An app server on its own event loop, so hypothesis can drive it with a blocking client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = AppServer(make_config())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.control_port}/"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread() as running:
        yield running


@pytest.fixture(scope="module")
def connections(server: ServerThread) -> Iterator[tuple[ClientConnection, ClientConnection]]:
    """(the fuzzing connection, a bystander that must never hear anything)."""
    with connect(server.url, max_size=None) as fuzzer, connect(server.url) as bystander:
        yield fuzzer, bystander


def ids_in(frame: str | bytes) -> list[Any]:
    try:
        payload = json.loads(frame)
    except (ValueError, RecursionError):
        return []
    items = payload if isinstance(payload, list) else [payload]
    return [item.get("id") for item in items if isinstance(item, dict)]


def not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def readable_ids(frame: str | bytes) -> list[Any]:
    """The ids of every request object in the frame (alone or in a batch) whose id can be read: each
    must get an answer carrying that id, whatever else is wrong with it (JSON-RPC 2.0 §5)."""
    try:
        payload = json.loads(frame, parse_constant=not_json)  # NaN is no JSON: a parse error, id null
    except (ValueError, RecursionError):
        return []
    items = payload if isinstance(payload, list) else [payload]
    return [item["id"] for item in items
            if isinstance(item, dict) and isinstance(item.get("id"), (str, int, float))
            and not isinstance(item["id"], bool)
            and not ("method" not in item and ("result" in item or "error" in item))]  # a response: never answered




def check_response(response: Any, allowed_ids: list[Any]) -> None:
    assert isinstance(response, dict), response
    assert response.get("jsonrpc") == "2.0", response
    assert ("result" in response) != ("error" in response), response
    if "error" in response:
        assert isinstance(response["error"].get("code"), int) and isinstance(response["error"].get("message"), str)
    assert response.get("id") is None or response["id"] in allowed_ids, (response, allowed_ids)


def exchange(ws: ClientConnection, frame: str | bytes) -> list[Any]:
    """Send the frame, then a sentinel request; return every reply that came before the sentinel's."""
    ws.send(frame)
    ws.send(json.dumps({"jsonrpc": "2.0", "method": "nope", "id": "sentinel"}))
    replies = []
    while True:
        raw = ws.recv(timeout=10)
        assert isinstance(raw, str), "the control API answered with a binary frame"
        reply = json.loads(raw, parse_constant=lambda c: pytest.fail(f"{c} in a reply"))
        if isinstance(reply, dict) and reply.get("id") == "sentinel":
            break
        replies.append(reply)
    return replies


@given(frame=frames)
def test_every_frame_gets_valid_answers_on_its_own_connection(
    connections: tuple[ClientConnection, ClientConnection], frame: str | bytes
) -> None:
    """Arbitrary frames get only valid JSON-RPC responses, a request with an id gets its answer,
    nothing reaches another connection, and the server keeps answering."""
    fuzzer, bystander = connections
    replies = exchange(fuzzer, frame)
    allowed = ids_in(frame)
    for reply in replies:
        for response in reply if isinstance(reply, list) else [reply]:
            check_response(response, allowed)
    answered = [r.get("id") for reply in replies for r in (reply if isinstance(reply, list) else [reply])]
    wanted = readable_ids(frame)
    for expected in wanted:
        # as many answers as requests with that id (a batch may repeat one); a concurrent reply may come
        # after the sentinel's: give it a moment
        while answered.count(expected) < wanted.count(expected):
            late = json.loads(fuzzer.recv(timeout=5))
            answered += [r.get("id") for r in (late if isinstance(late, list) else [late])]
    with pytest.raises(TimeoutError):
        bystander.recv(timeout=0)


def test_interception_still_works_after_fuzzing(
    server: ServerThread, connections: tuple[ClientConnection, ClientConnection]
) -> None:
    """After the fuzzing, a new suite can start interception (the fuzzer's claim is released when it leaves)."""
    fuzzer, _ = connections
    fuzzer.close()
    with connect(server.url) as suite:
        for _ in range(50):
            suite.send(json.dumps({"jsonrpc": "2.0", "method": "startInterception", "params": {"mode": "proxy"}, "id": 1}))
            reply = json.loads(suite.recv(timeout=10))
            if "result" in reply:
                break
            threading.Event().wait(0.05)  # the fuzzer's close is still being processed
        assert reply == {"jsonrpc": "2.0", "result": {}, "id": 1}
