"""Pure decisions of the redirector addon: no I/O, no mitmproxy context."""

from urllib.parse import urlsplit

from mitmproxy import http

from shared import headers as shared_headers

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
READY_ON = ("running", "canary")


def parse_host_port(value: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"; ValueError when malformed."""
    parts = urlsplit(f"//{value}")
    try:
        parts.port
    except ValueError as exc:
        raise ValueError(f"appserver_proxy: bad port in {value!r}") from exc
    if not parts.hostname or parts.port is None or parts.netloc != value:
        raise ValueError(f"appserver_proxy: expected host:port, got {value!r}")
    return parts.hostname, parts.port


def parse_ws_url(url: str) -> tuple[str, int]:
    """Host and port of a ws:// or wss:// URL; ValueError when malformed."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"appserver_control: bad port in {url!r}") from exc
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"appserver_control: expected a ws:// URL, got {url!r}")
    return parts.hostname, port or (443 if parts.scheme == "wss" else 80)


def check_options(ready_on: str, canary_host: str) -> None:
    """ValueError naming the option when ready_on or canary_host is unusable."""
    if ready_on not in READY_ON:
        raise ValueError(f"ready_on: expected one of {READY_ON}, got {ready_on!r}")
    if not canary_host or any(c in canary_host for c in " /:"):
        raise ValueError(f"canary_host: not a host name: {canary_host!r}")


def same_endpoint(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Compare host/port pairs, treating every loopback spelling as one host."""
    def norm(host: str) -> str:
        host = host.lower().strip("[]")
        return "loopback" if host in LOOPBACK_NAMES else host
    return a[1] == b[1] and norm(a[0]) == norm(b[0])


def is_websocket_upgrade(headers: http.Headers) -> bool:
    return shared_headers.is_websocket_upgrade(headers.get("upgrade", ""), headers.get_all("connection"))


def intended_host(host: str, port: int, tls: bool) -> str:
    """The host the client meant, with :port when not the default of ws (80) / wss (443)."""
    return host if port == (443 if tls else 80) else f"{host}:{port}"
