// What ably-js's UTS proxy suite (test/uts/realtime/integration/proxy/, 7 files, 30 tests) needs of the proxy,
// test by test, against the real ably-js from npm, through the app server's --uts-port and the ProxySession
// calls ably-js's helper makes (proxy_helper.mjs). The app server routes the sandbox hosts to the project's fake
// Ably server (tests/fake_ably.py), whose port FAKE_ABLY_PORT gives for what the suite does straight to Ably
// (token requests).
import assert from "node:assert/strict";
import crypto from "node:crypto";
import Ably from "ably";
import { createProxySession, waitForProxy } from "./proxy_helper.mjs";

const KEY = "fakeApp.fakeKey:fakeSecret";
const [KEY_NAME, KEY_SECRET] = KEY.split(":");
const FAKE = { endpoint: "127.0.0.1", port: Number(process.env.FAKE_ABLY_PORT), tls: false };
let names = 0;

function b64url(value) {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}

function jwt(clientId) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { iat: now, exp: now + 3600, "x-ably-capability": '{"*":["*"]}' };
  if (clientId) claims["x-ably-clientId"] = clientId;
  const unsigned = `${b64url({ typ: "JWT", alg: "HS256", "x-ably-kid": KEY_NAME })}.${b64url(claims)}`;
  return `${unsigned}.${crypto.createHmac("sha256", KEY_SECRET).update(unsigned).digest("base64url")}`;
}

const channelName = (what) => `${what}-${process.pid}-${++names}`;
const clients = [];

function realtime(session, options = {}, counter = null) {
  const { clientId, ...rest } = options;
  const client = new Ably.Realtime({
    authCallback: (_params, cb) => {
      if (counter) counter.count += 1;
      cb(null, jwt(clientId));
    },
    endpoint: "localhost", port: session.proxyPort, tls: false, useBinaryProtocol: false, autoConnect: false,
    ...rest,
  });
  clients.push(client);
  return client;
}

function record(emitter) {
  const seen = [];
  emitter.on((change) => seen.push(change.current));
  return seen;
}

function waitFor(emitter, state, timeout = 15000) {
  return new Promise((resolve, reject) => {
    if (emitter.state === state) return resolve();
    const timer = setTimeout(() => reject(new Error(`timed out waiting for '${state}' (now '${emitter.state}')`)),
                             timeout);
    const listener = (change) => {
      if (change.current === state) {
        clearTimeout(timer);
        emitter.off(listener);
        resolve();
      }
    };
    emitter.on(listener);
  });
}

async function pollUntil(check, timeout = 10000, interval = 100) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, interval));
  }
  throw new Error("condition not met in time");
}

const connects = (log) => log.filter((e) => e.type === "ws_connect");
const frames = (log, direction, action) =>
  log.filter((e) => e.type === "ws_frame" && e.direction === direction && e.message?.action === action);

async function closeAndWait(client) {
  if (["closed", "failed"].includes(client.connection.state)) return;
  client.close();
  await waitFor(client.connection, "closed", 10000);
}

let session = null;

before(async function () {
  await waitForProxy();
});

afterEach(async function () {
  for (const client of clients.splice(0)) {
    if (!["closed", "failed"].includes(client.connection.state)) client.close();
  }
  if (session) await session.close();
  session = null;
});

function replaceConnected(error, extra = {}) {
  return { match: { type: "ws_frame_to_client", action: "CONNECTED", ...extra },
           action: { type: "replace", message: { action: 9, error } }, times: 1 };
}

const details = (key, ttl) => ({ connectionKey: key, clientId: null, maxMessageSize: 65536, maxInboundRate: 250,
  maxOutboundRate: 100, maxFrameSize: 524288, serverId: "test-server", connectionStateTtl: ttl,
  maxIdleInterval: 15000 });

