// Replays a HAR file in Chromium with Playwright's HAR router (a HAR consumer of Chromium's tooling):
//   node replay_har.mjs HAR URL [--chromium /usr/bin/chromium]
// Opens URL in a page whose requests are answered from the HAR only (anything not in it is aborted) and
// prints {"status": …, "body": "…"} as one JSON line.

import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: flags, positionals } = parseArgs({
  allowPositionals: true,
  options: { chromium: { type: 'string', default: '/usr/bin/chromium' } },
});
const [har, url] = positionals;
const browser = await chromium.launch({ executablePath: flags.chromium, headless: true, args: ['--no-sandbox'] });
try {
  const context = await browser.newContext();
  await context.routeFromHAR(har, { notFound: 'abort' });
  const page = await context.newPage();
  const response = await page.goto(url);
  console.log(JSON.stringify({ status: response.status(), body: await response.text() }));
} finally {
  await browser.close();
}
