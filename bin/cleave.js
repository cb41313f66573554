#!/usr/bin/env node
// The CLI is compiled by `npm ci` (the prepare script); this shim only points at the build.
import { main } from '../dist/src/cli/main.js';
main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