describe("connection_open_failures", function () {
  it("RTN14a: a fatal ERROR instead of CONNECTED fails the connection", async function () {
    session = await createProxySession({ rules: [replaceConnected({ code: 40005, statusCode: 400, message: "Invalid key" })] });
    const client = realtime(session);
    const states = record(client.connection);
    client.connect();
    await waitFor(client.connection, "failed");
    assert.equal(client.connection.errorReason.code, 40005);
    assert.equal(client.connection.errorReason.statusCode, 400);
    assert.ok(states.indexOf("connecting") < states.indexOf("failed"));
    assert.equal(client.connection.id, undefined);
  });

  it("RTN14b: a token error on connect renews the token and connects", async function () {
    session = await createProxySession({ rules: [replaceConnected({ code: 40142, statusCode: 401, message: "Token expired" })] });
    const counter = { count: 0 };
    const client = realtime(session, {}, counter);
    client.connect();
    await waitFor(client.connection, "connected", 30000);
    assert.ok(counter.count >= 2 && client.connection.id && client.connection.key);
    assert.ok(connects(await session.getLog()).length >= 2);
    assert.equal(client.connection.errorReason, null);
    await closeAndWait(client);
  });

  it("RTN14c: a suppressed CONNECTED times the connection out", async function () {
    session = await createProxySession({ rules: [{ match: { type: "ws_frame_to_client", action: "CONNECTED" },
                                                   action: { type: "suppress" } }] });
    const client = realtime(session, { realtimeRequestTimeout: 3000 });
    client.connect();
    await waitFor(client.connection, "disconnected");
    assert.ok(client.connection.errorReason);
    assert.equal(client.connection.id, undefined);
    await closeAndWait(client);
  });

  it("RTN14d: a refused first connection is retried", async function () {
    session = await createProxySession({ rules: [{ match: { type: "ws_connect", count: 1 },
                                                   action: { type: "refuse_connection" }, times: 1 }] });
    const client = realtime(session, { disconnectedRetryTimeout: 2000 });
    const states = record(client.connection);
    client.connect();
    await waitFor(client.connection, "connected", 30000);
    assert.ok(states.indexOf("disconnected") < states.lastIndexOf("connected"));
    assert.ok(connects(await session.getLog()).length >= 2);
    await closeAndWait(client);
  });

  it("RTN14g: a server ERROR during open fails the connection", async function () {
    session = await createProxySession({ rules: [replaceConnected({ code: 50000, statusCode: 500, message: "Internal" })] });
    const client = realtime(session);
    client.connect();
    await waitFor(client.connection, "failed");
    assert.equal(client.connection.errorReason.code, 50000);
  });
});

