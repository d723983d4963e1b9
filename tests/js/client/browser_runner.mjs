// Runs client/browser.html in headless Chromium (Debian's) and prints the page's result as one JSON line.
//   CONTROL_URL=ws://127.0.0.1:8001/ UPSTREAM=ws://127.0.0.1:PORT/ FORMAT=json node client/browser_runner.mjs
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { once } from "node:events";
import { chromium } from "playwright-core";

const FILES = {
  "/browser.html": { url: new URL("./browser.html", import.meta.url), type: "text/html; charset=utf-8" },
  "/browser.mjs": { url: new URL("../node_modules/ably-interception-client/dist/browser.mjs", import.meta.url),
                    type: "text/javascript" },
  "/ably.js": { url: new URL("../node_modules/ably/build/ably.js", import.meta.url), type: "text/javascript" },
};

const server = createServer(async (request, response) => {
  const file = FILES[new URL(request.url, "http://page").pathname];
  if (!file) {
    response.writeHead(404).end();
    return;
  }
  response.writeHead(200, { "content-type": file.type }).end(await readFile(file.url));
});
server.listen(0, "127.0.0.1");
await once(server, "listening");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  await page.goto(`http://127.0.0.1:${server.address().port}/browser.html`);
  await page.waitForFunction(() => window.ready === true, null, { timeout: 15000 });
  const result = await page.evaluate((options) => window.runScenario(options), {
    controlUrl: process.env.CONTROL_URL, upstream: process.env.UPSTREAM, binary: process.env.FORMAT === "msgpack",
  });
  console.log(JSON.stringify({ ...result, pageErrors: errors }));
} finally {
  await browser.close();
  server.close();
}
