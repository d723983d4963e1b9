"""The per-session listeners of SPEC Part 6: regular-mode listeners added to and removed from the running
mitmproxy (its ``mode`` option updated in place: the other listeners, and every connection, go on), and
which session a flow belongs to (by the listener it came in on)."""

import asyncio
import logging
from typing import Any

from mitmproxy import ctx, http

logger = logging.getLogger(__name__)

SETTLE_TIMEOUT = 10.0
LISTEN_HOST = "127.0.0.1"


class SessionListeners:
    def __init__(self) -> None:
        #: Mode spec (``regular@127.0.0.1:PORT``) → session id, for the listeners we added.
        self.sessions: dict[str, str] = {}

    def session_of(self, flow: http.HTTPFlow) -> str | None:
        return self.sessions.get(flow.client_conn.proxy_mode.full_spec)

    async def update(self, params: dict[str, Any]) -> dict[str, Any]:
        """``{listeners: [{sessionID, port}]}``: exactly these session listeners from now on. Answers once the
        new ones accept and the removed ones no longer do."""
        listeners = params.get("listeners")
        if not isinstance(listeners, list) or not all(
            isinstance(item, dict) and isinstance(item.get("sessionID"), str)
            and isinstance(item.get("port"), int) and not isinstance(item.get("port"), bool) for item in listeners
        ):  # fmt: skip
            raise ValueError("listeners must be a list of {sessionID: string, port: integer}")
        wanted = {f"regular@{LISTEN_HOST}:{item['port']}": item["sessionID"] for item in listeners}
        base = [mode for mode in ctx.options.mode if mode not in self.sessions]
        self.sessions = {**self.sessions, **wanted}  # stamp new listeners' flows from their first one
        ctx.options.update(mode=base + list(wanted))  # type: ignore[no-untyped-call]
        try:
            await self._settled(set(wanted))
        finally:
            self.sessions = wanted
        logger.info("session listeners: %s", ", ".join(f"{s} on {m}" for m, s in wanted.items()) or "none")
        return {}

    async def _settled(self, wanted: set[str]) -> None:
        proxyserver: Any = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT
        while True:
            running = {inst.mode.full_spec: inst for inst in proxyserver.servers}
            for spec in wanted:
                failure = getattr(running.get(spec), "last_exception", None)
                if failure is not None:
                    raise RuntimeError(f"cannot listen for a session ({spec}): {failure}")
            stale = [spec for spec in self.sessions if spec not in wanted and spec in running]
            if not stale and all(spec in running and running[spec].is_running for spec in wanted) \
                    and not proxyserver.servers.is_updating:  # fmt: skip
                return
            if loop.time() > deadline:
                raise TimeoutError(f"mitmproxy did not settle its listeners within {SETTLE_TIMEOUT:g}s")
            await asyncio.sleep(0.02)
