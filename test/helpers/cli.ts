import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/cleave.js', import.meta.url));

export interface CliResult { code: number; stdout: string; stderr: string }

/** Runs the built CLI as a user would (`npm test` compiles it first), from `cwd` if given. */
export function cli(args: string[], cwd?: string): CliResult {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000, ...(cwd ? { cwd } : {}) });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Runs the CLI's `main` in this process on the TypeScript sources, with stdout and stderr captured:
 * the same code path as `cli` without a process start, for commands that end before any rank starts
 * (flag and path checks, compile, export). The signal handlers `main` installs are taken off again,
 * so an interrupt of the test worker is not caught by them.
 */
export async function cliInProcess(args: string[]): Promise<CliResult> {
  const { main } = await import('../../src/cli/main.js');
  const before = new Map(SIGNALS.map((s) => [s, new Set(process.listeners(s))]));
  const out = process.stdout.write, err = process.stderr.write;
  let stdout = '', stderr = '';
  const capture = (add: (s: string) => void) => ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    add(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    const cb = rest.find((x) => typeof x === 'function') as (() => void) | undefined;
    cb?.();
    return true;
  }) as typeof process.stdout.write;
  process.stdout.write = capture((s) => void (stdout += s));
  process.stderr.write = capture((s) => void (stderr += s));
  let code: number;
  try {
    code = await main(args);
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
    for (const s of SIGNALS) for (const l of process.listeners(s)) if (!before.get(s)!.has(l)) process.off(s, l as (...a: unknown[]) => void);
  }
  return { code, stdout, stderr };
}
