// The seed's private-API list ("Outgoing" and "Incoming"), each need met through the proxy with
// ably-interception-client against the real ably-js, in JSON or msgpack (FORMAT=msgpack). Run by
// tests/sdk/test_javascript_client.py: mocha --require ably-interception-client/mocha, every test a session.
import assert from "node:assert/strict";
import Ably from "ably";
import { rules, FLAGS, decodeFrame } from "ably-interception-client";

const binary = process.env.FORMAT === "msgpack";
const clients = [];

/** ably-js pointed at this test's session (direct mode), with short timeouts. */
function realtime(suite, options = {}) {
  const host = `127.0.0.1:${suite.proxyPort}`;
  const client = new Ably.Realtime(suite.clientOptions({
    key: "fakeApp.fakeKey:fakeSecret", useBinaryProtocol: binary,
    connectivityCheckUrl: `http://${host}/is-the-internet-up.txt`, wsConnectivityCheckUrl: `ws://${host}/ws-up`,
    realtimeRequestTimeout: 1000, disconnectedRetryTimeout: 300, suspendedRetryTimeout: 500,
    channelRetryTimeout: 300, ...options,
  }));
  clients.push(client);
  return client;
}

const state = (emitter, name) => new Promise((resolve) => {
  if (emitter.state === name) resolve();
  else emitter.once(name, resolve);
});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const realtimePath = { path: "/" }; // the realtime connection, not ably-js's /ws-up check

afterEach(async function () {
  for (const client of clients.splice(0)) client.close();
});

