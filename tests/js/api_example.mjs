// A test suite in JavaScript, speaking the control API directly (Node 18+):
//   npm install ws @msgpack/msgpack
// It drops every ACK the server sends, and greets each new connection with an
// injected message, encoded in that connection's own format (JSON or msgpack).
import WebSocket from "ws";
import { decode, encode } from "@msgpack/msgpack";

const ws = new WebSocket(process.env.CONTROL_URL ?? "ws://127.0.0.1:8001/");
const pending = new Map(); // our calls awaiting an answer, by id
let nextId = 1;
const call = (method, params) =>
  new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
  });

// Ably protocol messages: JSON in text frames, msgpack in binary frames (data is then Base64).
const decodeFrame = ({ type, data }) =>
  type === "text" ? JSON.parse(data) : decode(Buffer.from(data, "base64"));
const formats = new Map(); // connectionID → "json" | "msgpack", from the connection's query
const frameFor = (connectionID, message) =>
  formats.get(connectionID) === "msgpack"
    ? { type: "binary", data: Buffer.from(encode(message)).toString("base64") }
    : { type: "text", data: JSON.stringify(message) };

const ACK = 1;

ws.on("message", async (raw) => {
  const msg = JSON.parse(raw.toString());
  if (!("method" in msg)) { // the answer to one of our calls
    const { resolve, reject } = pending.get(msg.id);
    pending.delete(msg.id);
    return msg.error ? reject(new Error(`${msg.error.message} (${msg.error.code})`)) : resolve(msg.result);
  }
  const p = msg.params;
  if (msg.method === "transformInterceptedMessage") {
    let result = { action: "replace", type: p.type, data: p.data }; // pass it on unchanged
    if (!p.fromClient && decodeFrame(p).action === ACK) result = { action: "drop" };
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: msg.id, result }));
  } else if (msg.method === "interceptedConnectionOpened") {
    formats.set(p.connectionID, p.query.format ?? "json");
    console.log(JSON.stringify({ opened: p.url }));
    // towards the client (fromClient: false), as if the server had sent it
    const greeting = { action: 0, channel: "from-the-suite" }; // HEARTBEAT
    await call("injectMessage", { connectionID: p.connectionID, fromClient: false, ...frameFor(p.connectionID, greeting) });
  }
});

ws.on("open", async () => {
  // "proxy" or "local" (with pid) start mitmproxy; against an app server run with --no-mitmproxy
  // (direct mode) `{}` will do.
  await call("startInterception", process.env.MODE ? { mode: process.env.MODE } : {});
  console.log(JSON.stringify({ ready: true }));
});
ws.on("close", (code, reason) => console.log(JSON.stringify({ closed: code, reason: reason.toString() })));
