// Drives the real ably-js SDK for the Python tests (tests/ably_driver.py).
//
// Protocol: one JSON object per line on stdin (a command), one JSON object
// per line on stdout (an event). A command is {"id": N, "cmd": NAME, ...};
// its outcome is {"event": "result", "id": N, "ok": true, "value": ...} or
// {"event": "result", "id": N, "ok": false, "error": {code, statusCode, message}}.
// Other events arrive whenever the SDK reports something:
//   {"event": "state", current, previous, reason, retryIn}        connection state change
//   {"event": "update", reason}                                    connection update (e.g. reauth)
//   {"event": "channelState", channel, current, previous, reason, resumed}
//   {"event": "message", channel, name, data, binary, encoding, id, clientId, connectionId, timestamp}
//   {"event": "log", level, message}                               SDK log line (with logLevel)
// Commands: create {options}, connect, close, connection, attach/detach
// {channel}, subscribe {channel, name?}, publish {channel, name, data,
// binary?}, authorize {tokenParams?, authOptions?}, ping, exit.
// When stdin closes, the client is closed and the process exits.
//
// The commands themselves live in commands.mjs (shared with the browser's
// page.html); options are ClientOptions as JSON, plus "authCallbackTokens"
// (see there).

import Ably from 'ably';
import { createDriver } from './commands.mjs';
import { emit, readCommands } from './stdio.mjs';

const driver = createDriver({
  Ably,
  emit,
  toBase64: (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64'),
  fromBase64: (text) => Buffer.from(text, 'base64'),
  extraCommands: {
    exit: () => {
      setImmediate(shutdown);
      return null;
    },
  },
});

async function run(cmd) {
  emit({ event: 'result', id: cmd.id, ...(await driver.run(cmd)) });
}

let shuttingDown = false;

// Close the client, then exit once its WebSocket's closing handshake has had
// a moment (exiting at once would drop the TCP connection under it). Node may
// exit sooner by itself; REST keep-alive sockets would keep it alive longer.
async function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  lines.close();
  const exitSoon = (ms) => setTimeout(() => process.exit(0), ms).unref();
  exitSoon(3000);
  const closing = await driver.closeClient(3000);
  exitSoon(closing ? 200 : 0);
}

const lines = readCommands(run, shutdown);
