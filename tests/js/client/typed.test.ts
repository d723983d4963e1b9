// A user's TypeScript test file: must pass `tsc --strict` against the package's declarations.
import { openSession, rules, InterceptionError, type Intercepted, type Suite } from "ably-interception-client";
import "ably-interception-client/mocha";

describe("typed", function () {
  it("uses this.interception", async function () {
    const suite: Suite = this.interception;
    const [id] = (await suite.addRules({ rules: [rules.drop({ action: "ACK" }, { times: 1 })] })).ids;
    const { matched } = await suite.waitForRule(id, { count: 1, timeoutMs: 100 });
    const n: number = matched;
    suite.intercept((msg: Intercepted) => (msg.action === "NACK" ? { drop: true } : undefined));
    suite.on("connectionOpened", (opened) => console.log(opened.query.format, opened.upstream));
    const message = await suite.waitForMessage({ fromClient: false, action: ["ACK", "NACK"] });
    console.log(message?.action, n);
    await suite.inject({ fromClient: false, message: { action: "HEARTBEAT" } });
  });

  it("opens a session of its own", async function () {
    const other = await openSession({ mode: "direct", upstream: "ws://127.0.0.1:9/" });
    const options = other.clientOptions({ key: "a.b:c" });
    const port: number = options.port;
    try {
      await other.expectNoMessage({ action: "MESSAGE" }, { withinMs: 10 });
    } catch (err) {
      if (err instanceof InterceptionError) console.log(err.code, err.data, port);
    } finally {
      await other.close();
    }
  });
});
