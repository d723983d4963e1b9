"""The redirector addon, driven by mitmproxy's own test helpers (no sockets
except the control-API listener of the notification tests, on loopback)."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
import websockets.asyncio.server
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow, tutils

from redirector.addon import Redirector, notify_ready
from shared.constants import HEADER_TEST_HOST, HEADER_TEST_PROTO, METHOD_MITMPROXY_READY

UPGRADE = (("Upgrade", "websocket"), ("Connection", "Upgrade"))


def make_flow(host: str = "realtime.example", port: int = 80, tls: bool = False,
              headers: tuple[tuple[str, str], ...] = UPGRADE,
              path: str = "/?v=6&format=json") -> http.HTTPFlow:
    """A live flow as mitmproxy hands it to requestheaders."""
    request = tutils.treq(host=host, port=port, scheme=b"https" if tls else b"http",
                          path=path.encode(), content=b"",
                          headers=http.Headers([(k.encode(), v.encode()) for k, v in headers]))
    flow = tflow.tflow(req=request)
    flow.client_conn.timestamp_tls_setup = 1.0 if tls else None
    return flow


@pytest.fixture
def addon() -> Iterator[Redirector]:
    redirector = Redirector()
    with taddons.context(redirector) as tctx:
        tctx.configure(redirector, appserver_control="", appserver_proxy="127.0.0.1:8002")
        yield redirector


def run(addon: Redirector, flow: http.HTTPFlow) -> http.HTTPFlow:
    addon.requestheaders(flow)
    return flow


def redirected(flow: http.HTTPFlow) -> bool:
    return (flow.request.host, flow.request.port, flow.request.scheme) == ("127.0.0.1", 8002, "http")


@pytest.mark.parametrize("headers", [
    (("Upgrade", "websocket"), ("Connection", "Upgrade")),
    (("Upgrade", "websocket"), ("Connection", "keep-alive, Upgrade")),
    (("Upgrade", "WebSocket"), ("Connection", "UPGRADE")),
    (("Upgrade", "websocket"), ("Connection", "  keep-alive ,upgrade  ")),
    (("Upgrade", "websocket"), ("Connection", "keep-alive"), ("Connection", "Upgrade")),
])
def test_upgrade_variants_are_redirected(addon: Redirector, headers: tuple[tuple[str, str], ...]) -> None:
    """Any spelling/spacing of Upgrade: websocket + Connection token upgrade is redirected."""
    assert redirected(run(addon, make_flow(headers=headers)))


@pytest.mark.parametrize("headers", [
    (("Upgrade", "websocket"),),
    (),
    (("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings")),
    (("Upgrade", "websocket"), ("Connection", "upgrade-insecure")),
])
def test_plain_requests_are_redirected_as_http(addon: Redirector, headers: tuple[tuple[str, str], ...]) -> None:
    """Requests without a WebSocket upgrade (plain GET, h2c, no Connection) go to the proxy endpoint too,
    stamped Ably-Test-Proto http, their bodies streamed."""
    flow = run(addon, make_flow(headers=headers))
    assert (flow.request.host, flow.request.port) == ("127.0.0.1", 8002)
    assert flow.request.headers[HEADER_TEST_HOST] == "realtime.example"
    assert flow.request.headers[HEADER_TEST_PROTO] == "http"
    assert flow.request.stream is True


def test_plain_https_is_stamped_https_and_responses_stream(addon: Redirector) -> None:
    flow = run(addon, make_flow(tls=True, port=443, headers=()))
    assert flow.request.headers[HEADER_TEST_PROTO] == "https"
    flow.response = tutils.tresp()
    addon.responseheaders(flow)
    assert flow.response.stream is True


@pytest.mark.parametrize(("port", "tls", "host", "proto"), [
    (80, False, "realtime.example", "ws"),
    (8080, False, "realtime.example:8080", "ws"),
    (443, True, "realtime.example", "wss"),
    (8443, True, "realtime.example:8443", "wss"),
    (443, False, "realtime.example:443", "ws"),
    (80, True, "realtime.example:80", "wss"),
])
def test_stamped_host_and_proto(addon: Redirector, port: int, tls: bool, host: str, proto: str) -> None:
    """Ably-Test-Host carries :port only when not the default of ws (80) / wss (443)."""
    flow = run(addon, make_flow(port=port, tls=tls))
    assert redirected(flow)
    assert flow.request.headers[HEADER_TEST_HOST] == host
    assert flow.request.headers[HEADER_TEST_PROTO] == proto


def test_path_and_query_kept(addon: Redirector) -> None:
    """The redirect changes only the destination; path and query stay verbatim."""
    assert run(addon, make_flow(path="/a/b?v=6&x=%2F")).request.path == "/a/b?v=6&x=%2F"


def test_client_test_headers_overwritten(addon: Redirector) -> None:
    """Ably-Test-* headers sent by the client are replaced, never passed on."""
    headers = UPGRADE + (("ably-test-host", "evil"), ("Ably-Test-Proto", "wss"), ("Ably-Test-X", "1"))
    flow = run(addon, make_flow(headers=headers))
    assert flow.request.headers.get_all(HEADER_TEST_HOST) == ["realtime.example"]
    assert flow.request.headers.get_all(HEADER_TEST_PROTO) == ["ws"]
    assert "Ably-Test-X" not in flow.request.headers


@pytest.mark.parametrize(("host", "port"), [
    ("127.0.0.1", 8002), ("localhost", 8002), ("::1", 8002), ("127.0.0.1", 8001), ("LOCALHOST", 8001),
])
def test_appserver_traffic_untouched(host: str, port: int) -> None:
    """Upgrades addressed to the proxy endpoint or control API (any loopback name) are left alone."""
    redirector = Redirector()
    with taddons.context(redirector) as tctx:
        tctx.configure(redirector, appserver_control="ws://localhost:8001/")
        flow = run(redirector, make_flow(host=host, port=port,
                                         headers=UPGRADE + (("Ably-Test-Host", "kept"),)))
    assert (flow.request.host, flow.request.port) == (host, port)
    assert flow.request.headers[HEADER_TEST_HOST] == "kept"


def test_other_loopback_port_is_redirected(addon: Redirector) -> None:
    """A loopback upgrade to any port but the app server's is redirected (local test servers)."""
    flow = run(addon, make_flow(host="127.0.0.1", port=9000))
    assert redirected(flow)
    assert flow.request.headers[HEADER_TEST_HOST] == "127.0.0.1:9000"


