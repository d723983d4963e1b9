"""The dialogue with the test suite: control connections, the JSON-RPC methods, the active suite."""