describe("connection_resume", function () {
  for (const type of ["close", "disconnect"]) {
    it(`RTN15a/RTN15b: a timed ${type} is resumed with the same connectionId`, async function () {
      session = await createProxySession({ rules: [{ match: { type: "delay_after_ws_connect", delayMs: 1000 },
                                                     action: { type }, times: 1 }] });
      const client = realtime(session);
      client.connect();
      await waitFor(client.connection, "connected");
      const [id, key] = [client.connection.id, client.connection.key];
      await waitFor(client.connection, "disconnected", 10000);
      await waitFor(client.connection, "connected");
      assert.equal(client.connection.id, id);
      const log = await session.getLog();
      assert.equal(connects(log)[1].queryParams.resume, key);
      assert.equal(client.connection.errorReason, null);
      await closeAndWait(client);
    });
  }

  it("RTN15c7: a failed resume (the 2nd CONNECTED replaced) gives a new connectionId", async function () {
    session = await createProxySession({ rules: [
      { match: { type: "delay_after_ws_connect", delayMs: 1000 }, action: { type: "close" }, times: 1 },
      { match: { type: "ws_frame_to_client", action: "CONNECTED", count: 2 }, times: 1,
        action: { type: "replace", message: { action: 4, connectionId: "proxy-new-id", connectionKey: "proxy-new-key",
          connectionDetails: details("proxy-new-key", 120000),
          error: { code: 80008, statusCode: 400, message: "Unable to recover connection" } } } },
    ] });
    const client = realtime(session);
    client.connect();
    await waitFor(client.connection, "connected");
    await waitFor(client.connection, "disconnected", 10000);
    await waitFor(client.connection, "connected");
    assert.equal(client.connection.id, "proxy-new-id");
    assert.equal(client.connection.key, "proxy-new-key");
    assert.equal(client.connection.errorReason.code, 80008);
    await closeAndWait(client);
  });

  it("RTN15h1: a token error with no means to renew fails the connection", async function () {
    session = await createProxySession({ rules: [{ match: { type: "delay_after_ws_connect", delayMs: 1000 }, times: 1,
      action: { type: "inject_to_client_and_close",
                message: { action: 6, error: { code: 40142, statusCode: 401, message: "Token expired" } } } }] });
    const token = await new Ably.Rest({ key: KEY, ...FAKE }).auth.requestToken();
    const client = new Ably.Realtime({ token: token.token, endpoint: "localhost", port: session.proxyPort, tls: false,
                                       useBinaryProtocol: false, autoConnect: false });
    clients.push(client);
    client.connect();
    await waitFor(client.connection, "connected");
    await waitFor(client.connection, "failed");
    assert.equal(client.connection.errorReason.code, 40171);
  });

  it("RTN15h3: a DISCONNECTED with another error reconnects and resumes", async function () {
    session = await createProxySession({ rules: [{ match: { type: "delay_after_ws_connect", delayMs: 1000 }, times: 1,
      action: { type: "inject_to_client_and_close",
                message: { action: 6, error: { code: 80003, statusCode: 500, message: "unavailable" } } } }] });
    const client = realtime(session);
    client.connect();
    await waitFor(client.connection, "connected");
    await waitFor(client.connection, "disconnected", 10000);
    await waitFor(client.connection, "connected");
    assert.ok(connects(await session.getLog())[1].queryParams.resume);
    assert.equal(client.connection.errorReason, null);
    await closeAndWait(client);
  });

  it("RTN15j: an injected fatal ERROR fails the connection and its channels", async function () {
    session = await createProxySession({ rules: [] });
    const client = realtime(session);
    client.connect();
    await waitFor(client.connection, "connected");
    const [a, b] = [client.channels.get(channelName("fatal-a")), client.channels.get(channelName("fatal-b"))];
    await Promise.all([a.attach(), b.attach()]);
    await session.triggerAction({ type: "inject_to_client",
                                  message: { action: 9, error: { code: 50000, statusCode: 500, message: "boom" } } });
    await waitFor(client.connection, "failed");
    assert.equal(a.state, "failed");
    assert.equal(b.errorReason.code, 50000);
    assert.equal(connects(await session.getLog()).length, 1);
  });

  it("RTN14h: after the TTL the reconnection still asks to resume", async function () {
    session = await createProxySession({ rules: [
      { match: { type: "ws_frame_to_client", action: "CONNECTED", count: 1 }, times: 1,
        action: { type: "replace", message: { action: 4, connectionId: "proxy-ttl-id", connectionKey: "proxy-ttl-key",
                                              connectionDetails: details("proxy-ttl-key", 2000) } } },
      { match: { type: "delay_after_ws_connect", delayMs: 1000 }, action: { type: "close" }, times: 1 },
      { match: { type: "ws_connect", count: 2 }, action: { type: "refuse_connection" }, times: 1 },
    ] });
    const client = realtime(session, { suspendedRetryTimeout: 1000 });
    client.connect();
    await waitFor(client.connection, "connected");
    assert.equal(client.connection.id, "proxy-ttl-id");
    await waitFor(client.connection, "suspended");
    await waitFor(client.connection, "connected");
    assert.notEqual(client.connection.id, "proxy-ttl-id");
    const all = connects(await session.getLog());
    assert.ok(all.length >= 3 && all[0].queryParams.resume === undefined);
    assert.equal(all[all.length - 1].queryParams.resume, "proxy-ttl-key");
    await closeAndWait(client);
  });

  it("RTN19a: an unacked message is sent again after the resume", async function () {
    session = await createProxySession({ rules: [{ match: { type: "ws_frame_to_client", action: "ACK", count: 1 },
                                                   action: { type: "suppress" }, times: 1 }] });
    const client = realtime(session);
    client.connect();
    await waitFor(client.connection, "connected");
    const channel = client.channels.get(channelName("resend"));
    await channel.attach();
    const published = channel.publish("event", "test-data");
    await pollUntil(async () => {
      const log = await session.getLog();
      return frames(log, "client_to_server", 15).length > 0 &&
             frames(log, "server_to_client", 1).some((e) => e.ruleMatched);
    });
    await session.triggerAction({ type: "close" });
    await waitFor(client.connection, "disconnected", 10000);
    await waitFor(client.connection, "connected");
    await published;
    const log = await session.getLog();
    assert.ok(connects(log)[1].queryParams.resume);
    assert.ok(frames(log, "client_to_server", 15).length >= 2);
    await closeAndWait(client);
  });

  it("RTN16d/RTN16k: a recovered connection keeps its id and gets a new key", async function () {
    const first = await createProxySession({ rules: [] });
    const client1 = realtime(first);
    client1.connect();
    await waitFor(client1.connection, "connected");
    const [id, key] = [client1.connection.id, client1.connection.key];
    await client1.channels.get(channelName("recovery")).attach();
    const recoveryKey = client1.connection.createRecoveryKey();
    await first.triggerAction({ type: "close" });
    await waitFor(client1.connection, "disconnected", 10000);
    client1.connection.close();
    await waitFor(client1.connection, "closed", 10000);
    await first.close();
    session = await createProxySession({ rules: [] });
    const client2 = realtime(session, { recover: recoveryKey });
    client2.connect();
    await waitFor(client2.connection, "connected");
    assert.equal(client2.connection.id, id);
    assert.notEqual(client2.connection.key, key);
    const [connect] = connects(await session.getLog());
    assert.equal(connect.queryParams.recover, key);
    assert.equal(connect.queryParams.resume, undefined);
    assert.equal(client2.connection.errorReason, null);
    await closeAndWait(client2);
  });

  it("RTN16l: a failed recovery (the CONNECTED replaced) is a fresh connection", async function () {
    session = await createProxySession({ rules: [
      { match: { type: "ws_frame_to_client", action: "CONNECTED", count: 1 }, times: 1,
        action: { type: "replace", message: { action: 4, connectionId: "recovery-failed-id",
          connectionKey: "recovery-failed-key", connectionDetails: details("recovery-failed-key", 120000),
          error: { code: 80008, statusCode: 400, message: "Unable to recover connection" } } } },
    ] });
    const recover = JSON.stringify({ connectionKey: "stale-old-key", msgSerial: 99, channelSerials: { old: "serial" } });
    const client = realtime(session, { recover });
    client.connect();
    await waitFor(client.connection, "connected");
    assert.equal(client.connection.id, "recovery-failed-id");
    assert.equal(client.connection.key, "recovery-failed-key");
    assert.equal(client.connection.errorReason.code, 80008);
    assert.equal(connects(await session.getLog())[0].queryParams.recover, "stale-old-key");
    await closeAndWait(client);
  });
});

