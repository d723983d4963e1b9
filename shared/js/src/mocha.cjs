"use strict";
// mocha --require ably-interception-client/mocha: every test gets a session of its own (this.interception),
// closed after the test; a failed test's trace is written as JSONL and HAR (INTERCEPTION_TRACE_DIR, default
// interception-traces/) and the paths are added to its failure. INTERCEPTION_MODE (default direct) and
// INTERCEPTION_UPSTREAM choose the session; INTERCEPTION_CONTROL_URL the control API.
const { openSession, attachTrace } = require("./client.cjs");

function sessionOptions() {
  const options = { mode: process.env.INTERCEPTION_MODE || "direct" };
  if (process.env.INTERCEPTION_UPSTREAM) options.upstream = process.env.INTERCEPTION_UPSTREAM;
  if (process.env.INTERCEPTION_PID) options.pid = Number(process.env.INTERCEPTION_PID);
  return options;
}

const mochaHooks = {
  async beforeEach() {
    this.interception = await openSession(sessionOptions());
  },
  async afterEach() {
    const suite = this.interception;
    this.interception = undefined;
    if (!suite) return;
    try {
      const test = this.currentTest;
      if (test && test.state === "failed" && test.err) await attachTrace(suite, test.err, test.fullTitle());
    } finally {
      await suite.close();
    }
  },
};

module.exports = { mochaHooks };
