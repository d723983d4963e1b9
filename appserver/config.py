"""The app server's configuration: one frozen object, built and checked once."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

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


def option(default: Any, flag: str, help: str, *, type: Callable[[str], Any] | None = None,
           metavar: str | None = None, negated: bool = False, repeated: Callable[[list[Any]], Any] | None = None,
           choices: list[str] | None = None, given: Callable[[Any], Any] | None = None) -> Any:
    """A Config field and its command-line option, declared once. ``negated``: a ``--no-…`` flag that turns a
    True default off; ``repeated``: an option given any number of times, its list made the value by this
    function; ``given``: what the parsed value becomes (e.g. clamped)."""
    return field(default=default, metadata={"flag": flag, "help": help, "type": type, "metavar": metavar,
                                            "negated": negated, "repeated": repeated, "choices": choices,
                                            "given": given})  # fmt: skip


@dataclass(frozen=True)
class Config:
    control_host: str = option(DEFAULT_HOST, "--control-host", "control API bind address (default %(default)s)")
    control_port: int = option(DEFAULT_CONTROL_PORT, "--control-port", "control API port (default %(default)s)",
                               type=_port)  # fmt: skip
    proxy_host: str = option(DEFAULT_HOST, "--proxy-host", "proxy endpoint bind address (default %(default)s)")
    proxy_port: int = option(DEFAULT_PROXY_PORT, "--proxy-port", "proxy endpoint port (default %(default)s)",
                             type=_port)  # fmt: skip
    mitmproxy_host: str = option(DEFAULT_HOST, "--mitmproxy-host", "mitmproxy listen address (default %(default)s)")
    mitmproxy_port: int = option(DEFAULT_MITMPROXY_PORT, "--mitmproxy-port", "mitmproxy port (default %(default)s)",
                                 type=_port)  # fmt: skip
    mitmproxy_confdir: str | None = option(None, "--mitmproxy-confdir", "mitmproxy's configuration directory, where "
                                           "its CA lives (default ~/.mitmproxy)", metavar="DIR")  # fmt: skip
    #: "proxy" or "local:PID": started with the app server.
    start_mitmproxy: str | None = option(
        None, "--start-mitmproxy", "start mitmproxy with the app server: 'proxy', or 'local:PID' (what make "
        "run-proxy and make run-local do); a suite's startInterception in that mode then starts nothing new",
        type=_start_mode, metavar="MODE")  # fmt: skip
    launch_mitmproxy: bool = option(
        True, "--no-mitmproxy", "never start mitmproxy: startInterception only marks the active suite (for direct "
        "mode, or when mitmproxy is run by other means)", negated=True)  # fmt: skip
    default_upstream: URL | None = option(
        None, "--default-upstream", "direct mode: upgrades without Ably-Test-* headers, and plain HTTP, go to this "
        "upstream", type=_upstream, metavar="URL")  # fmt: skip
    #: --route: (host glob, upstream) pairs, first match wins, for every WebSocket and HTTP request.
    routes: tuple[tuple[str, URL], ...] = option(
        (), "--route", "send every WebSocket and HTTP request for a matching host (a glob, e.g. '*.ably.net') to this "
        "upstream instead (ws/http or wss/https by the URL's scheme); repeatable, first match wins: an SDK keeps its "
        "default and fallback hosts and reaches a local server", type=_route, metavar="HOST_GLOB=URL",
        repeated=tuple)  # fmt: skip
    upstream_ca: str | None = option(None, "--upstream-ca", "also trust this CA file for wss:// upstreams",
                                     metavar="FILE")  # fmt: skip
    upstream_insecure: bool = option(False, "--upstream-insecure", "do not verify wss:// upstream certificates")
    transform_timeout: float = option(
        30.0, "--transform-timeout", "how long a message waits for the suite's answer before passing on unchanged "
        "(default %(default)s)", type=_positive, metavar="SECONDS")  # fmt: skip
    #: --uts-port: uts-proxy's REST control API (SPEC Part 8) on the control host, off when None.
    uts_port: int | None = option(
        None, "--uts-port", "also serve uts-proxy's REST control API on this port (its default is 9100), over our "
        "sessions, rules and trace (docs/uts-proxy.md; default: off)", type=_port, metavar="PORT")  # fmt: skip
    #: Seconds after which an active suite that has seen no connection gets a WARNING (0: never).
    idle_warning: float = option(
        30.0, "--idle-warning", "warn when an active suite has seen no connection this long: its SDK is probably "
        "not going through the proxy (default %(default)s; 0: never)", type=float, metavar="SECONDS",
        given=lambda value: max(value, 0.0))  # fmt: skip
    close_timeout: float = option(10.0, "--close-timeout", "how long a peer has to answer a close frame (default "
                                  "%(default)s)", type=_positive, metavar="SECONDS")  # fmt: skip
    connect_timeout: float = option(10.0, "--connect-timeout", "upstream connect and handshake timeout (default "
                                    "%(default)s)", type=_positive, metavar="SECONDS")  # fmt: skip
    mitmproxy_ready_timeout: float = option(30.0, "--mitmproxy-ready-timeout", "how long startInterception waits "
                                            "for mitmproxy (default %(default)s)", type=_positive,
                                            metavar="SECONDS")  # fmt: skip
    max_queued_messages: int = option(
        10_000, "--max-queued-messages", "per connection and direction; beyond it the proxy stops reading that peer "
        "until the suite catches up (default %(default)s)", type=int, metavar="N")  # fmt: skip
    max_control_message_size: int = option(
        16 * 1024 * 1024, "--max-control-message-size", "largest control-API frame; a larger one closes that "
        "control connection with 1009 (default %(default)s)", type=int, metavar="BYTES")  # fmt: skip
    max_http_body: int = option(
        16 * 1024 * 1024, "--max-http-body", "largest HTTP request body an http rule may look into; a larger one "
        "streams and the rule sees no body (default %(default)s)", type=int, metavar="BYTES")  # fmt: skip
    #: The trace (SPEC Part 5): on unless --no-trace; at most trace_limit events, trace_data_limit bytes each.
    trace_limit: int = option(
        10_000, "--trace-limit", "events the active suite's trace keeps (getTrace, exportTrace); the oldest go "
        "first, counted (default %(default)s)", type=_at_least_one, metavar="EVENTS")  # fmt: skip
    trace_data_limit: int = option(1024, "--trace-data-limit", "bytes of a frame's or body's data the trace keeps "
                                   "(default %(default)s)", type=_not_negative, metavar="BYTES")  # fmt: skip
    trace: bool = option(True, "--no-trace", "record no trace (getTrace then returns nothing)", negated=True)
    allowed_origins: tuple[str, ...] = option(
        DEFAULT_ORIGINS, "--allow-origin", "allow control connections from this browser Origin (glob, e.g. "
        "'http://example.test:*'); repeatable; connections without an Origin header are always allowed (default: "
        "localhost, 127.0.0.1 and [::1] on any port)", metavar="PATTERN",
        repeated=lambda given: DEFAULT_ORIGINS + tuple(given))  # fmt: skip
    #: A control API or proxy endpoint on 127.0.0.1 also listens on [::1] (same port), so that
    #: "localhost" reaches it whichever loopback family the client's resolver lists first.
    ipv6_loopback: bool = option(
        True, "--no-ipv6-loopback", "a control API or proxy endpoint on 127.0.0.1 listens there only (by default it "
        "also listens on [::1], so that localhost works whichever family a client tries first)",
        negated=True)  # fmt: skip
    log_level: str = option("INFO", "--log-level", "how much to log (default %(default)s)",
                            choices=["DEBUG", "INFO", "WARNING", "ERROR"])  # fmt: skip

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


def parser() -> argparse.ArgumentParser:
    """The command line, made from Config's fields (each option declared once, there)."""
    p = argparse.ArgumentParser(
        prog="python -m appserver",
        description="The interception proxy's app server: control API, proxy endpoint, mitmproxy launcher.",
    )
    for f in fields(Config):
        meta = f.metadata
        if meta["negated"] or (f.default is False and meta["type"] is None):
            p.add_argument(meta["flag"], dest=f.name, action="store_true", help=meta["help"])
        elif meta["repeated"] is not None:
            p.add_argument(meta["flag"], dest=f.name, action="append", type=meta["type"], default=None,
                           metavar=meta["metavar"], help=meta["help"])  # fmt: skip
        else:
            p.add_argument(meta["flag"], dest=f.name, type=meta["type"], default=f.default, metavar=meta["metavar"],
                           choices=meta["choices"], help=meta["help"])  # fmt: skip
    return p


def from_args(argv: list[str] | None = None) -> Config:
    args = parser().parse_args(argv)
    if args.start_mitmproxy and args.launch_mitmproxy:  # (a negated field holds its flag until it is turned below)
        parser().error("--start-mitmproxy and --no-mitmproxy contradict each other")
    if args.upstream_ca:
        try:
            ssl.create_default_context().load_verify_locations(args.upstream_ca)
        except (OSError, ssl.SSLError) as exc:
            parser().error(f"--upstream-ca {args.upstream_ca}: {exc}")
    values: dict[str, Any] = {}
    for f in fields(Config):
        meta, value = f.metadata, getattr(args, f.name)
        if meta["negated"]:
            value = not value
        elif meta["repeated"] is not None:
            value = meta["repeated"](value or [])
        elif meta["given"] is not None:
            value = meta["given"](value)
        values[f.name] = value
    return Config(**values)
