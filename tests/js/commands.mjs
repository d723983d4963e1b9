// The driver commands on one ably-js Realtime client, shared by driver.mjs
// (Node) and page.html (the browser bundle in Chromium, see browser_driver.mjs).
// Plain ES module with no imports: the host passes in what differs.
//
//   const driver = createDriver({ Ably, emit, toBase64, fromBase64, extraCommands });
//   await driver.run({ cmd: 'attach', channel: 'room' });   // → {ok: true, value} or {ok: false, error}
//
// - Ably: the SDK's namespace (the 'ably' package, or window.Ably);
// - emit(event): sends an event to the Python side (driver.mjs documents them);
// - toBase64(Uint8Array) → string, fromBase64(string) → what publish sends as binary data;
// - extraCommands: the host's own commands, {name: (cmd, driver) => value}.
//
// A failure resolves to {ok: false, error: {code, statusCode, message}} rather
// than rejecting: an ErrorInfo thrown across page.evaluate would lose its fields.
//
// Options are ClientOptions as JSON, plus "authCallbackTokens": a prefix;
// the client then gets an authCallback returning "<prefix>-1", "<prefix>-2", …

export function errorInfo(err) {
  if (!err) return null;
  return {
    code: err.code ?? null,
    statusCode: err.statusCode ?? null,
    message: String(err.message ?? err),
  };
}

export function createDriver({ Ably, emit, toBase64, fromBase64, extraCommands = {} }) {
  let client = null;

  function wireData(data) {
    if (data instanceof ArrayBuffer) return { data: toBase64(new Uint8Array(data)), binary: true };
    if (ArrayBuffer.isView(data)) {
      return { data: toBase64(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)), binary: true };
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

  // Closes the client and resolves once it is closed or failed (true), at once
  // if it never connected or is closed already (false), or after ms (true).
  function closeClient(ms) {
    if (!client || ['closed', 'failed', 'initialized'].includes(client.connection.state)) {
      return Promise.resolve(false);
    }
    return new Promise((resolve) => {
      setTimeout(resolve, ms, true);
      client.connection.once('closed', () => resolve(true));
      client.connection.once('failed', () => resolve(true));
      client.close();
    });
  }

  const driver = { run, closeClient };

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
      const data = cmd.binary ? fromBase64(cmd.data) : cmd.data;
      await channel(cmd.channel).publish(cmd.name ?? null, data);
      return null;
    },
    authorize: async (cmd) => {
      const details = await requireClient().auth.authorize(cmd.tokenParams, cmd.authOptions);
      return { token: details?.token ?? null, clientId: details?.clientId ?? null };
    },
    ping: async () => requireClient().connection.ping(),
    time: async () => requireClient().time(), // a REST request: GET /time
    request: async (cmd) => { // any REST request, e.g. a REST publish: POST /channels/<name>/messages
      const r = await requireClient().request(cmd.method, cmd.path, cmd.version ?? 3, cmd.params ?? null,
        cmd.body ?? null, cmd.headers ?? null);
      return { statusCode: r.statusCode, success: r.success, items: r.items ?? null };
    },
    ...extraCommands,
  };

  async function run(cmd) {
    try {
      const handler = commands[cmd.cmd];
      if (!handler) throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
      return { ok: true, value: (await handler(cmd, driver)) ?? null };
    } catch (err) {
      return { ok: false, error: errorInfo(err) };
    }
  }

  return driver;
}
