#!/usr/bin/env node
// The CLI is compiled by `npm ci` (the prepare script); this shim only points at the build.
import { main } from '../dist/src/app/cli/main.js';

let settled = false;
// A command whose work still awaits something no one will do (a rank waiting on a closed channel)
// empties the event loop, and Node would end with code 0 as if it had succeeded.
process.on('exit', (code) => {
  if (settled || code !== 0) return;
  process.stderr.write('cleave: internal error: the command ended before its work finished (something it waited for can no longer happen)\n');
  process.exitCode = 1;
});
main(process.argv.slice(2)).then((code) => {
  settled = true;
  process.exitCode = code;
});
