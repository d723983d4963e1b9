// A session per test from JavaScript (Node 18+, `npm install ws`): each test opens its own session, points
// its SDK at the session's port (direct mode) or uses its mitmproxy listener as the SDK's proxy (proxy mode),
// and closes it at the end; a client left over from one test can never reach the next test's session.
import WebSocket from "ws";

async function openSession(controlUrl, params) {
  const ws = new WebSocket(controlUrl);
  await new Promise((resolve, reject) => { ws.once("open", resolve); ws.once("error", reject); });
  const pending = new Map();
  const events = [];
  let nextId = 1;
  ws.on("message", (raw) => {
    const payload = JSON.parse(raw.toString());
    for (const msg of Array.isArray(payload) ? payload : [payload]) {
      if (!("method" in msg)) {
        const { resolve, reject } = pending.get(msg.id);
        pending.delete(msg.id);
        msg.error ? reject(new Error(`${msg.error.message} (${msg.error.code})`)) : resolve(msg.result);
      } else if (msg.method === "transformInterceptedMessage") { // no rule decided: pass it on unchanged
        ws.send(JSON.stringify({ jsonrpc: "2.0", id: msg.id,
                                 result: { action: "replace", type: msg.params.type, data: msg.params.data } }));
      } else {
        events.push(msg); // interceptedConnectionOpened/Closed, ruleMatched: this session's only
      }
    }
  });
  const call = (method, callParams = {}) => new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params: callParams }));
  });
  const opened = await call("openSession", params); // { sessionID, proxyPort } or { sessionID, mitmproxyPort }
  return { ...opened, events, call, close: async () => { await call("closeSession", {}); ws.close(); } };
}

// One test: its own session, its SDK pointed at it (here the test's "SDK" is whatever connects to the port).
const session = await openSession(process.env.CONTROL_URL ?? "ws://127.0.0.1:8001/",
                                  { mode: "direct", upstream: process.env.UPSTREAM });
console.log(JSON.stringify({ sessionID: session.sessionID, proxyPort: session.proxyPort }));
const seen = async () => {
  while (!session.events.some((e) => e.method === "interceptedConnectionClosed")) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return session.events.map((e) => [e.method, e.params.path ?? e.params.closedBy]);
};
console.log(JSON.stringify({ events: await seen() }));
await session.close(); // the port stops accepting before this returns
console.log(JSON.stringify({ closed: session.sessionID }));
