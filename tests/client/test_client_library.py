"""The test-suite client library against a real app server, upstream and client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import aiohttp
import msgpack
import pytest

from appserver.app import AppServer
from shared.ably import Action
from shared.client import Intercepted, InterceptionClient, ProxyCallError
from shared.cork import cork_writer
from tests.mitm_helpers import free_port
from tests.peers import UpstreamServer, close_cleanly, connect_client, receive_data


@pytest.fixture
async def client(app_server: AppServer) -> AsyncIterator[InterceptionClient]:
    c = await InterceptionClient.connect(f"ws://127.0.0.1:{app_server.control_port}/")
    await c.start_interception("proxy")
    try:
        yield c
    finally:
        await c.close()


async def test_transform_gets_decoded_json_and_reencodes(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, client: InterceptionClient
) -> None:
    """A server CONNECTED in JSON is decoded for the callback, and its edit arrives re-encoded as JSON text."""
    async with client.intercept() as ctx:

        def edit(item: Intercepted) -> dict[str, Any] | None:
            assert item.message is not None and item.action == Action.CONNECTED
            item.message["connectionDetails"]["maxIdleInterval"] = 1234
            return item.message

        ctx.transform_server_message = edit
        sdk = await connect_client(http, app_server.proxy_port, upstream.host, "/?format=json")
        _, server = await upstream.next()
        await server.send_str(json.dumps({"action": 4, "connectionDetails": {"maxIdleInterval": 15000}}))
        [text] = await receive_data(sdk, 1)
        assert isinstance(text, str)
        assert json.loads(text)["connectionDetails"]["maxIdleInterval"] == 1234
        await close_cleanly(sdk, server)


async def test_drop_and_spy_msgpack(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, client: InterceptionClient
) -> None:
    """Returning None drops a msgpack ACK; a spy sees the client's MESSAGE without having to return it."""
    seen: list[Intercepted] = []
    async with client.intercept() as ctx:
        ctx.spy_client_message = seen.append
        ctx.transform_server_message = lambda m: None if m.action == Action.ACK else m.message
        sdk = await connect_client(http, app_server.proxy_port, upstream.host, "/?format=msgpack")
        _, server = await upstream.next()
        await sdk.send_bytes(msgpack.packb({"action": 15, "channel": "ch", "msgSerial": 0, "messages": [{"data": b"x"}]}))
        [published] = await receive_data(server, 1)
        assert msgpack.unpackb(published)["channel"] == "ch"
        assert seen[0].message == {"action": 15, "channel": "ch", "msgSerial": 0, "messages": [{"data": b"x"}]}
        await server.send_bytes(msgpack.packb({"action": 1, "msgSerial": 0, "count": 1}))
        await server.send_bytes(msgpack.packb({"action": 0}))
        [after] = await receive_data(sdk, 1)
        assert msgpack.unpackb(after) == {"action": 0}  # the ACK never arrived
        await close_cleanly(sdk, server)


async def test_inject_encodes_in_connection_format(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, client: InterceptionClient
) -> None:
    """inject_message encodes in the connection's own format (msgpack here), and events are awaitable."""
    async with client.intercept() as ctx:
        sdk = await connect_client(http, app_server.proxy_port, upstream.host, "/?format=msgpack&v=6")
        _, server = await upstream.next()
        conn = await ctx.next_connection()
        assert conn.query["v"] == "6" and conn.query["format"] == "msgpack"
        await ctx.inject_message(conn.id, {"action": Action.DISCONNECTED, "error": {"code": 80003}}, from_client=False)
        [frame] = await receive_data(sdk, 1)
        assert isinstance(frame, bytes)
        assert msgpack.unpackb(frame) == {"action": 6, "error": {"code": 80003}}
        await ctx.close_connection(conn.id, side="both", code=4000, reason="done")
        closed = await ctx.connection_closed(conn.id)
        assert (closed.closed_by, closed.code, closed.reason) == ("proxy", 4000, "done")
        await sdk.close()


async def test_proxy_errors_surface_as_exceptions(client: InterceptionClient) -> None:
    """A JSON-RPC error from the proxy is raised with the proxy's message."""
    with pytest.raises(ProxyCallError, match="no open connection with connectionID 'ghost'"):
        await client.inject_message("ghost", {"action": 0}, from_client=True)


async def test_callbacks_do_not_outlive_their_context(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, client: InterceptionClient
) -> None:
    """After the context ends, a lingering connection's messages pass through unchanged."""
    async with client.intercept() as ctx:
        ctx.transform_client_message = lambda m: None
        sdk = await connect_client(http, app_server.proxy_port, upstream.host, "/?format=json")
        _, server = await upstream.next()
    await sdk.send_str('{"action":0}')
    assert await receive_data(server, 1) == ['{"action":0}']
    await close_cleanly(sdk, server)


