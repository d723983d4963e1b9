// uts-proxy's REST API as ably-js's test/uts/realtime/integration/helpers/proxy.ts drives it: the same
// requests, the same bodies, the same environment (PROXY_CONTROL_HOST or PROXY_CONTROL_PORT). Written here, so
// that our own suite proves the app server's --uts-port answers that helper's calls; it never downloads or
// starts a proxy: one must be listening.

const CONTROL_PORT = process.env.PROXY_CONTROL_PORT || "9100";
const CONTROL = process.env.PROXY_CONTROL_HOST || `http://localhost:${CONTROL_PORT}`;
// The hosts the helper targets; the app server's --route sends them to the local fake.
const SANDBOX_HOST = "sandbox.realtime.ably-nonprod.net";

async function failed(what, response) {
  return new Error(`${what} failed (${response.status}): ${await response.text()}`);
}

export class ProxySession {
  constructor(sessionId, proxyPort) {
    this.sessionId = sessionId;
    this.proxyHost = "localhost";
    this.proxyPort = proxyPort;
  }

  async addRules(rules, position = "append") {
    const response = await fetch(`${CONTROL}/sessions/${this.sessionId}/rules`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ rules, position }),
    });
    if (!response.ok) throw await failed("addRules", response);
  }

  async triggerAction(action) {
    const response = await fetch(`${CONTROL}/sessions/${this.sessionId}/actions`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(action),
    });
    if (!response.ok) throw await failed("triggerAction", response);
  }

  async getLog() {
    const response = await fetch(`${CONTROL}/sessions/${this.sessionId}/log`);
    if (!response.ok) throw await failed("getLog", response);
    return (await response.json()).events || [];
  }

  async close() {
    try {
      await fetch(`${CONTROL}/sessions/${this.sessionId}`, { method: "DELETE" });
    } catch {
      // as the helper: a failed cleanup is not the test's failure
    }
  }
}

export async function createProxySession(options = {}) {
  const body = { target: { realtimeHost: SANDBOX_HOST, restHost: SANDBOX_HOST }, rules: options.rules || [] };
  if (options.port) body.port = options.port;
  if (options.timeoutMs) body.timeoutMs = options.timeoutMs;
  const response = await fetch(`${CONTROL}/sessions`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!response.ok) throw await failed("createProxySession", response);
  const data = await response.json();
  return new ProxySession(data.sessionId, data.proxy?.port || options.port);
}

export async function waitForProxy() {
  const response = await fetch(`${CONTROL}/health`);
  if (!response.ok) throw new Error(`no uts-proxy API at ${CONTROL}: ${response.status}`);
}
