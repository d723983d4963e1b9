// The browser bundle: one ES module file, importing nothing (ws and the Node-only trace writer stay out).
import { build } from "esbuild";

await build({
  entryPoints: [new URL("./index.mjs", import.meta.url).pathname],
  outfile: new URL("./dist/browser.mjs", import.meta.url).pathname,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2020"],
  external: ["ws", "node:*"],
  legalComments: "none",
  logLevel: "warning",
});
