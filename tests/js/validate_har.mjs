// Validates a HAR file against the HAR 1.2 JSON Schema (har-validator, which uses har-schema and ajv):
//   node validate_har.mjs FILE
// Prints "valid" and exits 0, or prints each schema error (path and message) and exits 1.

import { readFile } from 'node:fs/promises';
import validator from 'har-validator/lib/promise.js';

const file = process.argv[2];
const har = JSON.parse(await readFile(file, 'utf8'));
try {
  await validator.har(har);
  console.log('valid');
} catch (err) {
  for (const error of err.errors ?? [err]) {
    console.log(`${error.dataPath ?? error.instancePath ?? ''} ${error.message}`);
  }
  process.exit(1);
}
