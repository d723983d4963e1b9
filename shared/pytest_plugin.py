"""pytest plugin: fixtures that connect a test suite to the interception proxy.

Enabled automatically once this project is installed with its ``pytest`` extra
(entry point ``pytest11``). Options: ``--interception-url`` (the control API,
default ws://127.0.0.1:8001/, or $INTERCEPTION_CONTROL_URL) and
``--interception-mode``: ``proxy``, ``local`` (captures ``--interception-pid``,
default this process) or ``none`` (direct mode: the app server starts no
mitmproxy; the SDK is pointed at its proxy endpoint). Whatever the mode, the
fixture makes this connection the active test suite, or fails the test
saying why: a suite never runs believing it intercepts when it does not.

``--interception-session=per-test`` gives every test a session of its own
(SPEC Part 6) instead of the classic single suite, so that tests can run in
parallel (pytest-xdist) and a client lingering from one test never reaches
the next: the ``interception_session`` fixture says where this test's SDK goes
(``proxy_port`` in direct mode, relaying to ``--interception-upstream`` or the
app server's --default-upstream; ``proxy_url`` in proxy mode; this process,
or ``--interception-pid``, captured in local mode).

The proxy's trace of a failed test (SPEC Part 5) is written next to the
test's report, as JSON Lines (``python -m appserver.trace FILE`` shows it)
and as HAR, and the failure names the files: ``--interception-trace-dir``
(default: ``interception-traces`` under pytest's own temporary directory);
``--interception-trace=all`` writes them for passing tests too, ``none``
never.

    async def test_drops_ack(interception):
        interception.transform_server_message = lambda m: None if m.action == Action.ACK else m.message
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, AsyncIterator, Generator

import aiohttp
import pytest
import pytest_asyncio

from shared.client import InterceptionClient, InterceptionContext, ProxyCallError
from shared.client_methods import SessionInfo

MODES = ("proxy", "local", "none")
TRACE_POLICIES = ("failed", "all", "none")
SESSION_POLICIES = ("none", "per-test")
SESSION_MODES = {"proxy": "proxy", "local": "local", "none": "direct"}
SESSION = pytest.StashKey[SessionInfo]()
#: Where this test's trace goes (set up by the fixture), and whether it is to be written (set by the report).
TRACE_PATH = pytest.StashKey[Path]()
WRITE_TRACE = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("interception", "interception proxy")
    group.addoption(
        "--interception-url",
        default=os.environ.get("INTERCEPTION_CONTROL_URL", "ws://127.0.0.1:8001/"),
        help="the proxy's control API (default %(default)s)",
    )
    group.addoption(
        "--interception-mode",
        choices=MODES,
        default="proxy",
        help="startInterception mode: proxy, local (capture --interception-pid) or none (direct mode, no "
        "mitmproxy) (default %(default)s)",
    )
    group.addoption("--interception-pid", type=int, default=None, help="process to capture in local mode")
    group.addoption("--interception-session", choices=SESSION_POLICIES, default="none",
                    help="per-test: every test gets a session of its own (parallel tests, no lingering clients); "
                         "none (default): the classic single active suite")  # fmt: skip
    group.addoption("--interception-upstream", default=None, metavar="URL",
                    help="per-test sessions in direct mode (--interception-mode none): where they relay to "
                         "(default: the app server's --default-upstream)")  # fmt: skip
    group.addoption("--interception-proxy-endpoint", metavar="HOST:PORT",
                    default=os.environ.get("INTERCEPTION_PROXY_ENDPOINT", "127.0.0.1:8002"),
                    help="the app server's proxy endpoint, where an SDK goes in direct mode: the proxy_endpoint "
                         "fixture (default %(default)s; a per-test direct session's own port instead)")  # fmt: skip
    group.addoption("--interception-encoding", choices=("json", "msgpack"), default="json",
                    help="the control channel: JSON text frames (default) or msgpack binary frames, binary data as "
                         "bytes (SPEC Part 10)")  # fmt: skip
    group.addoption("--interception-window", type=int, default=1, metavar="N",
                    help="messages per connection and direction with the test's callbacks at once, still delivered "
                         "in order (SPEC Part 10; default 1)")  # fmt: skip
    group.addoption("--interception-trace", choices=TRACE_POLICIES, default="failed",
                    help="write the proxy's trace of each failed test (default), of every test (all), or never")
    group.addoption("--interception-trace-dir", default=None, metavar="DIR",
                    help="where traces are written (default: interception-traces under pytest's temporary "
                         "directory)")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    """The fixtures are async: pytest-asyncio's auto mode, so that ``async def`` tests and fixtures run as
    written, with no markers — unless the command line gives a mode (``--asyncio-mode=strict`` keeps strict)
    or the ini file one other than pytest-asyncio's default (strict, which cannot be told from unset)."""
    if config.getoption("asyncio_mode", None) is None and config.getini("asyncio_mode") == "strict":
        config.option.asyncio_mode = "auto"


