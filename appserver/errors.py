"""The app server's errors, and their JSON-RPC codes (mapped in control/rpc.py only).

A suite that goes away while we wait on it is shared.jsonrpc.PeerGone."""

from __future__ import annotations


class ProxyError(Exception):
    """An error a control-API caller is told about. ``code`` is its JSON-RPC code."""

    code = -32000


class InvalidParams(ProxyError):
    code = -32602


class SuiteAlreadyActive(ProxyError):
    code = -32001


class UnknownConnection(ProxyError):
    code = -32002


class LegClosed(ProxyError):
    code = -32003


class NotTheActiveSuite(ProxyError):
    """Rules belong to the active suite: only it may add, list or wait for them."""

    code = -32001


class RuleWaitTimedOut(ProxyError):
    code = -32005


class SessionConflict(ProxyError):
    """A control connection holds one session or the classic suite at most (SPEC Part 6)."""

    code = -32006


class InterceptionFailed(ProxyError):
    """mitmproxy could not be started, or is not ready (the message says why)."""

    code = -32004
