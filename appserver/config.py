"""The app server's configuration: one frozen object, built and checked once."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
import ssl
from dataclasses import dataclass

from yarl import URL

from appserver.capture.spec import CaptureSpec
from shared.constants import DEFAULT_CONTROL_PORT, DEFAULT_HOST, DEFAULT_MITMPROXY_PORT, DEFAULT_PROXY_PORT

log = logging.getLogger(__name__)

#: Pages served from this machine; a port is any port.
DEFAULT_ORIGINS = tuple(
    f"{scheme}://{host}{port}"
    for scheme in ("http", "https")
    for host in ("localhost", "127.0.0.1", "[::1]")
    for port in ("", ":*")
)


@dataclass(frozen=True)
class Config:
    control_host: str = DEFAULT_HOST
    control_port: int = DEFAULT_CONTROL_PORT
    proxy_host: str = DEFAULT_HOST
    proxy_port: int = DEFAULT_PROXY_PORT
    mitmproxy_host: str = DEFAULT_HOST
    mitmproxy_port: int = DEFAULT_MITMPROXY_PORT
    launch_mitmproxy: bool = True
    mitmproxy_confdir: str | None = None
    start_mitmproxy: str | None = None  # "proxy" or "local:PID": started with the app server
    default_upstream: URL | None = None
    upstream_ca: str | None = None
    upstream_insecure: bool = False
    transform_timeout: float = 30.0
    #: Seconds after which an active suite that has seen no connection gets a WARNING (0: never).
    idle_warning: float = 30.0
    close_timeout: float = 10.0
    connect_timeout: float = 10.0
    mitmproxy_ready_timeout: float = 30.0
    max_queued_messages: int = 10_000
    max_control_message_size: int = 16 * 1024 * 1024
    max_http_body: int = 16 * 1024 * 1024
    #: The trace (SPEC Part 5): on unless --no-trace; at most trace_limit events, trace_data_limit bytes each.
    trace: bool = True
    trace_limit: int = 10_000
    trace_data_limit: int = 1024
    allowed_origins: tuple[str, ...] = DEFAULT_ORIGINS
    log_level: str = "INFO"
    #: --route: (host glob, upstream) pairs, first match wins, for every WebSocket and HTTP request.
    routes: tuple[tuple[str, URL], ...] = ()
    #: A control API or proxy endpoint on 127.0.0.1 also listens on [::1] (same port), so that
    #: "localhost" reaches it whichever loopback family the client's resolver lists first.
    ipv6_loopback: bool = True
    #: --uts-port: uts-proxy's REST control API (SPEC Part 8) on the control host, off when None.
    uts_port: int | None = None

    def origin_allowed(self, origin: str) -> bool:
        """Whether a control connection's Origin matches an allowed pattern (``*`` matches a port)."""
        return any(_glob(pattern).fullmatch(origin.lower()) for pattern in self.allowed_origins)

    def upstream_ssl(self) -> ssl.SSLContext | bool:
        """How upstream wss:// certificates are checked: system CAs, plus --upstream-ca, or not at all."""
        if self.upstream_insecure:
            return False
        context = ssl.create_default_context()
        if self.upstream_ca:
            context.load_verify_locations(self.upstream_ca)
        return context

    def non_loopback_binds(self) -> list[str]:
        return [
            f"{name} {host}"
            for name, host in (("control API", self.control_host), ("proxy endpoint", self.proxy_host),
                               ("mitmproxy", self.mitmproxy_host))
            if not _is_loopback(host)
        ]  # fmt: skip


def _glob(pattern: str) -> re.Pattern[str]:
    """``*`` matches within one URL part; everything else literally (so ``[::1]`` is not a class)."""
    return re.compile("[^/]*".join(re.escape(part) for part in pattern.lower().split("*")))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text}")
    return value


