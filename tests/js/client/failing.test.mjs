// A test that fails on purpose (run only by tests/sdk/test_javascript_client.py): its trace must be written as
// JSONL and HAR under INTERCEPTION_TRACE_DIR and the paths named in the failure.
import assert from "node:assert/strict";
import Ably from "ably";

describe("a failing test", function () {
  it("expects an ACK the proxy drops", async function () {
    await this.interception.addRules({ rules: [{ match: { action: "ACK" }, action: { type: "drop" } }] });
    const client = new Ably.Realtime(this.interception.clientOptions({ key: "fakeApp.fakeKey:fakeSecret",
                                                                       useBinaryProtocol: false }));
    try {
      const channel = client.channels.get("room");
      const acked = await Promise.race([channel.publish("greeting", "hello").then(() => true),
                                        new Promise((resolve) => setTimeout(() => resolve(false), 500))]);
      assert.equal(acked, true, "the publish was not acknowledged");
    } finally {
      client.close();
    }
  });
});
