"use strict";
// A failed test's trace, written as JSON Lines and HAR under INTERCEPTION_TRACE_DIR (Node only).
const fs = require("node:fs/promises");
const path = require("node:path");

function traceDir() {
  return process.env.INTERCEPTION_TRACE_DIR || "interception-traces";
}

function fileName(name) {
  return String(name).replace(/[^A-Za-z0-9_.-]+/g, "_").replace(/^_+|_+$/g, "").slice(0, 180) || "trace";
}

/** Fetch the suite's trace as JSONL and HAR and write both; resolves with their absolute paths. */
async function writeTrace(suite, name) {
  const [{ data: jsonl }, { data: har }] = await Promise.all([
    suite.exportTrace({ format: "jsonl" }), suite.exportTrace({ format: "har" }),
  ]);
  const dir = path.resolve(traceDir());
  await fs.mkdir(dir, { recursive: true });
  const base = path.join(dir, fileName(name));
  const paths = { jsonl: `${base}.jsonl`, har: `${base}.har` };
  await fs.writeFile(paths.jsonl, jsonl);
  await fs.writeFile(paths.har, har);
  return paths;
}

module.exports = { writeTrace, traceDir };
