"""Fixtures of the capture tests: a whole stack whose app server launches a real mitmdump, a suite
on it, and a TLS upstream with a self-signed certificate (loopback only)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from appserver.app import AppServer
from tests.conftest import intercepting_suite_connection, launching_config, running_app_server
from tests.peers import Suite, UpstreamServer


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    return tmp_path / "mitmproxy-conf"


@pytest.fixture
async def stack(no_leaks: None, confdir: Path, upstream_ca: tuple[Path, Path]) -> AsyncIterator[AppServer]:
    async with running_app_server(launching_config(confdir, upstream_ca=str(upstream_ca[0]))) as server:
        yield server


@pytest.fixture
async def intercepting_suite(stack: AppServer, http: aiohttp.ClientSession) -> AsyncIterator[Suite]:
    async with intercepting_suite_connection(http, stack.control_port, timeout=60) as suite:
        yield suite


@pytest.fixture(scope="module")
def upstream_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key), made with openssl."""
    directory = tmp_path_factory.mktemp("upstream-tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_upstream(no_leaks: None, upstream_ca: tuple[Path, Path]) -> AsyncIterator[UpstreamServer]:
    server = UpstreamServer()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*upstream_ca)
    server.ssl_context = context
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