describe("Outgoing", function () {
  it("checks a presence message's clientId", async function () {
    const client = realtime(this.interception);
    const channel = client.channels.get("room");
    await channel.presence.enterClient("alice", "here");
    const presence = await this.interception.waitForMessage({ fromClient: true, action: "PRESENCE" });
    assert.equal(presence.presence[0].clientId, "alice");
    assert.equal(presence.presence[0].data, "here");
  });

  it("checks the encoded data of a MESSAGE, and then continues the test", async function () {
    const seen = [];
    this.interception.intercept((msg) => {
      if (msg.fromClient && msg.action === "MESSAGE") seen.push(msg.message);
    });
    const client = realtime(this.interception);
    const channel = client.channels.get("room");
    await channel.publish("greeting", { hello: "world" }); // the dialogue let it through: the test goes on
    assert.equal(seen.length, 1);
    assert.equal(seen[0].messages[0].encoding, "json");
    assert.deepEqual(JSON.parse(seen[0].messages[0].data), { hello: "world" });
    assert.equal(seen[0].messages[0].name, "greeting");
  });

  it("looks for an outgoing AUTH and checks its properties", async function () {
    let n = 0;
    const client = realtime(this.interception, { authCallback: (params, callback) => callback(null, `token-${++n}`) });
    await state(client.connection, "connected");
    await client.auth.authorize();
    const auth = await this.interception.waitForMessage({ fromClient: true, action: "AUTH" });
    assert.equal(auth.auth.accessToken, "token-2");
  });

  it("sabotages the reattach attempt (the ATTACH is swallowed)", async function () {
    const client = realtime(this.interception);
    const channel = client.channels.get("room");
    await channel.attach();
    const [swallow] = (await this.interception.addRules({
      rules: [rules.drop({ fromClient: true, action: "ATTACH", channel: "room" }, { times: 1 })],
    })).ids;
    await this.interception.inject({ message: { action: "DETACHED", channel: "room" } });
    await this.interception.waitForRule(swallow);
    assert.equal(channel.state, "attaching"); // the reattach went nowhere
  });

  it("sees only DETACHes sent, and continues once the second DETACH is sent", async function () {
    const client = realtime(this.interception);
    const channel = client.channels.get("room");
    await channel.attach();
    const { since } = { since: (await this.interception.getTrace({})).next };
    await this.interception.addRules({ rules: [rules.drop({ fromClient: false, action: "DETACHED" }, { times: 1 })] });
    await assert.rejects(channel.detach()); // its DETACHED was dropped: the detach times out, attached again
    channel.detach().catch(() => {});
    await this.interception.waitForMessage({ fromClient: true, action: "DETACH" }, { count: 2, since });
    const sent = (await this.interception.getTrace({ since })).events
      .filter((e) => e.kind === "frame" && e.fromClient).map((e) => e.action);
    assert.deepEqual([...new Set(sent)], ["DETACH"]);
  });

  it("sets ATTACH_RESUME on the outgoing ATTACH, keeping its other flags", async function () {
    const [patched] = (await this.interception.addRules({
      rules: [rules.patch({ fromClient: true, action: "ATTACH" }, { flags: { set: ["ATTACH_RESUME"] } })],
    })).ids;
    const client = realtime(this.interception);
    await client.channels.get("room", { modes: ["SUBSCRIBE"] }).attach();
    const [frame] = (await this.interception.getTrace({})).events.filter((e) => e.ruleId === patched);
    const sent = decodeFrame({ type: frame.replacedBy.type, data: frame.replacedBy.data ?? frame.replacedBy.dataBase64 });
    assert.ok(sent.flags & FLAGS.ATTACH_RESUME, "ATTACH_RESUME set");
    assert.ok(sent.flags & FLAGS.SUBSCRIBE, "the mode flag kept");
  });

  it("checks the v= and format query parameters", async function () {
    realtime(this.interception);
    let opened = await this.interception.waitForConnection();
    while (opened.path !== "/") opened = await this.interception.waitForConnection(); // skip /ws-up
    assert.equal(opened.query.v, "6");
    assert.equal(opened.query.format, binary ? "msgpack" : "json");
    assert.ok(opened.upstream.startsWith("ws://127.0.0.1:"), opened.upstream);
  });

  it("simulates the internet being down", async function () {
    await this.interception.addRules({ rules: [
      rules.delayConnect({ path: "/" }, { ms: 30_000, times: 1 }), // the realtime connection hangs …
      rules.refuseConnect({ path: "/ws-up" }, { status: 502, times: null }), // … and both connectivity checks fail
      rules.httpDrop({ path: "/is-the-internet-up.txt" }, { id: "offline" }),
    ] });
    const client = realtime(this.interception, { webSocketSlowTimeout: 300 });
    await state(client.connection, "disconnected");
    await this.interception.waitForRule("offline");
    await this.interception.clearRules();
    await state(client.connection, "connected"); // back online
  });
});