async def test_failing_callback_fails_the_context_and_passes_message(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, client: InterceptionClient
) -> None:
    """A callback that raises passes the message on unchanged and re-raises when the context exits."""

    def broken(item: Intercepted) -> None:
        raise AssertionError("the test's own assertion")

    with pytest.raises(AssertionError, match="the test's own assertion"):
        async with client.intercept() as ctx:
            ctx.transform_client_message = broken
            sdk = await connect_client(http, app_server.proxy_port, upstream.host)
            _, server = await upstream.next()
            await sdk.send_str('{"action":0}')
            assert await receive_data(server, 1) == ['{"action":0}']
            await close_cleanly(sdk, server)


async def test_async_callbacks(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, client: InterceptionClient
) -> None:
    """Callbacks may be coroutines: the message waits for them."""
    async with client.intercept() as ctx:

        async def slow(item: Intercepted) -> dict[str, Any] | None:
            await asyncio.sleep(0.05)
            assert item.message is not None
            return {**item.message, "channel": "renamed"}

        ctx.transform_client_message = slow
        sdk = await connect_client(http, app_server.proxy_port, upstream.host)
        _, server = await upstream.next()
        await sdk.send_str('{"action":10,"channel":"a"}')
        [text] = await receive_data(server, 1)
        assert json.loads(text) == {"action": 10, "channel": "renamed"}
        await close_cleanly(sdk, server)


def test_pytest_plugin_fixtures(pytester: pytest.Pytester, appserver_for_plugin: int) -> None:
    """The pytest plugin's `interception` fixture connects, starts interception and yields a context."""
    pytester.makepyfile(
        textwrap.dedent(
            """
            from shared.client import InterceptionContext, ProxyCallError
            import pytest

            async def test_context(interception):
                assert isinstance(interception, InterceptionContext)
                with pytest.raises(ProxyCallError):
                    await interception.inject_message("nope", {"action": 0}, from_client=True)
            """
        )
    )
    result = pytester.runpytest_subprocess(
        f"--interception-url=ws://127.0.0.1:{appserver_for_plugin}/", "-p", "asyncio", "-o", "asyncio_mode=auto"
    )
    result.assert_outcomes(passed=1)


def test_plugin_mode_none_makes_the_suite_active(pytester: pytest.Pytester, appserver_for_plugin: int) -> None:
    """--interception-mode none (direct mode) still makes the test's connection the active suite."""
    pytester.makepyfile(
        textwrap.dedent(
            f"""
            import pytest
            from shared.client import InterceptionClient, ProxyCallError

            async def test_active(interception):
                other = await InterceptionClient.connect("ws://127.0.0.1:{appserver_for_plugin}/")
                try:
                    with pytest.raises(ProxyCallError) as refused:
                        await other.start_interception("none")
                    assert refused.value.code == -32001  # another connection is the active suite
                finally:
                    await other.close()
            """
        )
    )
    result = pytester.runpytest_subprocess(
        f"--interception-url=ws://127.0.0.1:{appserver_for_plugin}/", "--interception-mode=none",
        "-p", "asyncio", "-o", "asyncio_mode=auto",
    )  # fmt: skip
    result.assert_outcomes(passed=1)


def test_plugin_speaks_msgpack_with_a_window_when_asked(pytester: pytest.Pytester, appserver_for_plugin: int) -> None:
    """--interception-encoding msgpack --interception-window 4: the test's control connection chose msgpack, and a
    window of 0 is refused by the proxy with -32602 naming it (the option reaches startInterception)."""
    pytester.makepyfile(
        textwrap.dedent(
            """
            async def test_encoding(interception_client):
                assert interception_client.encoding.name == "msgpack"
            """
        )
    )
    common = (f"--interception-url=ws://127.0.0.1:{appserver_for_plugin}/", "--interception-mode=none",
              "-p", "asyncio", "-o", "asyncio_mode=auto", "--interception-encoding=msgpack")  # fmt: skip
    pytester.runpytest_subprocess(*common, "--interception-window=4").assert_outcomes(passed=1)
    refused = pytester.runpytest_subprocess(*common, "--interception-window=0")
    refused.assert_outcomes(errors=1)
    refused.stdout.fnmatch_lines(["*startInterception*'window' must be from 1 to 256*-32602*"])


TRIVIAL_TEST = "async def test_anything(interception):\n    pass\n"


def test_plugin_fails_loudly_when_the_proxy_is_unreachable(pytester: pytest.Pytester) -> None:
    """No app server at the URL: the test errors, saying which URL could not be reached and what to run."""
    pytester.makepyfile(TRIVIAL_TEST)
    port = free_port()
    result = pytester.runpytest_subprocess(f"--interception-url=ws://127.0.0.1:{port}/", "-p", "asyncio",
                                           "-o", "asyncio_mode=auto")  # fmt: skip
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*cannot reach the control API at ws://127.0.0.1:{port}/*make run-proxy*"])


