// The JavaScript client's cork (shared/js/src/client.cjs, Suite._write): with a window, the answers to the requests
// one read brought leave in one write, not a send() each; with window 1, a lone answer leaves at once. Run by
// tests/sdk/test_javascript_client.py with `node --test`, against a real app server and a `ws` upstream of its own.
import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocket, WebSocketServer } from "ws";
import { withSession } from "ably-interception-client";

async function quietUpstream() {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.on("listening", resolve));
  const received = [];
  server.on("connection", (ws) => ws.on("message", (data) => received.push(String(data))));
  return { server, received, url: `ws://127.0.0.1:${server.address().port}/` };
}

function countWrites(socket) {
  const counted = { writes: 0 };
  for (const name of ["_write", "_writev"]) {
    const original = socket[name];
    socket[name] = function (...args) {
      counted.writes += 1;
      return original.apply(this, args);
    };
  }
  return counted;
}

async function eightTogether(window) {
  const upstream = await quietUpstream();
  try {
    return await withSession({ mode: "direct", upstream: upstream.url, window }, async (suite) => {
      suite.intercept(() => undefined); // every message passed on unchanged
      const client = new WebSocket(`ws://127.0.0.1:${suite.proxyPort}/`);
      await new Promise((resolve, reject) => { client.on("open", resolve); client.on("error", reject); });
      const counted = countWrites(suite._ws._socket);
      const sent = [...Array(8).keys()].map((i) => `m${i}`);
      client._socket.cork(); // the eight frames reach the proxy in one write
      for (const data of sent) client.send(data);
      client._socket.uncork();
      for (let waited = 0; upstream.received.length < 8 && waited < 10000; waited += 10) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.deepEqual(upstream.received, sent);
      client.close();
      return counted.writes;
    });
  } finally {
    upstream.server.close();
  }
}

test("with a window, the answers to eight requests that came together leave in one write", async () => {
  assert.equal(await eightTogether(8), 1);
});

test("with window 1, each answer leaves on its own, at once", async () => {
  assert.equal(await eightTogether(1), 8);
});
