"use strict";
// The test-suite client of the interception proxy (SPEC Part 7): one control connection (JSON-RPC 2.0 over
// WebSocket), every control method as a promise, the proxy's own requests answered (a frame passes unchanged
// unless intercept's handler says otherwise), connection events, waits without polling.
const ably = require("./ably.cjs");
const { rules } = require("./rules.cjs");

const msgpack = require("@msgpack/msgpack");

const DEFAULT_URL = "ws://127.0.0.1:8001/";
/** The subprotocol of a control connection whose envelopes are msgpack (SPEC Part 10). */
const MSGPACK_SUBPROTOCOL = "jsonrpc-msgpack";
const CALL_TIMEOUT_MS = 30_000;

/** A JSON-RPC error from the proxy (or a wait that ran out): `code`, `message`, `data`. */
class InterceptionError extends Error {
  constructor(message, code, data) {
    super(message);
    this.name = "InterceptionError";
    this.code = code;
    this.data = data;
  }
}

/** A small event emitter that runs in Node and in browsers alike. */
class Emitter {
  constructor() {
    this._listeners = new Map();
  }
  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return this;
  }
  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
    return this;
  }
  once(event, listener) {
    const wrapped = (...args) => {
      this.off(event, wrapped);
      listener(...args);
    };
    return this.on(event, wrapped);
  }
  emit(event, ...args) {
    for (const listener of [...(this._listeners.get(event) ?? [])]) {
      try {
        listener(...args);
      } catch (err) {
        console.error(`ably-interception-client: a '${event}' listener threw:`, err);
      }
    }
    return this;
  }
}

/** The methods whose `window` (SPEC Part 10) decides whether a turn's writes are held together (Suite._write). */
const WINDOWED_METHODS = new Set(["startInterception", "openSession", "attachSession"]);

function controlUrl(url) {
  const fromEnv = typeof process !== "undefined" ? process.env?.INTERCEPTION_CONTROL_URL : undefined;
  return url ?? fromEnv ?? DEFAULT_URL;
}

function webSocketClass() {
  if (typeof globalThis.WebSocket === "function") return globalThis.WebSocket;
  // Node before 22 has no global WebSocket: the `ws` package (never reached in a browser)
  return require("ws");
}

function openSocket(url, encoding = "json") {
  const WebSocketClass = webSocketClass();
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = encoding === "msgpack" ? new WebSocketClass(url, [MSGPACK_SUBPROTOCOL]) : new WebSocketClass(url);
      ws.binaryType = "arraybuffer";
    } catch (err) {
      reject(new InterceptionError(`cannot connect to the interception proxy's control API at ${url}: ${err.message}`,
                                   -32000));
      return;
    }
    ws.onopen = () => {
      if (encoding === "msgpack" && ws.protocol !== MSGPACK_SUBPROTOCOL) {
        ws.close(1000, "no msgpack");
        reject(new InterceptionError(`the control API at ${url} did not accept the ${MSGPACK_SUBPROTOCOL} subprotocol`,
                                     -32000));  // fmt: skip
      } else {
        resolve(ws);
      }
    };
    ws.onerror = (event) => reject(new InterceptionError(
      `cannot connect to the interception proxy's control API at ${url}: ${event?.message ?? "connection failed"} ` +
      "(is the app server running? `make run`, `make run-proxy`)", -32000));
  });
}

/** A shell-style glob as a RegExp (`*` crosses `/` too, as the proxy's globs do). */
function globRegExp(glob) {
  const escaped = glob.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".").replace(/\[!/g, "[^");
  return new RegExp(`^${escaped}$`, "s");
}

function dotted(value, path) {
  let here = value;
  for (const part of path.split(".")) {
    if (here === null || typeof here !== "object") return undefined;
    here = Array.isArray(here) ? here[Number(part)] : here[part];
  }
  return here;
}

