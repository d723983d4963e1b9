"use strict";
// Rule builders (SPEC Part 3 and 4): each takes (match, options) and returns a plain {match, action} rule,
// with `id`, `times` and `skip` from options when given. They mirror the Python helpers (shared/rules.py):
// the same names in camelCase, the same defaults.

function rule(action, match = {}, options = {}) {
  const out = { match: { ...match }, action };
  for (const key of ["id", "times", "skip"]) if (options[key] !== undefined) out[key] = options[key];
  return out;
}

function withEvent(match, event) {
  return { ...match, event };
}

function rawOrMessage(options) {
  if (options.raw !== undefined) return { raw: options.raw };
  if (options.message === undefined) throw new TypeError("give options.message (a protocol message) or options.raw");
  return { message: options.message };
}

function httpBody(options) {
  if (options.json !== undefined) return { json: options.json };
  if (options.bodyBase64 !== undefined) return { bodyBase64: options.bodyBase64 };
  return options.body === undefined ? {} : { body: options.body };
}

function closeAction({ code, reason, abrupt = false, side = "both" } = {}) {
  const action = { type: "close", side, abrupt };
  if (code !== undefined) action.code = code;
  if (reason) action.reason = reason;
  return action;
}

function injectAction(message, { fromClient } = {}) {
  const action = { type: "inject", message };
  if (fromClient !== undefined) action.fromClient = fromClient;
  return action;
}