describe("heartbeat", function () {
  it("RTN23a: starving the client (suppress_onwards after 2 s) disconnects it, and it reconnects", async function () {
    session = await createProxySession({ rules: [{ match: { type: "delay_after_ws_connect", delayMs: 2000 },
                                                   action: { type: "suppress_onwards" }, times: 1 }] });
    const client = realtime(session, { realtimeRequestTimeout: 2000 });
    const states = record(client.connection);
    client.connect();
    await waitFor(client.connection, "connected");
    await waitFor(client.connection, "disconnected", 45000);
    await waitFor(client.connection, "connected", 30000);
    const disconnected = states.indexOf("disconnected");
    assert.ok(states.indexOf("connected") < disconnected && states.lastIndexOf("connected") > disconnected);
    const log = await session.getLog();
    assert.ok(connects(log).length >= 2 && connects(log)[1].queryParams.resume);
    await closeAndWait(client);
  });
});

describe("rest_faults", function () {
  function rest(options = {}, counter = null) {
    return new Ably.Rest({
      authCallback: (_params, cb) => {
        if (counter) counter.count += 1;
        new Ably.Rest({ key: KEY, ...FAKE }).auth.requestToken().then((token) => cb(null, token), (err) => cb(err));
      },
      endpoint: "localhost", port: session.proxyPort, tls: false, useBinaryProtocol: false, ...options,
    });
  }

  it("RSC10: a 401 40142 renews the token and the request is retried", async function () {
    session = await createProxySession({ rules: [{ match: { type: "http_request", pathContains: "/channels/" },
      action: { type: "http_respond", status: 401, body: { error: { code: 40142, statusCode: 401, message: "Token expired" } } },
      times: 1 }] });
    const counter = { count: 0 };
    await rest({}, counter).channels.get(channelName("renewal")).publish("event", "hello");
    assert.ok(counter.count >= 2);
    const log = await session.getLog();
    assert.ok(log.filter((e) => e.type === "http_request" && e.path?.includes("/channels/")).length >= 2);
    const responses = log.filter((e) => e.type === "http_response");
    assert.equal(responses[0].status, 401);
    assert.ok([200, 201].includes(responses[1].status));
  });

  it("RSC15m: a 503 is the caller's error when there are no fallback hosts", async function () {
    session = await createProxySession({ rules: [{ match: { type: "http_request", pathContains: "/channels/" },
      action: { type: "http_respond", status: 503, body: { error: { code: 50300, statusCode: 503, message: "unavailable" } } },
      times: 1 }] });
    await assert.rejects(rest().channels.get(channelName("503")).publish("event", "hello"),
                         (err) => err.code === 50300 && err.statusCode === 503);
    const log = await session.getLog();
    assert.equal(log.filter((e) => e.type === "http_request" && e.path?.includes("/channels/")).length, 1);
  });

  it("RTL6: a realtime publish is in the REST history, both through the proxy", async function () {
    session = await createProxySession({ rules: [] });
    const client = realtime(session);
    const history = new Ably.Rest({ authCallback: (_p, cb) => cb(null, jwt()), endpoint: "localhost",
                                    port: session.proxyPort, tls: false, useBinaryProtocol: false });
    const name = channelName("history");
    client.connect();
    await waitFor(client.connection, "connected");
    const channel = client.channels.get(name);
    await channel.attach();
    await channel.publish("test-msg", "hello world");
    await pollUntil(async () => (await history.channels.get(name).history()).items.length > 0, 10000, 300);
    const items = (await history.channels.get(name).history()).items;
    assert.equal(items.find((m) => m.name === "test-msg").data, "hello world");
    const log = await session.getLog();
    assert.ok(connects(log).length >= 1 && log.some((e) => e.type === "http_request"));
    await closeAndWait(client);
  });
});

