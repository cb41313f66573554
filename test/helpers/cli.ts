import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { captureMain } from './capture.js';

const BIN = fileURLToPath(new URL('../../bin/cleave.js', import.meta.url));

export interface CliResult { code: number; stdout: string; stderr: string }

/** Runs the built CLI as a user would (`npm test` compiles it first), from `cwd` if given. */
export function cli(args: string[], cwd?: string): CliResult {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000, ...(cwd ? { cwd } : {}) });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Runs the CLI's `main` in this process on the TypeScript sources, with stdout and stderr captured:
 * the same code path as `cli` without a process start, for commands that end before any rank starts
 * (flag and path checks, compile, export). The signal handlers `main` installs are taken off again,
 * so an interrupt of the test worker is not caught by them.
 */
export async function cliInProcess(args: string[]): Promise<CliResult> {
  const { main } = await import('../../src/cli/main.js');
  const r = await captureMain(() => main(args));
  if (r.error !== undefined) throw r.error;
  return { code: r.code!, stdout: r.stdout, stderr: r.stderr };
}
