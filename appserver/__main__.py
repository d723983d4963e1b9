"""`python -m appserver`: run the app server in the foreground until Ctrl-C or SIGTERM.

`python -m appserver doctor …`: check that interception works here (appserver/doctor).
"""

from __future__ import annotations

import asyncio
import os
import logging
import signal
import sys
from typing import Callable

from appserver.app import AppServer
from appserver.capture.launcher import LaunchError, MitmproxyLauncher
from appserver.capture.spec import CaptureSpec, ProxyMode
from appserver.capture.transparent import CHAIN_PREFIX, target_gid
from appserver.config import Config, from_args

log = logging.getLogger("appserver")


async def serve(config: Config) -> None:
    server = AppServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        if config.start_mitmproxy:
            await start_mitmproxy(server, CaptureSpec.parse(config.start_mitmproxy))
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()


async def start_mitmproxy(server: AppServer, spec: CaptureSpec) -> None:
    """Start mitmproxy now, and tell the user how to point an SDK at it and trust its CA."""
    launcher = server.launcher
    assert launcher is not None
    confdir = server.config.mitmproxy_confdir or os.path.expanduser("~/.mitmproxy")
    ca = os.path.join(confdir, "mitmproxy-ca-cert.pem")
    address = f"{server.config.mitmproxy_host}:{server.config.mitmproxy_port}"
    if spec.mode is ProxyMode.TRANSPARENT:
        uid = spec.uid
        assert uid is not None and isinstance(launcher, MitmproxyLauncher), "transparent mode needs mitmdump"
        await launcher.ensure(ProxyMode.TRANSPARENT, uid=uid)
        lines = [
            f"mitmproxy is intercepting every TCP connection of uid {uid}, by iptables rules "
            f"(chain {CHAIN_PREFIX}{uid} in the nat table; removed when this stops)",
            f"  run the SDK's tests as that user: setpriv --reuid={uid} --regid={target_gid(uid)} --clear-groups "
            "<command> (or su, runuser, sudo -u)",
            f"  it also listens as a regular proxy at http://{address}",
            f"  if the app server is killed without cleaning up: python -m appserver.transparent remove {uid}",
            "  that user must be able to read the CA certificate below (not in root's home: copy it, or use "
            "--mitmproxy-confdir with a directory others can read)",
        ]
    else:
        await launcher.ensure(spec.mode, spec.pid)
        lines = [f"mitmproxy is intercepting ({f'process {spec.pid}' if spec.pid else 'proxy at http://' + address})"]
        lines += runtime_hints(spec, address, f"{server.config.proxy_host}:{server.proxy_port}")
    lines += [
        f"  mitmproxy's CA certificate: {ca}",
        f"  trust it in Node: NODE_EXTRA_CA_CERTS={ca}",
        "  trust it in Chromium: import it into the NSS store (certutil), or run tests with --ignore-certificate-errors",
        f"  test suites connect to the control API at ws://{server.config.control_host}:{server.control_port}/",
    ]
    for line in lines:
        log.info("%s", line)


def runtime_hints(spec: CaptureSpec, mitmproxy: str, proxy_endpoint: str) -> list[str]:
    """How to send each kind of SDK through this mode: what works, per runtime (a hint that does not work
    would leave an SDK connecting directly and a suite seeing nothing)."""
    if spec.mode is ProxyMode.LOCAL:
        return [f"  process {spec.pid} is captured as it is: nothing to configure in it (Node, Python, a browser)"]
    host, _, port = proxy_endpoint.rpartition(":")
    return [
        "  how to send an SDK through it:",
        f"  - ably-js in Node has no proxy option for realtime (it ignores HTTPS_PROXY): capture it with "
        f"`make run-local PID=<its pid>`, or use direct mode — start the app server with --default-upstream "
        f"<the server's URL> and give ably-js {{endpoint: '{host}', port: {port}, tls: false, fallbackHosts: []}}",
        f"  - ably-js in Chromium: --proxy-server=http://{mitmproxy} --proxy-bypass-list=\"<-loopback>\" "
        "(Chromium bypasses proxies for loopback without it)",
        f"  - clients that honour proxy variables (ably-python, curl): HTTPS_PROXY=http://{mitmproxy} "
        f"HTTP_PROXY=http://{mitmproxy}",
    ]


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed: a faster event loop under the same asyncio API."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["doctor"]:
        from appserver.doctor import main as doctor  # a command of its own, not the server

        return doctor(args[1:])
    config = from_args(argv)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        asyncio.run(serve(config), loop_factory=_fast_loop_factory())
    except OSError as exc:
        log.error("could not start: %s", exc)
        return 1
    except LaunchError as exc:
        log.error("could not start mitmproxy: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
