"""The dialogue with the test suite: control sessions, the JSON-RPC methods, the active suite."""
