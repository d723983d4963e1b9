"""Names and defaults fixed by the contract (SPEC.md); no logic lives here."""

from typing import Final

# Headers the redirector stamps on a redirected WebSocket upgrade.
HEADER_TEST_HOST: Final = "Ably-Test-Host"
HEADER_TEST_PROTO: Final = "Ably-Test-Proto"
HEADER_TEST_SESSION: Final = "Ably-Test-Session"  # which session (SPEC Part 6) a redirected request belongs to
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
# Part 3: rules.
METHOD_ADD_RULES: Final = "addRules"
METHOD_REMOVE_RULES: Final = "removeRules"
METHOD_CLEAR_RULES: Final = "clearRules"
METHOD_LIST_RULES: Final = "listRules"
METHOD_WAIT_FOR_RULE: Final = "waitForRule"
METHOD_SEND_PING: Final = "sendPing"
EVENT_RULE_MATCHED: Final = "ruleMatched"
# Part 4: the HTTP dialogue.
METHOD_HTTP_REQUEST: Final = "transformInterceptedHttpRequest"
METHOD_HTTP_RESPONSE: Final = "transformInterceptedHttpResponse"

# The trace (SPEC Part 5)
METHOD_GET_TRACE: Final = "getTrace"
METHOD_CLEAR_TRACE: Final = "clearTrace"
METHOD_EXPORT_TRACE: Final = "exportTrace"

# Sessions (SPEC Part 6)
METHOD_OPEN_SESSION: Final = "openSession"
METHOD_CLOSE_SESSION: Final = "closeSession"
METHOD_ATTACH_SESSION: Final = "attachSession"
METHOD_SET_LISTENERS: Final = "setSessionListeners"  # app server → the redirector in mitmdump

# Local-capture canary: plain-HTTP requests to this host are answered by the
# redirector itself (204) and prove that capture is active (.invalid: RFC 6761).
DEFAULT_CANARY_HOST: Final = "interception-proxy-canary.invalid"