@pytest.mark.parametrize("appserver_for_plugin", [("--mitmproxy-port", str(free_port()))], indirect=True)
def test_plugin_fails_loudly_when_interception_cannot_start(
    pytester: pytest.Pytester, appserver_for_plugin: int
) -> None:
    """startInterception refused (local mode, no such process): the test errors with the proxy's reason."""
    pytester.makepyfile(TRIVIAL_TEST)
    result = pytester.runpytest_subprocess(
        f"--interception-url=ws://127.0.0.1:{appserver_for_plugin}/", "--interception-mode=local",
        "--interception-pid=999999999", "-p", "asyncio", "-o", "asyncio_mode=auto",
    )  # fmt: skip
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*startInterception {'mode': 'local', 'pid': 999999999} failed*"
                                 "no process with pid 999999999*(code -32004)*"])


@pytest.fixture
def appserver_for_plugin(request: pytest.FixtureRequest) -> Iterator[int]:
    """`python -m appserver` on free ports: --no-mitmproxy unless the test gives other flags (indirect)."""
    with running_appserver(getattr(request, "param", ("--no-mitmproxy",))) as (control, _):
        yield control


def test_the_plugin_writes_the_trace_of_a_failed_test(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A failed test's trace is written as JSON Lines and HAR under --interception-trace-dir, and its failure
    names the file; a passing test's is not written (unless --interception-trace=all)."""
    with running_appserver(("--no-mitmproxy",)) as (control, proxy):
        pytester.makepyfile(textwrap.dedent(f"""
            import aiohttp

            async def get_time():
                headers = {{"Ably-Test-Host": "127.0.0.1:1", "Ably-Test-Proto": "http"}}
                async with aiohttp.ClientSession() as http:
                    async with http.get("http://127.0.0.1:{proxy}/time", headers=headers) as response:
                        return response.status

            async def test_fails(interception):
                assert await get_time() == 200  # nothing listens on port 1: 502

            async def test_passes(interception):
                assert await get_time() == 502
            """))  # fmt: skip
        traces = tmp_path / "traces"
        common = (f"--interception-url=ws://127.0.0.1:{control}/", f"--interception-trace-dir={traces}", "-p",
                  "asyncio", "-o", "asyncio_mode=auto")  # fmt: skip
        result = pytester.runpytest_subprocess(*common)
        result.assert_outcomes(passed=1, failed=1)
        written = traces / "test_the_plugin_writes_the_trace_of_a_failed_test.py_test_fails.jsonl"
        result.stdout.fnmatch_lines([f"*the proxy's trace of this test: {written}*python -m appserver.trace*"])
        assert sorted(p.name for p in traces.iterdir()) == [written.with_suffix(".har").name, written.name]
        events = [json.loads(line) for line in written.read_text().splitlines()]
        assert [(e["kind"], e.get("status")) for e in events if e["kind"].startswith("http")] == [
            ("http_request", None), ("http_response", 502)]
        assert json.loads(written.with_suffix(".har").read_text())["log"]["entries"][0]["response"]["status"] == 502
        result = pytester.runpytest_subprocess(*common, "--interception-trace=all", "-k", "passes")
        result.assert_outcomes(passed=1)
        assert (traces / "test_the_plugin_writes_the_trace_of_a_failed_test.py_test_passes.jsonl").exists()


@contextlib.contextmanager
def running_appserver(args: Sequence[str]) -> Iterator[tuple[int, int]]:
    """`python -m appserver` with these flags on free ports: its control and proxy ports. A port taken by
    another test between choosing and binding it (the server exits) is chosen again; a server that does not
    listen within 15 s fails the test, saying so."""
    for _ in range(3):
        control, proxy = free_port(), free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "appserver", *args, "--control-port", str(control), "--proxy-port", str(proxy)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and proc.poll() is None:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", control)) == 0:
                        break
                time.sleep(0.05)
            else:
                if proc.poll() is not None:
                    continue  # it exited: most likely a port was taken meanwhile
                raise AssertionError("python -m appserver did not listen within 15 s")
            yield control, proxy
            return
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(10)
    raise AssertionError("python -m appserver exited three times (ports taken?)")


pytest_plugins = ["pytester"]


async def test_a_contexts_rules_end_with_it(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer, client: InterceptionClient
) -> None:
    """Rules added through a context are cleared when it ends, like its callbacks; ruleMatched reaches its callback."""
    from shared import rules

    seen: list[dict[str, Any]] = []
    async with client.intercept() as ctx:
        ctx.on_rule_matched = seen.append
        [rule_id] = await ctx.add_rules(rules.observe(from_client=True, channel="a*"))
        sdk = await connect_client(http, app_server.proxy_port, upstream.host)
        _, server = await upstream.next()
        await sdk.send_str('{"action":10,"channel":"ab"}')
        await receive_data(server, 1)
        assert await ctx.wait_for_rule(rule_id) == 1
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.02)
        assert [s["ruleId"] for s in seen] == [rule_id]
        assert [r["id"] for r in await ctx.list_rules()] == [rule_id]
    assert await client.list_rules() == []
    await close_cleanly(sdk, server)