describe("presence_reentry", function () {
  const lastEnter = (log, after = "") => {
    const sent = frames(log, "client_to_server", 14).filter((e) => e.timestamp > after);
    return sent[sent.length - 1];
  };

  it("RTP17i/RTP17g: an injected non-resumed ATTACHED makes the SDK enter again", async function () {
    session = await createProxySession({});
    const client = realtime(session, { clientId: "client-a" });
    client.connect();
    await waitFor(client.connection, "connected");
    const name = channelName("reenter");
    const channel = client.channels.get(name);
    await channel.attach();
    await channel.presence.enter("hello");
    const before = frames(await session.getLog(), "client_to_server", 14).length;
    await session.triggerAction({ type: "inject_to_client", message: { action: 11, channel: name, flags: 0,
                                  error: { code: 91001, statusCode: 500, message: "Continuity lost" } } });
    await pollUntil(async () => frames(await session.getLog(), "client_to_server", 14).length > before);
    const entered = lastEnter(await session.getLog()).message.presence[0];
    assert.deepEqual([entered.clientId, entered.data, entered.action], ["client-a", "hello", 2]);
    assert.equal(channel.state, "attached");
    await closeAndWait(client);
  });

  it("RTP17i: after a real disconnect and a non-resumed ATTACHED, the SDK enters again", async function () {
    const name = channelName("reenter-real");
    session = await createProxySession({ rules: [
      { match: { type: "delay_after_ws_connect", delayMs: 3000 }, action: { type: "close" }, times: 1 },
      { match: { type: "ws_frame_to_client", action: "ATTACHED", channel: name, count: 2 }, times: 1,
        action: { type: "replace", message: { action: 11, channel: name, flags: 0,
                                              error: { code: 91001, statusCode: 500, message: "Continuity lost" } } } },
    ] });
    const client = realtime(session, { clientId: "client-a" });
    client.connect();
    await waitFor(client.connection, "connected");
    const channel = client.channels.get(name);
    await channel.attach();
    await channel.presence.enter("hello");
    await waitFor(client.connection, "disconnected", 10000);
    await waitFor(client.connection, "connected");
    await waitFor(channel, "attached");
    let second = "";
    await pollUntil(async () => {
      const log = await session.getLog();
      second = connects(log)[1]?.timestamp ?? "9";
      return lastEnter(log, second) !== undefined;
    });
    const entered = lastEnter(await session.getLog(), second).message.presence[0];
    assert.deepEqual([entered.clientId, entered.data, entered.action], ["client-a", "hello", 2]);
    await closeAndWait(client);
  });
});