def test_ipv6_proxy_endpoint() -> None:
    """appserver_proxy accepts a bracketed IPv6 host."""
    redirector = Redirector()
    with taddons.context(redirector) as tctx:
        tctx.configure(redirector, appserver_proxy="[::1]:9002")
        flow = run(redirector, make_flow())
    assert (flow.request.host, flow.request.port) == ("::1", 9002)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("appserver_proxy", "127.0.0.1", "appserver_proxy"),
    ("appserver_proxy", "127.0.0.1:notaport", "appserver_proxy"),
    ("appserver_proxy", "127.0.0.1:99999", "appserver_proxy"),
    ("appserver_proxy", "http://127.0.0.1:8002", "appserver_proxy"),
    ("appserver_control", "http://127.0.0.1:8001/", "appserver_control"),
    ("appserver_control", "ws://127.0.0.1:x/", "appserver_control"),
    ("appserver_control", "ws:///", "appserver_control"),
    ("ready_on", "sometimes", "ready_on"),
    ("canary_host", "", "canary_host"),
    ("canary_host", "a/b", "canary_host"),
])
def test_bad_options_rejected(option: str, value: str, message: str) -> None:
    """Malformed option values raise OptionsError naming the option."""
    redirector = Redirector()
    with taddons.context(redirector) as tctx:
        with pytest.raises(exceptions.OptionsError, match=message):
            tctx.configure(redirector, **{option: value})


def test_canary_answered_locally(addon: Redirector) -> None:
    """A plain-HTTP request to canary_host gets 204 from the addon and is never forwarded."""
    flow = run(addon, make_flow(host="127.0.0.1", port=1234, headers=(("Host", "interception-proxy-canary.invalid"),)))
    assert flow.response is not None and flow.response.status_code == 204


def test_canary_over_tls_not_answered(addon: Redirector) -> None:
    """The canary is a plain-HTTP probe: a TLS request to that name is not answered."""
    flow = run(addon, make_flow(host="interception-proxy-canary.invalid", tls=True, headers=()))
    assert flow.response is None


class ControlListener:
    """A loopback WebSocket server that records the frames it receives."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[str | bytes] = asyncio.Queue()

    async def handler(self, ws: websockets.asyncio.server.ServerConnection) -> None:
        async for frame in ws:
            await self.frames.put(frame)


@pytest.fixture
async def control() -> AsyncIterator[tuple[ControlListener, str]]:
    listener = ControlListener()
    async with websockets.asyncio.server.serve(listener.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield listener, f"ws://127.0.0.1:{port}/"


async def test_running_sends_ready(control: tuple[ControlListener, str]) -> None:
    """With ready_on=running, the running hook sends one bare mitmproxyReady notification."""
    listener, url = control
    redirector = Redirector()
    with taddons.context(redirector) as tctx:
        tctx.configure(redirector, appserver_control=url)
        redirector.running()
        frame = await asyncio.wait_for(listener.frames.get(), 5)
    assert json.loads(frame) == {"jsonrpc": "2.0", "method": METHOD_MITMPROXY_READY}


async def test_canary_sends_ready_once(control: tuple[ControlListener, str]) -> None:
    """With ready_on=canary, running is silent and the first canary request notifies, once."""
    listener, url = control
    redirector = Redirector()
    with taddons.context(redirector) as tctx:
        tctx.configure(redirector, appserver_control=url, ready_on="canary")
        redirector.running()
        canary = (("Host", "interception-proxy-canary.invalid"),)
        run(redirector, make_flow(headers=canary))
        run(redirector, make_flow(headers=canary))
        frame = await asyncio.wait_for(listener.frames.get(), 5)
        await asyncio.sleep(0.2)
    assert json.loads(frame)["method"] == METHOD_MITMPROXY_READY
    assert listener.frames.empty()


async def test_unreachable_control_logs_error(caplog: pytest.LogCaptureFixture) -> None:
    """An unreachable control API is logged at ERROR and does not crash the addon."""
    await notify_ready("ws://127.0.0.1:1/")
    assert any(r.levelname == "ERROR" and METHOD_MITMPROXY_READY in r.getMessage() for r in caplog.records)