async def test_http_rules_and_callbacks(
    http: aiohttp.ClientSession, app_server: AppServer, client: InterceptionClient, no_leaks: None
) -> None:
    """HTTP rule helpers and the context's HTTP callbacks: a rule answers /time; a transform rule hands
    /token to transform_http_request (its JSON body decoded), which answers 401; the response callback sees
    the upstream's answer to /other and replaces it."""
    from aiohttp import web

    from shared import http_dialogue, rules
    from tests.mitm_helpers import run_app
    from tests.peers import redirect_headers

    async def upstream(request: web.Request) -> web.Response:
        return web.json_response({"from": "upstream"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream)
    seen: list[Any] = []
    async with run_app(app) as port, client.intercept() as ctx:
        def on_request(req: Any) -> Any:
            seen.append(req.decoded)
            return http_dialogue.respond(401, json={"error": {"code": 40101}}) if req.path == "/token" else None

        ctx.transform_http_request = on_request
        ctx.transform_http_response = lambda res: http_dialogue.replace_response(json={**res.decoded, "seen": 1})
        await ctx.add_rules(rules.http_respond(200, json=[123], path="/time"),
                            rules.http_transform(response=True, path="/other"),
                            rules.http_transform(path="/token"))  # fmt: skip
        base, headers = f"http://127.0.0.1:{app_server.proxy_port}", redirect_headers(f"127.0.0.1:{port}", "http")
        async with http.get(f"{base}/time", headers=headers) as r:
            assert await r.json() == [123]
        async with http.post(f"{base}/token", json={"keyName": "k"}, headers=headers) as r:
            assert (r.status, await r.json()) == (401, {"error": {"code": 40101}})
        async with http.get(f"{base}/other", headers=headers) as r:
            assert await r.json() == {"from": "upstream", "seen": 1}
    assert seen == [{"keyName": "k"}, None]


def frames_in(data: bytes) -> int:
    """How many whole WebSocket frames ``data`` holds (a client's: masked)."""
    count = 0
    while data:
        length, at = data[1] & 0x7F, 2
        if length == 126:
            length, at = int.from_bytes(data[2:4]), 4
        elif length == 127:
            length, at = int.from_bytes(data[2:10]), 10
        at += 4 if data[1] & 0x80 else 0
        assert len(data) >= at + length, "a frame cut short"
        data = data[at + length:]
        count += 1
    return count


async def test_with_a_window_the_answers_to_what_came_together_leave_together(
    http: aiohttp.ClientSession, app_server: AppServer, upstream: UpstreamServer
) -> None:
    """start_interception(window=8): the client's answers to eight requests that came in one frame's read leave in
    one write (shared/cork.py with whole turns), not one send() each; with window 1 a lone answer leaves at once."""
    c = await InterceptionClient.connect(f"ws://127.0.0.1:{app_server.control_port}/")
    try:
        await c.start_interception("proxy")
        assert not c._cork.whole_turns  # noqa: SLF001
        await c.close()
        c = await InterceptionClient.connect(f"ws://127.0.0.1:{app_server.control_port}/")
        await c.start_interception("proxy", window=8)
        assert c._cork.whole_turns  # noqa: SLF001
        writes: list[bytes] = []
        inner = c._cork._transport  # noqa: SLF001
        original = inner.write

        def record(data: bytes) -> None:
            writes.append(bytes(data))
            original(data)

        inner.write = record  # type: ignore[method-assign]
        async with c.intercept() as ctx:
            ctx.transform_client_message = lambda item: item.message
            sdk = await connect_client(http, app_server.proxy_port, upstream.host, "/?format=json")
            _, server = await upstream.next()
            cork_writer(sdk).whole_turns = True  # the SDK's eight frames in one write
            sent = [json.dumps({"action": 10, "channel": f"c{i}"}) for i in range(8)]
            for text in sent:
                await sdk.send_str(text)
            assert [json.loads(t) for t in await receive_data(server, 8)] == [json.loads(t) for t in sent]
            assert [frames_in(w) for w in writes] == [8], writes  # (masked: counted, not read)
            await close_cleanly(sdk, server)
    finally:
        await c.close()
