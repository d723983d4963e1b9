// node:test with withSession (SPEC Part 7): a session of its own for the test, closed after it; the result of
// the function is what withSession resolves with. Run by tests/sdk/test_javascript_client.py with `node --test`.
import assert from "node:assert/strict";
import { test } from "node:test";
import Ably from "ably";
import { withSession, rules, InterceptionError } from "ably-interception-client";

const upstream = process.env.INTERCEPTION_UPSTREAM;

test("a refused first connect, then a NACKed publish", async () => {
  const code = await withSession({ mode: "direct", upstream }, async (suite) => {
    await suite.addRules({ rules: [
      rules.refuseConnect({ path: "/" }, { status: 503 }),
      rules.replaceWith({ action: "ACK" }, { message: { action: "NACK", msgSerial: 0, count: 1,
                                                        error: { code: 50001, statusCode: 500, message: "no" } } }),
    ] });
    const client = new Ably.Realtime(suite.clientOptions({ key: "fakeApp.fakeKey:fakeSecret",
                                                           disconnectedRetryTimeout: 300 }));
    try {
      const error = await client.channels.get("room").publish("greeting", "hi").catch((err) => err);
      return error.code;
    } finally {
      client.close();
    }
  });
  assert.equal(code, 50001);
});

test("a bad parameter rejects with an InterceptionError carrying the JSON-RPC code", async () => {
  await withSession({ mode: "direct", upstream }, async (suite) => {
    const error = await suite.getTrace({ sinse: 1 }).catch((err) => err);
    assert.ok(error instanceof InterceptionError);
    assert.equal(error.code, -32602);
    assert.match(error.message, /unknown parameter 'sinse'/);
  });
});

test("the dialogue over msgpack with a window: bytes, not Base64, and every message in order", async () => {
  const seen = [];
  const code = await withSession({ mode: "direct", upstream, encoding: "msgpack", window: 8 }, async (suite) => {
    assert.equal(suite.encoding, "msgpack");
    suite.intercept(async (message) => {
      seen.push({ bytes: message.data instanceof Uint8Array, action: message.action, type: message.type });
      if (message.action === "ACK") {
        return { message: { action: "NACK", msgSerial: message.message.msgSerial, count: 1,
                            error: { code: 50002, statusCode: 500, message: "no" } } };
      }
      return undefined;
    });
    const client = new Ably.Realtime(suite.clientOptions({ key: "fakeApp.fakeKey:fakeSecret" }));
    try {
      const error = await client.channels.get("room").publish("greeting", "hi").catch((err) => err);
      return error.code;
    } finally {
      client.close();
    }
  });
  assert.equal(code, 50002);
  assert.ok(seen.length >= 3, JSON.stringify(seen));
  assert.ok(seen.every((s) => s.type !== "binary" || s.bytes), JSON.stringify(seen));
  assert.ok(seen.some((s) => s.type === "binary"), JSON.stringify(seen));
});