function sameValue(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function conditionsHold(conditions, actual, caseless) {
  for (const [rawName, wanted] of Object.entries(conditions ?? {})) {
    const name = caseless ? Object.keys(actual ?? {}).find((k) => k.toLowerCase() === rawName.toLowerCase()) : rawName;
    const present = name !== undefined && actual?.[name] !== undefined;
    if (wanted === true ? !present : wanted === false ? present : !present || String(actual[name]) !== wanted) {
      return false;
    }
  }
  return true;
}

function messageMatchOnly(match, what) {
  if (!match || typeof match !== "object") throw new TypeError(`${what}: the match must be an object`);
  if ((match.event ?? "message") !== "message") throw new TypeError(`${what} takes a message match (no 'event')`);
}

/** Whether a frame (a trace frame event and its connection's open event) satisfies a Part 3 message match. */
function frameMatches(match, frame, opened) {
  if (match.fromClient !== undefined && Boolean(frame.fromClient) !== match.fromClient) return false;
  if (match.connectionID !== undefined && frame.connectionID !== match.connectionID) return false;
  if (match.type !== undefined && frame.type !== match.type) return false;
  if (match.host !== undefined || match.path !== undefined || match.query || match.headers) {
    if (!opened) return false;
    if (match.host !== undefined && !globRegExp(match.host).test(opened.host ?? "")) return false;
    if (match.path !== undefined && !globRegExp(match.path).test(opened.path ?? "")) return false;
    if (!conditionsHold(match.query, opened.query, false)) return false;
    if (!conditionsHold(match.headers, opened.headers, true)) return false;
  }
  const message = frame.message;
  if (match.action !== undefined) {
    const wanted = (Array.isArray(match.action) ? match.action : [match.action]).map(ably.actionNumber);
    if (!message || !wanted.includes(message.action)) return false;
  }
  if (match.channel !== undefined && (!message || typeof message.channel !== "string"
                                      || !globRegExp(match.channel).test(message.channel))) return false;
  for (const [path, value] of Object.entries(match.fields ?? {})) {
    if (!message || !sameValue(dotted(message, path), value)) return false;
  }
  return true;
}

/** A trace frame event with its data decoded (`message`: the frame as it arrived, which is what rules match),
 * when it was kept whole (--trace-data-limit). */
function traceFrame(event) {
  if (event.truncated) return { ...event, message: undefined };
  const data = event.data ?? event.dataBase64;
  return { ...event, message: data === undefined ? undefined : ably.decodeFrame({ type: event.type, data }) };
}

class Suite extends Emitter {
  /** Use connect() or openSession(). */
  constructor(ws, url, encoding = "json") {
    super();
    this.url = url;
    /** "json" (text frames), or "msgpack" (binary frames; a binary frame's `data` is a Uint8Array). */
    this.encoding = encoding;
    this._ws = ws;
    this._nextId = 1;
    this._pending = new Map();
    this._handler = undefined;
    this._open = new Map(); // connectionID → interceptedConnectionOpened params, oldest first
    this._opened = []; // every connection opened, for waitForConnection
    this._returned = 0;
    this._connectionWaiters = [];
    this._matchCounts = new Map(); // ruleId → ruleMatched received
    this._matchWaiters = new Set();
    this.closed = false;
    this._wholeTurns = false; // a window > 1: a turn's writes leave together (_write)
    this._corked = false;
    this.sessionID = undefined;
    this.proxyPort = undefined;
    this.mitmproxyPort = undefined;
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => this._gone(event?.code, event?.reason);
    ws.onerror = () => {};
  }

  /** The open connections, oldest first (interceptedConnectionOpened params). */
  get connections() {
    return [...this._open.values()];
  }

  // -- the wire ----------------------------------------------------------------------------------

  _send(payload) {
    if (this.closed) throw new InterceptionError("the control connection is closed", -32000);
    this._write(this._encode(payload));
  }

  /** One envelope out. With a window (> 1), what one turn of the event loop writes leaves in one system call:
   * the answers to every request one read brought, not a send() each (where the socket is the `ws` package's,
   * in Node; a browser's WebSocket writes as it does). */
  _write(data) {
    const socket = this._wholeTurns ? this._ws._socket : undefined;
    if (socket && !this._corked && typeof socket.cork === "function") {
      this._corked = true;
      socket.cork();
      setImmediate(() => {
        this._corked = false;
        socket.uncork();
      });
    }
    this._ws.send(data);
  }

  _encode(payload) {
    return this.encoding === "msgpack" ? msgpack.encode(payload) : JSON.stringify(payload);
  }

  /** Call a control method: resolves with its result, rejects with an InterceptionError. */
  call(method, params = {}, timeoutMs = CALL_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const id = this._nextId++;
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new InterceptionError(`${method}: no answer from the proxy within ${timeoutMs} ms`, -32000));
      }, timeoutMs);
      const resolved = (result) => {
        if (WINDOWED_METHODS.has(method)) this._wholeTurns = (params?.window ?? 1) > 1;
        else if (method === "closeSession") this._wholeTurns = false;
        resolve(result);
      };
      this._pending.set(id, { resolve: resolved, reject, timer, method });
      try {
        this._send({ jsonrpc: "2.0", id, method, params });
      } catch (err) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(err);
      }
    });
  }

  _receive(raw) {
    let payload;
    try {
      if (this.encoding === "msgpack") payload = typeof raw === "string" ? undefined : msgpack.decode(new Uint8Array(raw));
      else payload = JSON.parse(typeof raw === "string" ? raw : new TextDecoder().decode(raw));
    } catch {
      return;
    }
    for (const msg of Array.isArray(payload) ? payload : [payload]) {
      if (!msg || typeof msg !== "object") continue;
      if (typeof msg.method === "string") {
        if (msg.id !== undefined && msg.id !== null) this._request(msg);
        else this._notification(msg.method, msg.params ?? {});
      } else if (this._pending.has(msg.id)) {
        const { resolve, reject, timer, method } = this._pending.get(msg.id);
        this._pending.delete(msg.id);
        clearTimeout(timer);
        if (msg.error) {
          reject(new InterceptionError(`${method}: ${msg.error.message}`, msg.error.code, msg.error.data));
        } else {
          resolve(msg.result);
        }
      }
    }
  }

  _reply(id, result) {
    if (!this.closed) this._write(this._encode({ jsonrpc: "2.0", id, result }));
  }

  async _request(msg) {
    const params = msg.params ?? {};
    if (msg.method !== "transformInterceptedMessage") {
      // the HTTP dialogue of an http transform rule: pass unless a handler is given for it
      const handler = msg.method === "transformInterceptedHttpRequest" ? this._httpRequestHandler
        : msg.method === "transformInterceptedHttpResponse" ? this._httpResponseHandler : undefined;
      let result = { action: "pass" };
      if (handler) {
        try {
          result = (await handler(params)) ?? { action: "pass" };
        } catch (err) {
          console.error(`ably-interception-client: the ${msg.method} handler threw (passed on):`, err);
        }
      }
      this._reply(msg.id, result);
      return;
    }
    const unchanged = { action: "replace", type: params.type, data: params.data };
    if (!this._handler) {
      this._reply(msg.id, unchanged); // no handler: nothing ever waits on this suite
      return;
    }
    const format = params.type === "binary" ? "msgpack" : "json";
    const message = ably.decodeFrame(params);
    const intercepted = {
      id: params.id, connectionID: params.connectionID, fromClient: Boolean(params.fromClient), type: params.type,
      data: params.data, format, message, action: message ? ably.actionName(message.action) : undefined,
      ruleId: params.ruleId,
    };
    let answer;
    try {
      answer = await this._handler(intercepted);
    } catch (err) {
      console.error(`ably-interception-client: the intercept handler threw on message ${params.id} (passed on):`, err);
      this._reply(msg.id, unchanged);
      return;
    }
    if (answer === undefined || answer === null) this._reply(msg.id, unchanged);
    else if (answer.drop) this._reply(msg.id, { action: "drop" });
    else if (answer.message !== undefined) {
      this._reply(msg.id, { action: "replace", ...ably.encodeFrame(answer.message, format, this.encoding === "msgpack") });
    } else {
      console.error("ably-interception-client: an intercept handler returns nothing, {drop: true} or {message}; " +
                    `got ${JSON.stringify(answer)} (message ${params.id} passed on)`);
      this._reply(msg.id, unchanged);
    }
  }

  _notification(method, params) {
    if (method === "interceptedConnectionOpened") {
      this._open.set(params.connectionID, params);
      this._opened.push(params);
      this._wakeConnections();
      this.emit("connectionOpened", params);
    } else if (method === "interceptedConnectionClosed") {
      this._open.delete(params.connectionID);
      this.emit("connectionClosed", params);
    } else if (method === "ruleMatched") {
      this._matchCounts.set(params.ruleId, (this._matchCounts.get(params.ruleId) ?? 0) + 1);
      for (const waiter of [...this._matchWaiters]) waiter(params);
      this.emit("ruleMatched", params);
    }
  }

  _gone(code, reason) {
    if (this.closed) return;
    this.closed = true;
    const error = new InterceptionError(`the control connection closed (${code ?? "no code"} ${reason ?? ""})`.trim(),
                                        -32000);  // fmt: skip
    for (const { reject, timer } of this._pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this._pending.clear();
    for (const waiter of [...this._connectionWaiters]) waiter.fail(error);
    for (const waiter of [...this._matchWaiters]) waiter(undefined, error);
    this.emit("close", { code, reason });
  }

  /** End the control connection (and the session it holds); resolves once it is closed. */
  close() {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this._ws.onclose;
      this._ws.onclose = (event) => {
        previous(event);
        resolve();
      };
      this._ws.close(1000, "suite done");
    });
  }

  // -- every method of Parts 1-6 -----------------------------------------------------------------

  startInterception(params = {}) { return this.call("startInterception", params); }
  injectMessage(params) { return this.call("injectMessage", params); }
  closeConnection(params) { return this.call("closeConnection", params); }
  addRules(params) { return this.call("addRules", params); }
  removeRules(params) { return this.call("removeRules", params); }
  clearRules(params = {}) { return this.call("clearRules", params); }
  listRules(params = {}) { return this.call("listRules", params); }
  sendPing(params) { return this.call("sendPing", params); }
  getTrace(params = {}) { return this.call("getTrace", params); }
  clearTrace(params = {}) { return this.call("clearTrace", params); }
  exportTrace(params) { return this.call("exportTrace", params); }
  closeSession(params = {}) { return this.call("closeSession", params); }

  /** Resolves with {matched} once rule `id` has matched `count` times in all (past matches count). */
  waitForRule(id, { count = 1, timeoutMs = 10_000 } = {}) {
    return this.call("waitForRule", { id, count, timeoutMs }, timeoutMs + CALL_TIMEOUT_MS);
  }

  // -- the dialogue ------------------------------------------------------------------------------

  /** handler(msg) for every transformInterceptedMessage: return nothing (pass), {drop: true}, or {message}
   * (re-encoded in the connection's format), or a promise of those. intercept() with no handler: pass all. */
  intercept(handler) {
    this._handler = handler ?? undefined;
    return this;
  }

  /** The HTTP dialogue of httpTransform rules: handlers for the request (and response) asked about. */
  interceptHttp({ request, response } = {}) {
    this._httpRequestHandler = request;
    this._httpResponseHandler = response;
    return this;
  }

  /** Send `message` on a connection (default: the newest open one), encoded in its format; `fromClient` true
   * sends it towards the server. Resolves once the frame has been written towards its destination. */
  async inject({ connectionID, fromClient = false, message, raw } = {}) {
    const connection = connectionID ?? this.connections.at(-1)?.connectionID;
    if (connection === undefined) throw new InterceptionError("inject: no open connection to inject into", -32002);
    let frame;
    if (raw !== undefined) frame = raw;
    else if (ably.containsBinary(message)) frame = ably.encodeFrame(message, "msgpack");
    else if (this._open.has(connection)) frame = ably.encodeFrame(message, this._open.get(connection).query?.format);
    else frame = { message: ably.numbered(message) }; // the proxy knows its format
    return this.injectMessage({ connectionID: connection, fromClient, ...frame });
  }

  // -- waits -------------------------------------------------------------------------------------

  _nextMatch(ruleId, seen, deadline) {
    if ((this._matchCounts.get(ruleId) ?? 0) > seen) return Promise.resolve(true);
    return new Promise((resolve, reject) => {
      const waiter = (params, error) => {
        if (error) {
          cleanup();
          reject(error);
        } else if (params.ruleId === ruleId) {
          cleanup();
          resolve(true);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        resolve(false);
      }, Math.max(deadline - Date.now(), 0));
      const cleanup = () => {
        clearTimeout(timer);
        this._matchWaiters.delete(waiter);
      };
      this._matchWaiters.add(waiter);
    });
  }

  /** The decoded message that made `match` hold for the `count`th time, counting the session's past messages
   * (from trace position `since`, default the start) as the trace has them; seen through an observe rule,
   * with no per-message round trip. Rejects with an InterceptionError (-32005) after timeoutMs. */
  async waitForMessage(match, { count = 1, timeoutMs = 10_000, since = 0 } = {}) {
    messageMatchOnly(match, "waitForMessage");
    const deadline = Date.now() + timeoutMs;
    const { ids: [ruleId] } = await this.addRules({ rules: [rules.observe(match)], position: "prepend" });
    const opened = new Map();
    let cursor = since;
    let found = 0;
    let accounted = 0; // notifications of the rule whose frame the trace has shown
    try {
      for (;;) {
        const woken = this._matchCounts.get(ruleId) ?? 0;
        const { events, next } = await this.getTrace({ since: cursor });
        cursor = next;
        let fresh = 0;
        for (const event of events) {
          if (event.kind === "open") opened.set(event.connectionID, event);
          if (event.kind !== "frame") continue;
          const frame = traceFrame(event);
          if (frameMatches(match, frame, opened.get(event.connectionID))) {
            fresh++;
            if (++found >= count) return frame.message;
          }
        }
        accounted = Math.min(woken, accounted + fresh);
        if (woken > accounted) {
          // The rule saw a frame the trace does not show yet: it waits on a suite's answer (the trace records a
          // frame with its fate). Look again shortly.
          if (Date.now() >= deadline) break;
          await new Promise((resolve) => setTimeout(resolve, 5));
          continue;
        }
        if (!(await this._nextMatch(ruleId, woken, deadline))) {
          break;
        }
      }
      throw new InterceptionError(`waitForMessage: ${JSON.stringify(match)} matched ${found} of ${count} in ` +
                                  `${timeoutMs} ms`, -32005, { matched: found });
    } finally {
      if (!this.closed) await this.removeRules({ ids: [ruleId] }).catch(() => {});
    }
  }

  /** Resolves if no message matches `match` within withinMs from now; else rejects with an InterceptionError
   * whose `data` holds the message (decoded) that matched. */
  async expectNoMessage(match, { withinMs = 1000 } = {}) {
    messageMatchOnly(match, "expectNoMessage");
    const { ids: [ruleId] } = await this.addRules({ rules: [rules.observe(match)], position: "prepend" });
    try {
      const matched = await new Promise((resolve, reject) => {
        const waiter = (params, error) => {
          if (error) {
            cleanup();
            reject(error);
          } else if (params.ruleId === ruleId) {
            cleanup();
            resolve(params);
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          resolve(undefined);
        }, withinMs);
        const cleanup = () => {
          clearTimeout(timer);
          this._matchWaiters.delete(waiter);
        };
        this._matchWaiters.add(waiter);
      });
      if (matched !== undefined) {
        const message = matched.message ?? ably.decodeFrame(matched);
        throw new InterceptionError(`expectNoMessage: ${JSON.stringify(match)} matched within ${withinMs} ms: ` +
                                    JSON.stringify(message), -32005, { message, ruleMatched: matched });
      }
    } finally {
      if (!this.closed) await this.removeRules({ ids: [ruleId] }).catch(() => {});
    }
  }

  _wakeConnections() {
    while (this._connectionWaiters.length && this._returned < this._opened.length) {
      this._connectionWaiters.shift().done(this._opened[this._returned++]);
    }
  }

  /** The oldest connection of this suite not returned by an earlier call (its interceptedConnectionOpened). */
  waitForConnection({ timeoutMs = 10_000 } = {}) {
    return new Promise((resolve, reject) => {
      const waiter = {
        done: (opened) => {
          clearTimeout(timer);
          resolve(opened);
        },
        fail: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        this._connectionWaiters.splice(this._connectionWaiters.indexOf(waiter), 1);
        reject(new InterceptionError(`waitForConnection: no connection opened in ${timeoutMs} ms`, -32005));
      }, timeoutMs);
      this._connectionWaiters.push(waiter);
      this._wakeConnections();
    });
  }

  // -- sessions ----------------------------------------------------------------------------------

  /** The ably-js ClientOptions that point an SDK at this session in direct mode (merged with `extra`). */
  clientOptions(extra = {}) {
    if (this.proxyPort === undefined) {
      throw new InterceptionError("clientOptions: this suite has no session port (a direct-mode session has one)",
                                  -32006);  // fmt: skip
    }
    return { endpoint: "127.0.0.1", port: this.proxyPort, tls: false, fallbackHosts: [], ...extra };
  }
}

