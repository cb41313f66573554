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
  const { main } = await import('../../src/app/cli/main.js');
  const r = await captureMain(() => main(args));
  if (r.error !== undefined) throw r.error;
  return { code: r.code!, stdout: r.stdout, stderr: r.stderr };
}

const MAIN = new URL('../../dist/src/app/cli/main.js', import.meta.url).href;
const EACH = `import { main } from ${JSON.stringify(MAIN)};
const results = [];
const out = process.stdout.write.bind(process.stdout), err = process.stderr.write.bind(process.stderr);
for (const args of JSON.parse(process.env.CLEAVE_TEST_ARGS)) {
  let stdout = '', stderr = '';
  const capture = (add) => (chunk, ...rest) => { add(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8')); rest.find((x) => typeof x === 'function')?.(); return true; };
  process.stdout.write = capture((s) => { stdout += s; });
  process.stderr.write = capture((s) => { stderr += s; });
  let code;
  try { code = await main(args); } finally { process.stdout.write = out; process.stderr.write = err; }
  results.push({ code, stdout, stderr });
}
out(JSON.stringify(results));
`;

/**
 * Runs several CLI commands in one process of the built CLI (its \`main\` once per command, in
 * order, each command's stdout and stderr captured): for commands that end before any rank starts
 * and need what only a plain Node process gives (the model-module hooks of \`compile\` on a .mjs or
 * .ts file), one process start instead of one per command.
 */
export function cliEach(commands: string[][], cwd?: string): CliResult[] {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', EACH], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, CLEAVE_TEST_ARGS: JSON.stringify(commands) }, ...(cwd ? { cwd } : {}) });
  if (r.status !== 0) throw new Error(`cliEach: the process ended with ${r.status ?? r.signal}: ${r.stderr}`);
  return JSON.parse(r.stdout) as CliResult[];
}
