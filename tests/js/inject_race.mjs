// SPEC Part 9, "injection order", met the way a JavaScript suite meets it: the suite and ably-js in one
// Node process. Each trial injects an unsolicited DETACHED towards the client and, as soon as the
// injection is answered, checks that the SDK already holds it: the channel has left attached for
// attaching (UTS RTL13a; it may be attached again already, the fake server answers the re-attach fast). `VIA=method` injects with injectMessage; `VIA=rule` with a rule's inject,
// triggered by the SDK's own publish and awaited with waitForRule.
//
//   CONTROL_URL=ws://127.0.0.1:8001/ UPSTREAM=ws://127.0.0.1:PORT/ TRIALS=200 VIA=method node inject_race.mjs
// prints one JSON line: {"trials": n, "misses": m, "states": {...}}.
import WebSocket from "ws";
import Ably from "ably";

const trials = Number(process.env.TRIALS ?? 200);
const binary = process.env.FORMAT === "msgpack";

const control = new WebSocket(process.env.CONTROL_URL);
await new Promise((resolve, reject) => { control.once("open", resolve); control.once("error", reject); });
const pending = new Map();
const opened = [];
let nextId = 1;
control.on("message", (raw) => {
  const payload = JSON.parse(raw.toString());
  for (const msg of Array.isArray(payload) ? payload : [payload]) {
    if (!("method" in msg)) {
      const { resolve, reject } = pending.get(msg.id);
      pending.delete(msg.id);
      msg.error ? reject(new Error(`${msg.error.message} (${msg.error.code})`)) : resolve(msg.result);
    } else if (msg.method === "interceptedConnectionOpened") {
      opened.push(msg.params.connectionID);
    }
  }
});
const call = (method, params = {}) => new Promise((resolve, reject) => {
  const id = nextId++;
  pending.set(id, { resolve, reject });
  control.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
});

const session = await call("openSession", { mode: "direct", upstream: process.env.UPSTREAM });
await call("addRules", { rules: [{ match: {}, action: { type: "pass" } }] }); // no per-message dialogue
const host = `127.0.0.1:${session.proxyPort}`;
const client = new Ably.Realtime({
  key: "fakeApp.fakeKey:fakeSecret", endpoint: "127.0.0.1", port: session.proxyPort, tls: false,
  fallbackHosts: [], useBinaryProtocol: binary, connectivityCheckUrl: `http://${host}/is-the-internet-up.txt`,
  wsConnectivityCheckUrl: `ws://${host}/ws-up`, channelRetryTimeout: 300,
});
await new Promise((resolve) => client.connection.once("connected", resolve));
const connectionID = opened[opened.length - 1];

let misses = 0;
const states = {};
for (let trial = 0; trial < trials; trial++) {
  const name = `race-${trial}`;
  const channel = client.channels.get(name);
  await channel.attach();
  const changes = [];
  const listener = (change) => changes.push(change.current);
  channel.on(listener);
  await call("injectMessage", { connectionID, fromClient: false, message: { action: "DETACHED", channel: name } });
  const first = changes[0] ?? "none yet"; // checked synchronously, right after the await
  states[first] = (states[first] ?? 0) + 1;
  if (first !== "attaching") misses++;
  channel.off(listener);
  await new Promise((resolve) => (channel.state === "attached" ? resolve() : channel.once("attached", resolve)));
  await channel.detach();
}
client.close();
console.log(JSON.stringify({ trials, misses, states }));
await call("closeSession");
control.close();
