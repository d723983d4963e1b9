// The JSON-lines side of the driver protocol, shared by driver.mjs and
// browser_driver.mjs: commands on stdin, events and results on stdout.

import * as readline from 'node:readline';
import { errorInfo } from './commands.mjs';

export function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

// Calls run(cmd) for each command line of stdin (a line that is not JSON gets
// a failed result with id null) and onClose() when stdin closes. Returns the
// readline interface, for the host to close when it shuts down.
export function readCommands(run, onClose) {
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
  lines.on('close', onClose);
  return lines;
}