describe("channel_faults", function () {
  async function attached(options = {}, rules = []) {
    session = await createProxySession({ rules });
    const client = realtime(session, options);
    client.connect();
    await waitFor(client.connection, "connected");
    return client;
  }

  it("RTL4f: a suppressed ATTACH times out to SUSPENDED, and never reached the server", async function () {
    const name = channelName("RTL4f");
    const client = await attached({ realtimeRequestTimeout: 3000 }, [
      { match: { type: "ws_frame_to_server", action: "ATTACH", channel: name }, action: { type: "suppress" } }]);
    const channel = client.channels.get(name);
    const states = record(channel);
    await assert.rejects(channel.attach());
    assert.equal(channel.state, "suspended");
    assert.ok(states.indexOf("attaching") < states.indexOf("suspended"));
    assert.equal(client.connection.state, "connected");
    const toServer = frames(await session.getLog(), "client_to_server", 10).filter((e) => e.message.channel === name);
    assert.equal(toServer.length, 0);
    await closeAndWait(client);
  });

  it("RTL14: an ERROR instead of ATTACHED fails the channel", async function () {
    const name = channelName("RTL14-attach");
    const client = await attached({}, [{ match: { type: "ws_frame_to_client", action: "ATTACHED", channel: name }, times: 1,
      action: { type: "replace", message: { action: 9, channel: name,
                                            error: { code: 40160, statusCode: 403, message: "Not permitted" } } } }]);
    const channel = client.channels.get(name);
    await assert.rejects(channel.attach(), (err) => err.code === 40160);
    assert.equal(channel.state, "failed");
    assert.equal(channel.errorReason.statusCode, 403);
    assert.equal(client.connection.state, "connected");
    await closeAndWait(client);
  });

  it("RTL5f: a DETACH suppressed by a rule added later reverts the channel to ATTACHED", async function () {
    const name = channelName("RTL5f");
    const client = await attached({ realtimeRequestTimeout: 3000 });
    const channel = client.channels.get(name);
    await channel.attach();
    const states = record(channel);
    await session.addRules([{ match: { type: "ws_frame_to_server", action: "DETACH", channel: name },
                              action: { type: "suppress" } }], "prepend");
    await assert.rejects(channel.detach());
    assert.equal(channel.state, "attached");
    assert.ok(states.indexOf("detaching") < states.indexOf("attached"));
    await closeAndWait(client);
  });

  it("RTL13a: an injected DETACHED makes the channel attach again", async function () {
    const name = channelName("RTL13a");
    const client = await attached();
    const channel = client.channels.get(name);
    await channel.attach();
    const states = record(channel);
    await session.triggerAction({ type: "inject_to_client", message: { action: 13, channel: name,
                                  error: { code: 90198, statusCode: 500, message: "detached by server" } } });
    await waitFor(channel, "attached");
    assert.ok(states.indexOf("attaching") < states.indexOf("attached"));
    const attaches = frames(await session.getLog(), "client_to_server", 10).filter((e) => e.message.channel === name);
    assert.ok(attaches.length >= 2);
    await closeAndWait(client);
  });

  it("RTL14: an injected channel ERROR fails an attached channel", async function () {
    const name = channelName("RTL14-injected");
    const client = await attached();
    const channel = client.channels.get(name);
    await channel.attach();
    const states = record(channel);
    await session.triggerAction({ type: "inject_to_client", message: { action: 9, channel: name,
                                  error: { code: 40160, statusCode: 403, message: "Not permitted" } } });
    await waitFor(channel, "failed", 10000);
    assert.equal(channel.errorReason.code, 40160);
    assert.match(channel.errorReason.message, /Not permitted/);
    assert.deepEqual(states, ["failed"]);
    assert.equal(client.connection.state, "connected");
    await closeAndWait(client);
  });
});

describe("auth_reauth", function () {
  it("RTN22/RTC8a: an injected AUTH makes the SDK authorize again, in band", async function () {
    session = await createProxySession({ rules: [] });
    const counter = { count: 0 };
    const client = realtime(session, {}, counter);
    client.connect();
    await waitFor(client.connection, "connected");
    const [id, before] = [client.connection.id, counter.count];
    const states = record(client.connection);
    await session.triggerAction({ type: "inject_to_client", message: { action: 17 } });
    await pollUntil(() => counter.count > before, 15000);
    await pollUntil(async () => frames(await session.getLog(), "client_to_server", 17).some((e) => e.message.auth));
    assert.equal(counter.count, before + 1);
    assert.equal(client.connection.id, id);
    assert.deepEqual(states.filter((s) => s !== "connected"), []);
    await closeAndWait(client);
  });
});
