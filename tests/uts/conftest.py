"""An app server with uts-proxy's API (--uts-port), and a client for that API as ably-js's helper uses it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from appserver.app import AppServer
from tests.conftest import make_config, running_app_server


class UtsClient:
    """uts-proxy's REST API: each call returns (status, parsed JSON body)."""

    def __init__(self, http: aiohttp.ClientSession, port: int) -> None:
        self.http = http
        self.base = f"http://localhost:{port}"

    async def call(self, method: str, path: str, body: Any = None, raw: bytes | str | None = None,
                   ) -> tuple[int, Any]:  # fmt: skip
        kwargs: dict[str, Any] = {}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.http.request(method, self.base + path, **kwargs) as response:
            text = await response.text()
            try:
                return response.status, (await response.json(content_type=None)) if text else None
            except ValueError:
                return response.status, text

    async def create(self, upstream_host: str, **fields: Any) -> dict[str, Any]:
        target = fields.pop("target", {"realtimeHost": upstream_host, "restHost": upstream_host, "insecure": True})
        status, body = await self.call("POST", "/sessions", {"target": target, **fields})
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    async def rules(self, session_id: str, rules: list[dict[str, Any]], position: str = "append") -> int:
        status, body = await self.call("POST", f"/sessions/{session_id}/rules", {"rules": rules, "position": position})
        assert status == 200, body
        return body["ruleCount"]  # type: ignore[no-any-return]

    async def action(self, session_id: str, **action: Any) -> tuple[int, Any]:
        return await self.call("POST", f"/sessions/{session_id}/actions", action)

    async def log(self, session_id: str) -> list[dict[str, Any]]:
        status, body = await self.call("GET", f"/sessions/{session_id}/log")
        assert status == 200, body
        return body["events"]  # type: ignore[no-any-return]

    async def delete(self, session_id: str) -> list[dict[str, Any]]:
        status, body = await self.call("DELETE", f"/sessions/{session_id}")
        assert status == 200, body
        return body["events"]  # type: ignore[no-any-return]


@pytest.fixture
async def uts_server(no_leaks: None) -> AsyncIterator[AppServer]:
    async with running_app_server(make_config(uts_port=0)) as server:
        yield server


@pytest.fixture
async def uts(uts_server: AppServer, http: aiohttp.ClientSession) -> UtsClient:
    return UtsClient(http, uts_server.uts_port)