def _upstream(text: str) -> URL:
    url = URL(text)
    if url.scheme not in ("ws", "wss", "http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"must be a ws://, wss://, http:// or https:// URL with a host, got {text!r}")
    return url


def _route(text: str) -> tuple[str, URL]:
    pattern, sep, target = text.partition("=")
    if not sep or not pattern.strip():
        raise argparse.ArgumentTypeError(f"must be HOST_GLOB=URL (e.g. '*.ably.net=http://127.0.0.1:9000'), got {text!r}")
    return pattern.strip().lower(), _upstream(target.strip())


def _start_mode(text: str) -> str:
    try:
        CaptureSpec.parse(text)  # checked here; parsed again where it is used (__main__)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m appserver",
        description="The interception proxy's app server: control API, proxy endpoint, mitmproxy launcher.",
    )
    d = Config()
    p.add_argument("--control-host", default=d.control_host, help="control API bind address (default %(default)s)")
    p.add_argument("--control-port", type=_port, default=d.control_port, help="control API port (default %(default)s)")
    p.add_argument("--proxy-host", default=d.proxy_host, help="proxy endpoint bind address (default %(default)s)")
    p.add_argument("--proxy-port", type=_port, default=d.proxy_port, help="proxy endpoint port (default %(default)s)")
    p.add_argument("--mitmproxy-host", default=d.mitmproxy_host, help="mitmproxy listen address (default %(default)s)")
    p.add_argument("--mitmproxy-port", type=_port, default=d.mitmproxy_port, help="mitmproxy port (default %(default)s)")
    p.add_argument("--mitmproxy-confdir", metavar="DIR",
                   help="mitmproxy's configuration directory, where its CA lives (default ~/.mitmproxy)")
    p.add_argument("--start-mitmproxy", metavar="MODE", type=_start_mode,
                   help="start mitmproxy with the app server: 'proxy', or 'local:PID' (what make run-proxy and "
                        "make run-local do); a suite's startInterception in that mode then starts nothing new")
    p.add_argument("--no-mitmproxy", action="store_true",
                   help="never start mitmproxy: startInterception only marks the active suite "
                        "(for direct mode, or when mitmproxy is run by other means)")  # fmt: skip
    p.add_argument("--default-upstream", type=_upstream, metavar="URL",
                   help="direct mode: upgrades without Ably-Test-* headers, and plain HTTP, go to this upstream")
    p.add_argument("--route", action="append", type=_route, default=None, metavar="HOST_GLOB=URL",
                   help="send every WebSocket and HTTP request for a matching host (a glob, e.g. '*.ably.net') to "
                        "this upstream instead (ws/http or wss/https by the URL's scheme); repeatable, first match "
                        "wins: an SDK keeps its default and fallback hosts and reaches a local server")  # fmt: skip
    p.add_argument("--upstream-ca", metavar="FILE", help="also trust this CA file for wss:// upstreams")
    p.add_argument("--upstream-insecure", action="store_true", help="do not verify wss:// upstream certificates")
    p.add_argument("--transform-timeout", type=_positive, default=d.transform_timeout, metavar="SECONDS",
                   help="how long a message waits for the suite's answer before passing on unchanged "
                        "(default %(default)s)")  # fmt: skip
    p.add_argument("--uts-port", type=_port, default=None, metavar="PORT",
                   help="also serve uts-proxy's REST control API on this port (its default is 9100), over our "
                        "sessions, rules and trace (docs/uts-proxy.md; default: off)")  # fmt: skip
    p.add_argument("--idle-warning", type=float, default=d.idle_warning, metavar="SECONDS",
                   help="warn when an active suite has seen no connection this long: its SDK is probably not "
                        "going through the proxy (default %(default)s; 0: never)")  # fmt: skip
    p.add_argument("--close-timeout", type=_positive, default=d.close_timeout, metavar="SECONDS",
                   help="how long a peer has to answer a close frame (default %(default)s)")
    p.add_argument("--connect-timeout", type=_positive, default=d.connect_timeout, metavar="SECONDS",
                   help="upstream connect and handshake timeout (default %(default)s)")
    p.add_argument("--mitmproxy-ready-timeout", type=_positive, default=d.mitmproxy_ready_timeout, metavar="SECONDS",
                   help="how long startInterception waits for mitmproxy (default %(default)s)")
    p.add_argument("--max-queued-messages", type=int, default=d.max_queued_messages, metavar="N",
                   help="per connection and direction; beyond it the proxy stops reading that peer until the "
                        "suite catches up (default %(default)s)")  # fmt: skip
    p.add_argument("--max-control-message-size", type=int, default=d.max_control_message_size, metavar="BYTES",
                   help="largest control-API frame; a larger one closes that control connection with 1009 "
                        "(default %(default)s)")  # fmt: skip
    p.add_argument("--max-http-body", type=int, default=d.max_http_body, metavar="BYTES",
                   help="largest HTTP request body an http rule may look into; a larger one streams and the rule "
                        "sees no body (default %(default)s)")  # fmt: skip
    p.add_argument("--trace-limit", type=_at_least_one, default=d.trace_limit, metavar="EVENTS",
                   help="events the active suite's trace keeps (getTrace, exportTrace); the oldest go first, "
                        "counted (default %(default)s)")  # fmt: skip
    p.add_argument("--trace-data-limit", type=_not_negative, default=d.trace_data_limit, metavar="BYTES",
                   help="bytes of a frame's or body's data the trace keeps (default %(default)s)")
    p.add_argument("--no-trace", action="store_true", help="record no trace (getTrace then returns nothing)")
    p.add_argument("--allow-origin", action="append", default=None, metavar="PATTERN",
                   help="allow control connections from this browser Origin (glob, e.g. 'http://example.test:*'); "
                        "repeatable; connections without an Origin header are always allowed "
                        "(default: localhost, 127.0.0.1 and [::1] on any port)")  # fmt: skip
    p.add_argument("--no-ipv6-loopback", action="store_true",
                   help="a control API or proxy endpoint on 127.0.0.1 listens there only (by default it also "
                        "listens on [::1], so that localhost works whichever family a client tries first)")
    p.add_argument("--log-level", default=d.log_level, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def from_args(argv: list[str] | None = None) -> Config:
    args = parser().parse_args(argv)
    if args.start_mitmproxy and args.no_mitmproxy:
        parser().error("--start-mitmproxy and --no-mitmproxy contradict each other")
    if args.upstream_ca:
        try:
            ssl.create_default_context().load_verify_locations(args.upstream_ca)
        except (OSError, ssl.SSLError) as exc:
            parser().error(f"--upstream-ca {args.upstream_ca}: {exc}")
    return Config(
        control_host=args.control_host,
        control_port=args.control_port,
        proxy_host=args.proxy_host,
        proxy_port=args.proxy_port,
        mitmproxy_host=args.mitmproxy_host,
        mitmproxy_port=args.mitmproxy_port,
        launch_mitmproxy=not args.no_mitmproxy,
        mitmproxy_confdir=args.mitmproxy_confdir,
        start_mitmproxy=args.start_mitmproxy,
        default_upstream=args.default_upstream,
        upstream_ca=args.upstream_ca,
        upstream_insecure=args.upstream_insecure,
        transform_timeout=args.transform_timeout,
        idle_warning=max(args.idle_warning, 0.0),
        uts_port=args.uts_port,
        close_timeout=args.close_timeout,
        connect_timeout=args.connect_timeout,
        mitmproxy_ready_timeout=args.mitmproxy_ready_timeout,
        max_queued_messages=args.max_queued_messages,
        max_control_message_size=args.max_control_message_size,
        max_http_body=args.max_http_body,
        trace=not args.no_trace,
        trace_limit=args.trace_limit,
        trace_data_limit=args.trace_data_limit,
        allowed_origins=DEFAULT_ORIGINS + tuple(args.allow_origin or ()),
        log_level=args.log_level,
        ipv6_loopback=not args.no_ipv6_loopback,
        routes=tuple(args.route or ()),
    )
