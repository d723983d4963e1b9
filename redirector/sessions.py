"""The per-session capture of SPEC Part 6, changed while mitmproxy runs (its ``mode`` option updated in place:
the other listeners, and every connection, go on), and which session a flow belongs to.

* proxy-mode sessions: a regular-mode listener each (``regular@127.0.0.1:PORT``); a flow is the session's
  whose listener it came in on;
* local-mode sessions: their pids join the one local redirector's spec (mitmproxy runs one per process);
  a flow is the session's whose process holds the flow's socket (found in /proc: the socket from the flow's
  client port to its destination).
"""

import asyncio
import logging
from typing import Any

from mitmproxy import ctx, http

from shared.procnet import owner_of_connection

logger = logging.getLogger(__name__)

SETTLE_TIMEOUT = 10.0
LISTEN_HOST = "127.0.0.1"


def _check(listeners: Any, local: Any) -> None:
    if not isinstance(listeners, list) or not all(
        isinstance(item, dict) and isinstance(item.get("sessionID"), str)
        and isinstance(item.get("port"), int) and not isinstance(item.get("port"), bool) for item in listeners
    ):  # fmt: skip
        raise ValueError("listeners must be a list of {sessionID: string, port: integer}")
    if not isinstance(local, list) or not all(
        isinstance(item, dict) and isinstance(item.get("sessionID"), str) and isinstance(item.get("pids"), list)
        and all(isinstance(p, int) and not isinstance(p, bool) for p in item["pids"]) for item in local
    ):  # fmt: skip
        raise ValueError("local must be a list of {sessionID: string, pids: [integer]}")


class ListenerStamps:
    def __init__(self) -> None:
        #: Mode spec (``regular@127.0.0.1:PORT``) → session id, for the listeners we added.
        self.sessions: dict[str, str] = {}
        #: Captured pid → session id (local-mode sessions).
        self.pids: dict[int, str] = {}
        self._base_local: str | None = None  # the local mode mitmdump was started with, if any
        self._local_spec: str | None = None  # the local mode as we last set it

    def session_of(self, flow: http.HTTPFlow) -> str | None:
        spec = flow.client_conn.proxy_mode.full_spec
        if spec.startswith("local") and self.pids:
            peer, dest = flow.client_conn.peername, flow.client_conn.sockname
            if peer and dest:
                owner = owner_of_connection(peer[1], (str(dest[0]), int(dest[1])), self.pids)
                return self.pids.get(owner) if owner is not None else None
            return None
        return self.sessions.get(spec)

    async def update(self, params: dict[str, Any]) -> dict[str, Any]:
        """``{listeners: [{sessionID, port}], local: [{sessionID, pids}]}``: exactly these sessions from now
        on. Answers once the new listeners accept and the removed ones no longer do."""
        listeners, local = params.get("listeners", []), params.get("local", [])
        _check(listeners, local)
        exclude = {str(pid) for pid in params.get("exclude", []) if isinstance(pid, int)}
        wanted = {f"regular@{LISTEN_HOST}:{item['port']}": item["sessionID"] for item in listeners}
        pids = {pid: item["sessionID"] for item in local for pid in item["pids"]}
        modes = [mode for mode in ctx.options.mode if mode not in self.sessions and mode != self._local_spec]
        if self._local_spec is None:  # first time: remember the local mode mitmdump was started with
            self._base_local = next((mode for mode in modes if mode.startswith("local")), None)
        modes = [mode for mode in modes if mode != self._base_local]
        local_spec = self._local_mode(pids, exclude)
        self.sessions = {**self.sessions, **wanted}  # stamp new listeners' flows from their first one
        self.pids = {**self.pids, **pids}
        ctx.options.update(mode=modes + list(wanted) + ([local_spec] if local_spec else []))  # type: ignore[no-untyped-call]
        try:
            await self._settled(set(wanted) | ({local_spec} if local_spec else set()))
        finally:
            self.sessions, self.pids, self._local_spec = wanted, pids, local_spec
        logger.info("session listeners: %s; captured for sessions: %s",
                    ", ".join(f"{s} on {m}" for m, s in wanted.items()) or "none",
                    ", ".join(f"{p} ({s})" for p, s in pids.items()) or "none")  # fmt: skip
        return {}

    def _local_mode(self, pids: dict[int, str], exclude: set[str]) -> str | None:
        """The one local mode: the pids mitmdump was started with (but those of ended sessions), and every local
        session's."""
        started = self._base_local.partition(":")[2].split(",") if self._base_local else []
        every = [p for p in started if p and (p not in exclude or int(p) in pids)]
        every += [str(p) for p in pids if str(p) not in every]
        return f"local:{','.join(every)}" if every else None

    async def _settled(self, wanted: set[str]) -> None:
        proxyserver: Any = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT
        ours = set(self.sessions) | ({self._local_spec} if self._local_spec else set())
        while True:
            running = {inst.mode.full_spec: inst for inst in proxyserver.servers}
            for spec in wanted:
                failure = getattr(running.get(spec), "last_exception", None)
                if failure is not None:
                    raise RuntimeError(f"cannot capture for a session ({spec}): {failure}")
            stale = [spec for spec in ours if spec not in wanted and spec in running]
            if not stale and all(spec in running and running[spec].is_running for spec in wanted) \
                    and not proxyserver.servers.is_updating:  # fmt: skip
                return
            if loop.time() > deadline:
                raise TimeoutError(f"mitmproxy did not settle its listeners within {SETTLE_TIMEOUT:g}s")
            await asyncio.sleep(0.02)
