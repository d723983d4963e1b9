"""Fuzzing uts-proxy's REST API with hypothesis (SPEC Part 8): malformed JSON, wrong types, unknown fields,
huge bodies, odd paths. Properties: every answer is a clear 4xx (or the 2xx the request earned) with a JSON
``{"error": ...}`` body for a 4xx, never a 5xx or a dropped connection; afterwards the server is healthy and
every session a fuzzed request created is deleted, leaving nothing open. `make fuzz` runs more examples."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appserver.app import AppServer
from tests.conftest import make_config
from tests.control.test_fuzz import json_scalars, json_values  # noqa: F401 - also loads the hypothesis profile

FIELDS = ["match", "action", "times", "comment", "type", "count", "channel", "method", "pathContains",
          "queryContains", "delayMs", "closeCode", "message", "status", "body", "headers", "rules", "position",
          "target", "realtimeHost", "restHost", "insecure", "port", "timeoutMs", "zzz"]  # fmt: skip
MATCH_TYPES = ["ws_connect", "ws_frame_to_server", "ws_frame_to_client", "delay_after_ws_connect", "http_request", "x"]
ACTION_TYPES = ["passthrough", "disconnect", "close", "refuse_connection", "accept_and_close", "suppress", "delay",
                "inject_to_client", "inject_to_client_and_close", "replace", "suppress_onwards", "http_respond",
                "http_delay", "http_drop", "http_replace_response", "x"]  # fmt: skip

values = json_values | st.sampled_from(MATCH_TYPES + ACTION_TYPES)
objects = st.dictionaries(st.sampled_from(FIELDS), values, max_size=5)
uts_rules = st.fixed_dictionaries(
    {"match": st.fixed_dictionaries({"type": st.sampled_from(MATCH_TYPES)}, optional={
        "count": json_scalars, "action": st.sampled_from(["ATTACH", "15", "NOPE"]) | json_scalars,
        "channel": json_scalars, "queryContains": objects, "delayMs": st.integers(-5, 50)}) | objects,
     "action": st.fixed_dictionaries({"type": st.sampled_from(ACTION_TYPES)}, optional={
         "message": objects | json_scalars, "closeCode": st.integers(-1, 70000) | json_scalars,
         "status": st.integers(-1, 1000), "body": json_values, "headers": objects,
         "delayMs": st.integers(-5, 50)}) | objects},
    optional={"times": json_scalars, "comment": json_scalars, "zzz": json_scalars},
)  # fmt: skip
bodies = st.one_of(
    st.fixed_dictionaries({"target": st.fixed_dictionaries({}, optional={
        "realtimeHost": st.sampled_from(["127.0.0.1:9", "bad host", ""]) | json_scalars,
        "restHost": st.sampled_from(["127.0.0.1:9", ""]) | json_scalars, "insecure": json_scalars})},
        optional={"rules": st.lists(uts_rules, max_size=3) | json_scalars, "port": st.integers(-2, 70000),
                  "timeoutMs": st.integers(-5, 100) | json_scalars, "zzz": json_scalars}),
    st.fixed_dictionaries({}, optional={"rules": st.lists(uts_rules, max_size=3) | json_values,
                                        "position": st.sampled_from(["append", "prepend", "x"]) | json_scalars}),
    st.fixed_dictionaries({"type": st.sampled_from(ACTION_TYPES)},
                          optional={"message": objects | json_scalars, "closeCode": st.integers(-1, 70000)}),
    objects, json_values,
).map(json.dumps)
raw_bodies = bodies | bodies.map(lambda b: b[:-1]) | st.text(max_size=100) | st.binary(max_size=60) | \
    st.just("[" * 3000 + "]" * 3000) | st.just('{"target": {"realtimeHost": "' + "x" * 2_000_000 + '"}}')  # fmt: skip
ROUTES = [("POST", "/sessions"), ("POST", "/sessions/{id}/rules"), ("POST", "/sessions/{id}/actions"),
          ("GET", "/sessions/{id}"), ("GET", "/sessions/{id}/log"), ("DELETE", "/sessions/{other}"),
          ("GET", "/health"), ("PUT", "/sessions"), ("GET", "/%00/../sessions")]  # fmt: skip


class ServerThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = AppServer(make_config(uts_port=0))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.uts_port, timeout=30)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread() as running:
        yield running


@pytest.fixture(scope="module")
def standing(server: ServerThread) -> str:
    """A session the fuzzed calls act on (one target nobody listens on)."""
    status, body = server.call("POST", "/sessions", json.dumps({"target": {"realtimeHost": "127.0.0.1:9"}}).encode())
    assert status == 201, body
    return str(body["sessionId"])


@given(route=st.sampled_from(ROUTES), body=raw_bodies)
def test_the_uts_api_answers_every_request_clearly(server: ServerThread, standing: str, route: tuple[str, str],
                                                   body: str | bytes) -> None:  # fmt: skip
    method, path = route
    path = path.format(id=standing, other="nope")
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    status, answer = server.call(method, path, data)
    assert status < 500, (status, answer)
    if status >= 400 and path.startswith("/sessions"):
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str) and answer["error"], answer
    if method == "POST" and path == "/sessions" and status == 201:  # it earned a session: it goes again
        assert server.call("DELETE", f"/sessions/{answer['sessionId']}")[0] == 200


def test_after_the_fuzzing_the_server_is_healthy_and_nothing_is_left(server: ServerThread, standing: str) -> None:
    assert server.call("GET", "/health") == (200, {"ok": True})
    assert server.call("DELETE", f"/sessions/{standing}")[0] == 200
    assert not server.server.registry.sessions and not server.server.registry.connections
    assert server.server.uts is not None and not server.server.uts.sessions
