"""Names and defaults fixed by the contract (SPEC.md); no logic lives here."""

from typing import Final

# Headers the redirector stamps on a redirected WebSocket upgrade.
HEADER_TEST_HOST: Final = "Ably-Test-Host"
HEADER_TEST_PROTO: Final = "Ably-Test-Proto"
TEST_HEADER_PREFIX: Final = "ably-test-"

# Default addresses (everything binds to loopback unless asked otherwise).
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_CONTROL_PORT: Final = 8001
DEFAULT_PROXY_PORT: Final = 8002
DEFAULT_MITMPROXY_PORT: Final = 8080

# JSON-RPC method names.
METHOD_START_INTERCEPTION: Final = "startInterception"
METHOD_TRANSFORM: Final = "transformInterceptedMessage"
METHOD_INJECT: Final = "injectMessage"
METHOD_MITMPROXY_READY: Final = "mitmproxyReady"
METHOD_CLOSE_CONNECTION: Final = "closeConnection"
EVENT_CONNECTION_OPENED: Final = "interceptedConnectionOpened"
EVENT_CONNECTION_CLOSED: Final = "interceptedConnectionClosed"