const rules = {
  rule,
  closeAction,
  injectAction,
  // -- the fate of matching frames --------------------------------------------------------------
  /** Pass everything (the earlier rules aside) without asking the suite: the dialogue off. */
  passAll: (match = {}, options = {}) => rule({ type: "pass" }, match, options),
  /** Let matching frames pass and tell the suite (ruleMatched), without making them wait. */
  observe: (match = {}, options = {}) => rule({ type: "observe" }, match, options),
  /** Let matching frames pass and send ruleMatched (the rule decides: later rules are not asked). */
  notify: (match = {}, options = {}) => rule([{ type: "pass" }, { type: "notify" }], match, options),
  drop: (match = {}, options = {}) => rule({ type: "drop" }, match, options),
  /** Ask the suite (intercept's handler) about matching frames, and only those. */
  transform: (match = {}, options = {}) => rule({ type: "transform" }, match, options),
  /** Deliver options.message (encoded in the connection's format) or options.raw instead. */
  replaceWith: (match = {}, options = {}) => rule({ type: "replace", ...rawOrMessage(options) }, match, options),
  /** Change fields of matching messages: options.set {path: value}, options.unset [path], options.flags {set, clear}. */
  patch: (match = {}, options = {}) => {
    const action = { type: "patch" };
    for (const key of ["set", "unset", "flags"]) if (options[key] !== undefined) action[key] = options[key];
    return rule(action, match, options);
  },
  /** Deliver matching frames options.ms later (their direction waits behind them). */
  delay: (match = {}, options = {}) => rule({ type: "delay", ms: options.ms }, match, options),
  /** Pass the matching frame, then send options.message (towards options.fromClient's destination); with
   * options.before, send it ahead of the matched frame instead (uts-proxy's order). */
  inject: (match = {}, options = {}) =>
    rule([{ type: "pass" }, { type: "inject", ...rawOrMessage(options),
                               ...(options.fromClient === undefined ? {} : { fromClient: options.fromClient }),
                               ...(options.before ? { before: true } : {}) }],
         match, options),
  /** From the matching frame on, drop every frame and ping in one direction (options.fromClient; default the matched
   * frame's, towards the client on a timer) on every connection of the session open then (uts-proxy's
   * suppress_onwards). */
  suppressOnwards: (match = {}, options = {}) =>
    rule([{ type: "suppressOnwards", ...(options.fromClient === undefined ? {} : { fromClient: options.fromClient }) },
          { type: "drop" }], match, options),
  /** Pass the matching frame, then close (options.code, reason, abrupt, side). */
  close: (match = {}, options = {}) => rule([{ type: "pass" }, closeAction(options)], match, options),
  // -- handshakes, timers, the network ----------------------------------------------------------
  /** Fail the next client handshake (options.times, default 1) with options.status (503): no upstream. */
  refuseConnect: (match = {}, options = {}) => {
    const action = { type: "refuse", status: options.status ?? 503 };
    if (options.body !== undefined) action.body = options.body;
    if (options.headers !== undefined) action.headers = options.headers;
    return rule(action, withEvent(match, "connect"), { times: 1, ...options });
  },
  /** Accept the next handshake with no upstream, send options.messages, then close (options.close or abrupt). */
  answerConnect: (match = {}, options = {}) => {
    const actions = (options.messages ?? []).map((message) => ({ type: "inject", message }));
    if (options.close !== undefined || options.abrupt) {
      actions.push(closeAction({ code: options.close, abrupt: Boolean(options.abrupt) }));
    }
    return rule(actions, withEvent(match, "connect"), { times: 1, ...options });
  },
  /** Hold matching handshakes options.ms before going on. */
  delayConnect: (match = {}, options = {}) => rule({ type: "delay", ms: options.ms }, withEvent(match, "connect"), options),
  /** Dial options.host (options.proto ws|wss) instead of the host the client meant. */
  routeConnect: (match = {}, options = {}) =>
    rule({ type: "route", host: options.host, proto: options.proto ?? "ws" }, withEvent(match, "connect"), options),
  /** A timer: ms after each connection opens, these side effects (closeAction(), injectAction()). */
  after: (ms, actions, match = {}, options = {}) => rule(actions, { ...match, event: "timer", afterMs: ms }, options),
  /** Drop WebSocket pings ({fromClient: false}: the server's). A server that enforces pongs closes first: against
   * one, patch connectionDetails.maxIdleInterval short and drop HEARTBEATs instead. */
  dropPings: (match = {}, options = {}) => rule({ type: "drop" }, withEvent(match, "ping"), options),
  /** From the matching event on, the connection's network goes quiet both ways; nothing is closed. */
  silence: (match = {}, options = {}) => rule([{ type: "pass" }, { type: "silence" }], match, options),
  // -- plain HTTP (SPEC Part 4) -----------------------------------------------------------------
  /** Answer matching HTTP requests here (options.status, json | body | bodyBase64, headers). */
  httpRespond: (match = {}, options = {}) => {
    const action = { type: "respond", status: options.status ?? 200, ...httpBody(options) };
    if (options.headers) action.headers = options.headers;
    return rule(action, withEvent(match, "http"), options);
  },
  httpDelay: (match = {}, options = {}) => rule({ type: "delay", ms: options.ms }, withEvent(match, "http"), options),
  /** No response: options.mode "reset" (default) closes the client's connection, "hang" never answers. */
  httpDrop: (match = {}, options = {}) =>
    rule({ type: "drop", mode: options.mode ?? "reset" }, withEvent(match, "http"), options),
  httpRoute: (match = {}, options = {}) =>
    rule({ type: "route", host: options.host, proto: options.proto ?? "http" }, withEvent(match, "http"), options),
  httpObserve: (match = {}, options = {}) => rule({ type: "observe" }, withEvent(match, "http"), options),
  httpTransform: (match = {}, options = {}) =>
    rule({ type: "transform", response: Boolean(options.response) }, withEvent(match, "http"), options),
  httpReplaceResponse: (match = {}, options = {}) => {
    const action = { type: "replaceResponse", ...httpBody(options) };
    if (options.status !== undefined) action.status = options.status;
    if (options.headers) action.headers = options.headers;
    return rule(action, withEvent(match, "http"), options);
  },
  httpPatchResponse: (match = {}, options = {}) => {
    const action = { type: "patchResponse" };
    if (options.set) action.set = options.set;
    if (options.unset) action.unset = options.unset;
    return rule(action, withEvent(match, "http"), options);
  },
};

module.exports = { rules };