describe("Incoming", function () {
  it("injects an ERROR (the connection fails)", async function () {
    const client = realtime(this.interception);
    await state(client.connection, "connected");
    await this.interception.inject({ message: { action: "ERROR", error: { code: 40000, statusCode: 400,
                                                                          message: "injected" } } });
    await state(client.connection, "failed");
    assert.equal(client.connection.errorReason.code, 40000);
  });

  it("injects a DISCONNECTED (the SDK reconnects)", async function () {
    const client = realtime(this.interception);
    await state(client.connection, "connected");
    const disconnected = new Promise((resolve) => client.connection.once("disconnected", resolve));
    await this.interception.inject({ message: { action: "DISCONNECTED", error: { code: 80003, statusCode: 500,
                                                                                 message: "injected" } } });
    await disconnected;
    await state(client.connection, "connected");
  });

  it("changes connectionDetails.maxMessageSize of the CONNECTED", async function () {
    await this.interception.addRules({ rules: [
      rules.patch({ action: "CONNECTED" }, { set: { "connectionDetails.maxMessageSize": 64 } }),
    ] });
    const client = realtime(this.interception);
    await state(client.connection, "connected"); // the SDK now holds the patched connectionDetails
    const channel = client.channels.get("room");
    await assert.rejects(channel.publish("big", "x".repeat(100)), (err) => err.code === 40009);
  });

  it("drops an ATTACHED (the attach times out, the retry succeeds)", async function () {
    await this.interception.addRules({ rules: [rules.drop({ action: "ATTACHED" }, { times: 1 })] });
    const client = realtime(this.interception);
    const channel = client.channels.get("room");
    await assert.rejects(channel.attach());
    await state(channel, "attached"); // channelRetryTimeout later
  });

  it("injects a PRESENCE after the SYNC", async function () {
    const client = realtime(this.interception);
    const channel = client.channels.get("room");
    await channel.attach();
    const carol = new Promise((resolve) => channel.presence.subscribe("enter", (m) => m.clientId === "carol" && resolve()));
    await this.interception.inject({ message: { action: "SYNC", channel: "room", channelSerial: "sync1:",
      presence: [{ clientId: "bob", connectionId: "other", action: 1, id: "other:0:0", timestamp: Date.now() }] } });
    await this.interception.inject({ message: { action: "PRESENCE", channel: "room",
      presence: [{ clientId: "carol", connectionId: "other2", action: 2, id: "other2:0:0", timestamp: Date.now() }] } });
    await carol; // the SDK decodes presence asynchronously: its enter event says it has processed it
    const members = await channel.presence.get({ waitForSync: true });
    assert.deepEqual(members.map((m) => m.clientId).sort(), ["bob", "carol"]);
  });

  it("drops an ACK (the publish waits, and succeeds after a resume)", async function () {
    const [noAck] = (await this.interception.addRules({ rules: [rules.drop({ action: "ACK" })] })).ids;
    const client = realtime(this.interception);
    const channel = client.channels.get("room");
    await channel.attach();
    let done = false;
    const publish = channel.publish("greeting", "hello").then(() => { done = true; });
    await this.interception.waitForRule(noAck);
    await sleep(300);
    assert.equal(done, false);
    await this.interception.removeRules({ ids: [noAck] });
    const [connection] = this.interception.connections.filter((c) => c.path === "/");
    await this.interception.closeConnection({ connectionID: connection.connectionID, abrupt: true });
    await publish; // resumed, resent, acknowledged
  });

  it("starves heartbeats (a short maxIdleInterval, nothing towards the client): the SDK disconnects", async function () {
    await this.interception.addRules({ rules: [
      rules.patch({ action: "CONNECTED" }, { set: { "connectionDetails.maxIdleInterval": 200 }, times: 1 }),
      rules.dropPings({ fromClient: false }),
      rules.drop({ fromClient: false, action: "HEARTBEAT" }),
    ] });
    const client = realtime(this.interception);
    await state(client.connection, "connected");
    const started = Date.now();
    await state(client.connection, "disconnected");
    assert.ok(Date.now() - started < 5000);
  });

  it("fixes the CONNECTED's connectionKey and clientId and sees them used", async function () {
    this.interception.intercept((msg) => {
      if (msg.action !== "CONNECTED") return undefined;
      assert.ok(msg.message.connectionDetails, "a CONNECTED has connectionDetails");
      const details = { ...msg.message.connectionDetails, connectionKey: "fixed-key", clientId: "fixed-client" };
      return { message: { ...msg.message, connectionKey: "fixed-key", connectionDetails: details } };
    });
    const client = realtime(this.interception);
    await state(client.connection, "connected");
    assert.equal(client.connection.key, "fixed-key");
    assert.equal(client.auth.clientId, "fixed-client");
  });

  it("listens for a MESSAGE and runs code in response", async function () {
    const client = realtime(this.interception);
    const channel = client.channels.get("room");
    await channel.subscribe(() => {});
    const waiting = this.interception.waitForMessage({ fromClient: false, action: "MESSAGE", channel: "room" });
    await channel.publish("greeting", "hi");
    const message = await waiting;
    assert.equal(message.messages[0].data, "hi");
    await this.interception.expectNoMessage({ fromClient: false, action: "MESSAGE" }, { withinMs: 200 });
  });
});