def _trace_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = request.config.getoption("--interception-trace-dir")
    directory = Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "interception-traces"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")[:200]
    return directory / f"{name}.jsonl"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A test whose trace is to be written: the report says where (the fixture writes it at teardown)."""
    outcome = yield
    report = outcome.get_result()
    path = item.stash.get(TRACE_PATH, None)
    if path is None or report.when != "call":
        return
    policy = item.config.getoption("--interception-trace")
    if policy == "all" or policy == "failed" and report.failed:
        item.stash[WRITE_TRACE] = True
        report.sections.append(("interception trace", f"the proxy's trace of this test: {path} (and "
                                f"{path.with_suffix('.har')}); read it with: python -m appserver.trace {path}"))


async def connect(url: str, encoding: str = "json") -> InterceptionClient:
    try:
        return await InterceptionClient.connect(url, encoding=encoding)
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        pytest.fail(f"interception proxy: cannot reach the control API at {url}: {exc!r} "
                    "(is the app server running? `make run-proxy`, or `make run ARGS=...` for direct mode)",
                    pytrace=False)  # fmt: skip


async def start(url: str, mode: str, pid: int | None, encoding: str = "json", window: int = 1) -> InterceptionClient:
    """A control connection that is the active test suite in that mode; pytest.fail saying why if not."""
    client = await connect(url, encoding)
    params: dict[str, Any] = {"mode": mode, **({"pid": pid} if pid is not None else {}),
                              **({"window": window} if window != 1 else {})}  # fmt: skip
    try:
        await client.start_interception(mode, pid, window=window)
    except ProxyCallError as exc:
        await client.close()
        pytest.fail(f"interception proxy: startInterception {params} failed at {url}: {exc.proxy_message} "
                    f"(code {exc.code})", pytrace=False)  # fmt: skip
    except BaseException:
        await client.close()
        raise
    return client


async def start_session(url: str, mode: str, pid: int | None, upstream: str | None, encoding: str = "json",
                        window: int = 1) -> tuple[InterceptionClient, SessionInfo]:  # fmt: skip
    """A control connection that opened a session of its own; pytest.fail saying why if it could not."""
    client = await connect(url, encoding)
    try:
        session = await client.open_session(SESSION_MODES[mode], upstream=upstream, pid=pid,
                                             window=window if window != 1 else None)  # fmt: skip
    except ProxyCallError as exc:
        await client.close()
        pytest.fail(f"interception proxy: openSession ({SESSION_MODES[mode]} mode) failed at {url}: "
                    f"{exc.proxy_message} (code {exc.code})", pytrace=False)  # fmt: skip
    except BaseException:
        await client.close()
        raise
    return client, session


@pytest_asyncio.fixture
async def interception_client(request: pytest.FixtureRequest,
                              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InterceptionClient]:
    """A control connection that has called startInterception: the active test suite for this test."""
    config = request.config
    mode = config.getoption("--interception-mode")
    pid = (config.getoption("--interception-pid") or os.getpid()) if mode == "local" else None
    url = config.getoption("--interception-url")
    encoding, window = config.getoption("--interception-encoding"), config.getoption("--interception-window")
    if config.getoption("--interception-session") == "per-test":
        client, session = await start_session(url, mode, pid, config.getoption("--interception-upstream"),
                                              encoding, window)  # fmt: skip
        request.node.stash[SESSION] = session
    else:
        client = await start(url, mode, pid, encoding, window)
    if config.getoption("--interception-trace") != "none":
        request.node.stash[TRACE_PATH] = _trace_path(request, tmp_path_factory)
    try:
        yield client
        if request.node.stash.get(WRITE_TRACE, False):
            await _write_trace(client, request.node.stash[TRACE_PATH])
    finally:
        await client.close()


async def _write_trace(client: InterceptionClient, path: Path) -> None:
    """The trace as JSON Lines at path, and as HAR beside it (before the suite goes: its trace goes with it)."""
    try:
        jsonl = await client.export_trace("jsonl")
        har = await client.export_trace("har")
    except (ProxyCallError, ConnectionError, TimeoutError) as exc:
        pytest.fail(f"interception proxy: the trace could not be fetched for {path}: {exc}", pytrace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(jsonl, encoding="utf-8")
    path.with_suffix(".har").write_text(har, encoding="utf-8")


@pytest.fixture
def interception_session(request: pytest.FixtureRequest, interception_client: InterceptionClient) -> SessionInfo:
    """This test's session (with --interception-session=per-test): where its SDK goes."""
    session: SessionInfo | None = request.node.stash.get(SESSION, None)
    if session is None:
        pytest.fail("interception_session needs --interception-session=per-test (this run uses the classic "
                    "single suite)", pytrace=False)  # fmt: skip
    return session


@pytest.fixture
def proxy_endpoint(request: pytest.FixtureRequest) -> str:
    """Where an SDK in direct mode goes, as "host:port": this test's session port with
    --interception-session=per-test in direct mode, else --interception-proxy-endpoint."""
    config = request.config
    if config.getoption("--interception-session") == "per-test" and config.getoption("--interception-mode") == "none":
        session: SessionInfo = request.getfixturevalue("interception_session")
        return f"127.0.0.1:{session.proxy_port}"
    return str(config.getoption("--interception-proxy-endpoint"))


@pytest_asyncio.fixture
async def interception(interception_client: InterceptionClient) -> AsyncIterator[InterceptionContext]:
    """This test's interception context: set its callbacks, await its connection events."""
    async with interception_client.intercept() as context:
        yield context
