// Rules from JavaScript (Node 18+, `npm install ws`): the proxy decides, the suite is asked only when a
// rule says "transform" (or no rule decides). Here: refuse the SDK's first connect with 503, drop the
// first ATTACHED, NACK every publish, and pass everything else without a round trip.
import WebSocket from "ws";

const ws = new WebSocket(process.env.CONTROL_URL ?? "ws://127.0.0.1:8001/");
const pending = new Map();
let nextId = 1;
const call = (method, params) =>
  new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
  });

ws.on("message", (raw) => {
  const payload = JSON.parse(raw.toString());
  for (const msg of Array.isArray(payload) ? payload : [payload]) { // notifications may come as a batch
    if (!("method" in msg)) {
      const { resolve, reject } = pending.get(msg.id);
      pending.delete(msg.id);
      msg.error ? reject(new Error(`${msg.error.message} (${msg.error.code})`)) : resolve(msg.result);
    } else if (msg.method === "ruleMatched") {
      console.log(JSON.stringify({ matched: msg.params.ruleId, event: msg.params.event }));
    }
  }
});

ws.on("open", async () => {
  await call("startInterception", process.env.MODE ? { mode: process.env.MODE } : {});
  const { ids } = await call("addRules", {
    rules: [
      { id: "refuse", match: { event: "connect" }, action: [{ type: "refuse", status: 503 }, { type: "notify" }],
        times: 1 },
      { id: "no-attached", match: { action: "ATTACHED", fromClient: false }, action: { type: "drop" }, times: 1 },
      { id: "nack", match: { action: "ACK" },
        action: { type: "replace", message: { action: "NACK", msgSerial: 0, count: 1,
                                              error: { code: 50001, statusCode: 500, message: "by a rule" } } } },
      { match: {}, action: { type: "pass" } }, // the rest: no round trip to this suite
    ],
  });
  console.log(JSON.stringify({ ready: ids }));
  const { matched } = await call("waitForRule", { id: "no-attached", timeoutMs: 20000 });
  console.log(JSON.stringify({ attachedDropped: matched }));
  const { rules } = await call("listRules", {});
  console.log(JSON.stringify({ listed: rules.map((r) => [r.id, r.matched, r.remaining]) }));
});
