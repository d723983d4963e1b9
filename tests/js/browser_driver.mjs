// Drives ably-js's browser bundle in headless Chromium for the Python tests
// (tests/ably_driver.py), speaking the same JSON-lines protocol as driver.mjs:
// commands on stdin, events and results on stdout, diagnostics on stderr.
//
//   node browser_driver.mjs [--proxy-server http://127.0.0.1:PORT] [--chromium /usr/bin/chromium]
//
// With --proxy-server, every request of the browser goes through that proxy,
// loopback included (Chromium bypasses proxies for loopback unless told
// "<-loopback>"); WebSockets go as CONNECT tunnels, as in any browser.
//
// The page (page.html, the commands.mjs it imports and
// node_modules/ably/build/ably.js) comes from a small HTTP server of this
// process on 127.0.0.1 (fetched through the proxy too, which passes plain
// HTTP on untouched), a real one: Chromium's Local Network Access checks
// block a page without a loopback address (one made by request interception,
// say) from opening ws://127.0.0.1. The page's origin is not the SDK's
// endpoint, so ably-js's REST requests (auth.authorize, the HTTP connectivity
// check of a slow connection) are cross-origin, and fail against a server
// that sends no CORS headers, as the fake Ably server does.
//
// When stdin closes, the client is closed, then the browser, then the
// process exits. If this process dies anyway, Playwright's exit handler (or,
// on SIGKILL, the closed --remote-debugging-pipe) takes Chromium with it.

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { errorInfo } from './commands.mjs';
import { emit, readCommands } from './stdio.mjs';

const { values: flags } = parseArgs({
  options: {
    'proxy-server': { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
  },
});

const FILES = {
  '/page.html': { url: new URL('./page.html', import.meta.url), type: 'text/html; charset=utf-8' },
  '/commands.mjs': { url: new URL('./commands.mjs', import.meta.url), type: 'text/javascript' },
  '/ably.js': { url: new URL('./node_modules/ably/build/ably.js', import.meta.url), type: 'text/javascript' },
};

// A loopback URL nothing listens on (port 1, tcpmux).
const NOWHERE = 'http://127.0.0.1:1/';

let shuttingDown = false;

function log(text) {
  process.stderr.write(`browser_driver: ${text}\n`);
}

function chromiumArgs() {
  const args = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    // Keep the browser's own traffic on loopback. These requests would go
    // through the proxy to the internet: on-demand component downloads (the
    // optimization guide's on-device model manifest ignores
    // --disable-component-update) and, with the API keys Debian's wrapper
    // exports, Google account look-ups. Both are pointed at a closed port.
    `--component-updater=url-source=${NOWHERE}`,
    `--gaia-url=${NOWHERE}`,
  ];
  if (flags['proxy-server']) {
    args.push(`--proxy-server=${flags['proxy-server']}`, '--proxy-bypass-list=<-loopback>');
  }
  return args;
}

async function servePage() {
  const server = createServer(async (request, response) => {
    const file = FILES[new URL(request.url, 'http://page').pathname];
    if (!file) {
      response.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(file.url);
      response.writeHead(200, { 'Content-Type': file.type, 'Cache-Control': 'no-store' }).end(body);
    } catch (err) {
      log(`cannot serve ${request.url}: ${err}`);
      response.writeHead(500).end();
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

async function launch() {
  const server = await servePage();
  const browser = await chromium.launch({ executablePath: flags.chromium, headless: true, args: chromiumArgs() });
  browser.on('disconnected', () => {
    if (shuttingDown) return;
    log('Chromium went away');
    process.exit(1);
  });
  const page = await browser.newPage();
  page.on('console', (message) => log(`[console.${message.type()}] ${message.text()}`));
  page.on('pageerror', (err) => log(`[page error] ${err.stack ?? err}`));
  await page.exposeFunction('__driverEmit', emit);
  await page.goto(`http://127.0.0.1:${server.address().port}/page.html`);
  return { server, browser, page };
}

const ready = launch();
ready.catch((err) => {
  log(`cannot start Chromium (${flags.chromium}) with the page: ${err.stack ?? err}`);
  process.exit(1);
});

async function run(cmd) {
  let outcome;
  try {
    if (cmd.cmd === 'exit') {
      setImmediate(shutdown);
      outcome = { ok: true, value: null };
    } else {
      const { page } = await ready;
      outcome = await page.evaluate((command) => window.ablyDriver.run(command), cmd);
    }
  } catch (err) {
    outcome = { ok: false, error: errorInfo(err) };
  }
  emit({ event: 'result', id: cmd.id, ...outcome });
}

// Close the client (its WebSocket's closing handshake included), then the
// browser; exit regardless after 4 s, which AblyDriver.stop waits for.
async function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  lines.close();
  setTimeout(() => process.exit(0), 4000).unref();
  try {
    const { server, browser, page } = await ready;
    await page.evaluate(() => window.ablyDriver.run({ cmd: 'shutdown', timeout: 2000 }));
    await browser.close();
    server.closeAllConnections();
    server.close();
  } catch (err) {
    log(`shutdown: ${err.stack ?? err}`);
  }
  process.exit(0);
}

const lines = readCommands(run, shutdown);