/** A Suite for the classic active suite: call startInterception on it (as in Part 1). `encoding: "msgpack"`
 * offers the jsonrpc-msgpack subprotocol (SPEC Part 10): binary frames of msgpack, binary data as bytes. */
async function connect({ url, encoding = "json" } = {}) {
  if (encoding !== "json" && encoding !== "msgpack") {
    throw new InterceptionError(`encoding must be "json" or "msgpack", got ${JSON.stringify(encoding)}`, -32602);
  }
  const address = controlUrl(url);
  return new Suite(await openSocket(address, encoding), address, encoding);
}

/** A Suite holding a session of its own (SPEC Part 6): its own port (direct) or mitmproxy listener (proxy).
 * Other options are openSession's params (`window`, `decoded`, `upstream` …). */
async function openSession({ url, mode = "direct", encoding, ...params } = {}) {
  const suite = await connect({ url, encoding });
  try {
    const result = await suite.call("openSession", { mode, ...params });
    suite.sessionID = result.sessionID;
    suite.proxyPort = result.proxyPort;
    suite.mitmproxyPort = result.mitmproxyPort;
    return suite;
  } catch (err) {
    await suite.close();
    throw err;
  }
}

/** Resolves with fn(suite)'s result for a session of its own, closed afterwards; a failure's error names the
 * trace files written for it (in Node, under INTERCEPTION_TRACE_DIR). */
