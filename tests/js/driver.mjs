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
// Options are ClientOptions as JSON, plus "authCallbackTokens": a prefix;
// the client then gets an authCallback returning "<prefix>-1", "<prefix>-2", …

import * as readline from 'node:readline';
import Ably from 'ably';

let client = null;

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function errorInfo(err) {
  if (!err) return null;
  return {
    code: err.code ?? null,
    statusCode: err.statusCode ?? null,
    message: String(err.message ?? err),
  };
}

function wireData(data) {
  if (Buffer.isBuffer(data) || data instanceof Uint8Array || data instanceof ArrayBuffer) {
    return { data: Buffer.from(data).toString('base64'), binary: true };
  }
  return { data: data ?? null, binary: false };
}

function requireClient() {
  if (!client) throw new Error('no client: send "create" first');
  return client;
}

function clientOptions(raw) {
  const { authCallbackTokens, ...options } = raw;
  if (authCallbackTokens !== undefined) {
    let count = 0;
    options.authCallback = (_tokenParams, callback) => callback(null, `${authCallbackTokens}-${++count}`);
  }
  if (options.logLevel !== undefined) {
    options.logHandler = (message) => emit({ event: 'log', message: String(message) });
  }
  return options;
}

function create(options) {
  if (client) throw new Error('a client exists already');
  client = new Ably.Realtime(clientOptions(options));
  client.connection.on((change) => {
    emit({
      event: change.current === change.previous ? 'update' : 'state',
      current: change.current,
      previous: change.previous,
      reason: errorInfo(change.reason),
      retryIn: change.retryIn ?? null,
    });
  });
  return null;
}

function channel(name) {
  const ch = requireClient().channels.get(name);
  if (!ch.__driverWatched) {
    ch.__driverWatched = true;
    ch.on((change) => {
      emit({
        event: 'channelState',
        channel: name,
        current: change.current,
        previous: change.previous,
        reason: errorInfo(change.reason),
        resumed: change.resumed ?? null,
      });
    });
  }
  return ch;
}

function onMessage(channelName) {
  return (message) => {
    emit({
      event: 'message',
      channel: channelName,
      name: message.name ?? null,
      ...wireData(message.data),
      encoding: message.encoding ?? null,
      id: message.id ?? null,
      clientId: message.clientId ?? null,
      connectionId: message.connectionId ?? null,
      timestamp: message.timestamp ?? null,
    });
  };
}

function connectionInfo() {
  const connection = requireClient().connection;
  return {
    id: connection.id ?? null,
    key: connection.key ?? null,
    state: connection.state,
    clientId: requireClient().auth.clientId ?? null,
    errorReason: errorInfo(connection.errorReason),
  };
}

const commands = {
  create: (cmd) => create(cmd.options ?? {}),
  connect: () => (requireClient().connect(), null),
  close: () => (requireClient().close(), null),
  connection: () => connectionInfo(),
  attach: async (cmd) => {
    const result = await channel(cmd.channel).attach();
    return { resumed: result?.resumed ?? null };
  },
  detach: async (cmd) => (await channel(cmd.channel).detach(), null),
  subscribe: async (cmd) => {
    const listener = onMessage(cmd.channel);
    if (cmd.name !== undefined) await channel(cmd.channel).subscribe(cmd.name, listener);
    else await channel(cmd.channel).subscribe(listener);
    return null;
  },
  publish: async (cmd) => {
    const data = cmd.binary ? Buffer.from(cmd.data, 'base64') : cmd.data;
    await channel(cmd.channel).publish(cmd.name ?? null, data);
    return null;
  },
  authorize: async (cmd) => {
    const details = await requireClient().auth.authorize(cmd.tokenParams, cmd.authOptions);
    return { token: details?.token ?? null, clientId: details?.clientId ?? null };
  },
  ping: async () => requireClient().connection.ping(),
  exit: () => {
    setImmediate(shutdown);
    return null;
  },
};

async function run(cmd) {
  try {
    const handler = commands[cmd.cmd];
    if (!handler) throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
    emit({ event: 'result', id: cmd.id, ok: true, value: (await handler(cmd)) ?? null });
  } catch (err) {
    emit({ event: 'result', id: cmd.id, ok: false, error: errorInfo(err) });
  }
}

let shuttingDown = false;

// Close the client, then exit once its WebSocket's closing handshake has had
// a moment (exiting at once would drop the TCP connection under it). Node may
// exit sooner by itself; REST keep-alive sockets would keep it alive longer.
function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  lines.close();
  const exitSoon = (ms) => setTimeout(() => process.exit(0), ms).unref();
  exitSoon(3000);
  if (!client || ['closed', 'failed', 'initialized'].includes(client.connection.state)) {
    exitSoon(0);
    return;
  }
  client.connection.once('closed', () => exitSoon(200));
  client.connection.once('failed', () => exitSoon(200));
  client.close();
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    emit({ event: 'result', id: null, ok: false, error: errorInfo(err) });
    return;
  }
  run(cmd);
});
lines.on('close', shutdown);