async function withSession(options, fn) {
  if (typeof options === "function") [options, fn] = [{}, options];
  const suite = await openSession(options);
  try {
    return await fn(suite);
  } catch (err) {
    await attachTrace(suite, err, options.name ?? fn.name ?? "session");
    throw err;
  } finally {
    await suite.close();
  }
}

/** Write the suite's trace (JSONL and HAR) for a failure and name the files in err's message and stack. */
async function attachTrace(suite, err, name) {
  let paths;
  try {
    const write = require("./traces.cjs").writeTrace;
    paths = await write(suite, name);
  } catch (failure) {
    paths = undefined;
    if (err && typeof err === "object") err.message += ` (the proxy's trace could not be written: ${failure.message})`;
  }
  if (paths && err && typeof err === "object") {
    const note = `\nthe proxy's trace of this test: ${paths.jsonl} (and ${paths.har})`;
    err.message = `${err.message}${note}`;
    if (typeof err.stack === "string") err.stack = err.stack.replace(/^([^\n]*)/, (line) => `${line}${note}`);
    err.interceptionTrace = paths;
  }
  return paths;
}

module.exports = {
  Suite, InterceptionError, connect, openSession, withSession, attachTrace, rules, frameMatches,
  ACTIONS: ably.ACTIONS, FLAGS: ably.FLAGS, encodeFrame: ably.encodeFrame, decodeFrame: ably.decodeFrame,
  actionName: ably.actionName, actionNumber: ably.actionNumber,
};
