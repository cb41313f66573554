// A CLI that never silently does the wrong thing, as a process: model files compile from any folder
// and their bugs name their own lines; a closed pipe, Ctrl-C and SIGTERM end it quietly and say where
// training got to; --version and npm say nothing stray; the native build says what it skips or why it
// failed and notices an up-to-date addon; --json errors are one object on stdout.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'cleave.js');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const dir = mkdtempSync(join(tmpdir(), 'cleave-trust-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Environment without the variables that change what a command does here. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of ['NVCC', 'CLEAVE_SKIP_NATIVE', 'CI_REQUIRE_CUDA', 'CLEAVE_CUDA_ARCH', 'CLEAVE_FAIL_AT']) delete env[k];
  return { ...env, ...extra };
}

/** The CLI run from a folder of our choosing. */
function cleaveIn(cwd: string, args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8', timeout: 60_000, env: cleanEnv() });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until `ok()` holds; fails naming `what` after `ms`. */
async function waitFor(ok: () => boolean, what: string, ms = 30_000): Promise<void> {
  const t = Date.now();
  while (!ok()) {
    if (Date.now() - t > ms) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await sleep(25);
  }
}

/** A complete checkpoint (its manifest written last) is under `ck`. */
const hasCheckpoint = (ck: string) => existsSync(ck) && readdirSync(ck).some((d) => existsSync(join(ck, d, 'manifest.json')));

/** Resolves with the child's exit once it has exited (its code, its signal, the ms since `since`). */
function exited(child: ChildProcess, since: () => number): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  return new Promise((done) => {
    if (child.exitCode !== null || child.signalCode !== null) done({ code: child.exitCode, signal: child.signalCode, ms: 0 });
    else child.once('exit', (code, signal) => done({ code, signal, ms: Date.now() - since() }));
  });
}

/** Whether a process of this id still exists. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const INTERRUPTED = (ck: string, how: string) =>
  new RegExp(`${how} at step (\\d+) of 10000; the last complete checkpoint is (${ck.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/step-(\\d+)) \\(continue with --resume \\2\\)`);

let plan: string;
beforeAll(() => {
  // One small plan for every test that runs or prints one: the GPT fixture on 2 CPU ranks.
  plan = join(dir, 'gpt.plan');
  const r = cli(['compile', fixturePath('gpt'), '-p', '2', '-m', '2', '--batch', '4', '-o', plan]);
  expect(r.code, r.stderr).toBe(0);
}, 60_000);

describe('model files compile from anywhere', () => {
  const user = join(dir, 'user');
  const project = join(user, 'proj');
  const elsewhere = join(user, 'elsewhere');
  const buggyDir = join(user, 'buggy');
  for (const d of [project, elsewhere, buggyDir]) mkdirSync(d, { recursive: true });
  const model = (forward: string) => `import { nn } from 'cleave';

class Net extends nn.Module {
  fc1: nn.Linear;
  fc2: nn.Linear;
  cfg?: { inner?: { scale: number } };
  constructor() {
    super();
    this.fc1 = new nn.Linear(4, 8);
    this.fc2 = new nn.Linear(8, 3);
  }
  forward(x: nn.SymTensor): nn.SymTensor {
    ${forward}
  }
}
export default { model: new Net(), inputs: { x: { dtype: 'float32' as const, shape: ['N', 4] } }, loss: 'cross-entropy' as const };
`;
  writeFileSync(join(project, 'mymodel.ts'), model('return this.fc2.forward(this.fc1.forward(x).relu());'));
  const bug = 'const scale: number = this.cfg!.inner!.scale;';
  const buggy = model(`${bug}\n    return this.fc2.forward(this.fc1.forward(x).relu()).mul(scale);`);
  writeFileSync(join(buggyDir, 'mymodel.ts'), buggy);

  it('the repository\'s TypeScript example, from a folder outside the repository', () => {
    const out = join(user, 'mnist.plan');
    const r = cleaveIn(user, ['compile', join(ROOT, 'examples', 'mnist_model.ts'), '-m', '2', '-o', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^compiled .*examples\/mnist_model\.ts → .*mnist\.plan/m);
    expect(existsSync(out)).toBe(true);
  });

  it('a user\'s mymodel.ts importing \'cleave\', with no node_modules/cleave anywhere above it, compiled from another folder', () => {
    for (let d = project; d !== dirname(d); d = dirname(d)) expect(existsSync(join(d, 'node_modules', 'cleave')), d).toBe(false);
    const r = cleaveIn(elsewhere, ['compile', '../proj/mymodel.ts', '-p', '1', '-m', '2', '--batch', '4', '-o', 'out.plan']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^traced \.\.\/proj\/mymodel\.ts → out\.onnx/m);
    expect(existsSync(join(elsewhere, 'out.plan'))).toBe(true);
  });

  it('a bug in the model\'s forward names mymodel.ts:LINE:COL and the JavaScript error, exit 2, under --json one object on stdout', () => {
    const r = cleaveIn(buggyDir, ['compile', 'mymodel.ts', '-p', '1', '-m', '2', '-o', 'out.plan', '--json']);
    // Where the TypeScript reads a property of undefined: the source map gives its own line and column.
    const lines = buggy.split('\n');
    const line = lines.findIndex((l) => l.includes(bug)) + 1;
    const col = lines[line - 1]!.indexOf('inner') + 1;
    const message = `mymodel.ts:${line}:${col}: tracing the model's forward failed: TypeError: Cannot read properties of undefined (reading 'inner')`;
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`cleave: ${message}\n`);
    expect(r.stderr).not.toMatch(/internal error/);
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(r.stdout)).toEqual({ error: { message, exitCode: 2, internal: false } });
    expect(existsSync(join(buggyDir, 'out.plan'))).toBe(false);
  });
});

describe('--json errors', () => {
  it('are one JSON object on stdout with exit 2, for cleave\'s own errors and for bad flags', () => {
    for (const [args, message] of [
      [['run', join(dir, 'none.plan'), '--json'], `${join(dir, 'none.plan')}: no such file`],
      [['plan', 'print', 'x.plan', '--bogus', '--json'], 'unknown option \'--bogus\''],
    ] as const) {
      const r = cli([...args]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stdout.trim().split('\n')).toHaveLength(1);
      expect(JSON.parse(r.stdout)).toEqual({ error: { message, exitCode: 2, internal: false } });
    }
  });
});

describe('a closed pipe', () => {
  /** cleave's own exit status in a pipeline (pipefail off), and what the pipeline printed. */
  const piped = (cmd: string) => {
    const r = spawnSync('bash', ['-c', `set +o pipefail; ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} ${cmd}; echo "cleave exit \${PIPESTATUS[0]}" >&2`], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    const m = /^cleave exit (\d+)\n$/.exec(r.stderr.split('\n').slice(-2).join('\n'));
    return { status: m ? Number(m[1]) : -1, stdout: r.stdout, stderr: r.stderr.replace(/cleave exit \d+\n$/, '') };
  };

  it('ends the command quietly: no EPIPE stack, the exit status of SIGPIPE (or 0 where all was written first)', () => {
    // 75 KB of JSON, more than a pipe holds: head has gone before the last write, always.
    const big = piped(`plan print ${JSON.stringify(plan)} --json | head -1`);
    expect(big.stdout).toBe('{\n');
    expect(big.stderr).toBe('');
    expect(big.status).toBe(141);
    const small = piped(`inspect ${JSON.stringify(fixturePath('gpt'))} | head -1`);
    expect(small.stdout).toMatch(/^.*gpt\.onnx: ONNX IR \d+/);
    expect(small.stdout.split('\n')).toHaveLength(2);
    expect(small.stderr).toBe('');
    expect([0, 141]).toContain(small.status);
  });
});

describe('signals', () => {
  const runArgs = (ck: string) => ['run', plan, '--steps', '10000', '--save-every', '1', '--checkpoint-dir', ck];

  it('SIGTERM stops a run at once with 143, names the last complete checkpoint, and that checkpoint resumes', async () => {
    const ck = join(dir, 'ck-term');
    const child = spawn(process.execPath, [BIN, ...runArgs(ck)], { cwd: ROOT, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout!.resume();
    let sent = 0;
    const done = exited(child, () => sent);
    try {
      await waitFor(() => hasCheckpoint(ck) || child.exitCode !== null, `a checkpoint in ${ck}`);
      expect(child.exitCode, stderr).toBe(null);
      sent = Date.now();
      child.kill('SIGTERM');
      const e = await done;
      expect(e, stderr).toMatchObject({ code: 143, signal: null });
      expect(e.ms).toBeLessThan(5000);
      // The ranks were threads of this process: with it gone, none is left running.
      expect(alive(child.pid!)).toBe(false);
      const m = INTERRUPTED(ck, 'stopped by SIGTERM').exec(stderr);
      expect(m, stderr).not.toBeNull();
      const [, step, last, k] = m!;
      expect(Number(k)).toBeGreaterThanOrEqual(1);
      expect(Number(k)).toBeLessThanOrEqual(Number(step));
      expect(existsSync(join(last!, 'manifest.json'))).toBe(true);
      expect(stderr).not.toMatch(/Error|at .*\.js:\d+/);
      // What the message says to do works.
      const r = cli(['run', plan, '--resume', last!, '--steps', String(Number(k) + 1)]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`resuming at step ${k}\\b`));
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }, 60_000);

  const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;
  it.runIf(hasScript)('Ctrl-C on a terminal: 130, the cursor and line wrapping the progress bar hid are given back, then where it stopped', async () => {
    const ck = join(dir, 'ck-int');
    const pidFile = join(dir, 'int.pid');
    // util-linux script runs the CLI on a pseudo-terminal; the shell execs node, so $$ is node's pid.
    const cmd = `echo $$ > ${JSON.stringify(pidFile)}; exec ${[process.execPath, BIN, ...runArgs(ck)].map((a) => JSON.stringify(a)).join(' ')}`;
    const child = spawn('script', ['-qefc', cmd, '/dev/null'], { cwd: ROOT, env: cleanEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    let sent = 0;
    const done = exited(child, () => sent);
    let pid = 0;
    try {
      await waitFor(() => hasCheckpoint(ck) || child.exitCode !== null, `a checkpoint in ${ck}`);
      expect(child.exitCode, out).toBe(null);
      pid = Number(readFileSync(pidFile, 'utf8'));
      sent = Date.now();
      process.kill(pid, 'SIGINT');
      const e = await done;
      expect(e, out).toMatchObject({ code: 130 });
      expect(e.ms).toBeLessThan(5000);
      expect(alive(pid)).toBe(false);
      const text = out.replace(/\r/g, '');
      const hid = text.indexOf('\x1b[?25l');
      const unwrapped = text.indexOf('\x1b[?7l');
      expect(hid, 'the progress bar hid the cursor').toBeGreaterThanOrEqual(0);
      expect(unwrapped, 'the progress bar turned line wrapping off').toBeGreaterThanOrEqual(0);
      const shown = text.lastIndexOf('\x1b[?25h');
      const wrapped = text.lastIndexOf('\x1b[?7h');
      expect(shown, 'the cursor is shown again').toBeGreaterThan(hid);
      expect(wrapped, 'line wrapping is on again').toBeGreaterThan(unwrapped);
      const m = INTERRUPTED(ck, 'cleave: interrupted').exec(text);
      expect(m, text).not.toBeNull();
      expect(m!.index, 'the report comes after the bar is gone').toBeGreaterThan(Math.max(shown, wrapped));
      expect(Number(m![3])).toBeLessThanOrEqual(Number(m![1]));
    } finally {
      if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
      child.stdin!.end();
    }
  }, 60_000);
});

describe('versions and npm', () => {
  it('--version and -V print package.json\'s version', () => {
    for (const flag of ['--version', '-V']) {
      const r = cli([flag]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`${VERSION}\n`);
    }
  });

  it('npx cleave --version in the repository: the version and no npm warning (the project\'s config is clean)', () => {
    // Empty user and global npm configs: a warning left can only come from the project.
    const [user, global] = ['user.npmrc', 'global.npmrc'].map((f) => join(dir, f));
    for (const f of [user!, global!]) writeFileSync(f, '');
    const r = spawnSync('npx', ['cleave', '--version'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000, env: cleanEnv({ npm_config_userconfig: user!, npm_config_globalconfig: global! }) });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${VERSION}\n`);
    expect(r.stderr).not.toMatch(/npm warn|Unknown (project|user|env) config/i);
  });
});

describe('the native build', () => {
  // A copy of native/ (the script and its sources) beside a link to node_modules: what the build
  // writes lands in the copy, and no test ever runs the real nvcc.
  const copy = join(dir, 'native-copy');
  const script = join(copy, 'native', 'build.mjs');
  const fake = join(copy, 'fake-nvcc');
  beforeAll(() => {
    mkdirSync(join(copy, 'native'), { recursive: true });
    cpSync(join(ROOT, 'native', 'build.mjs'), script);
    cpSync(join(ROOT, 'native', 'src'), join(copy, 'native', 'src'), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules'));
    // Stands in for nvcc: "compiles" and "links" by creating the -o file.
    writeFileSync(fake, '#!/bin/sh\n[ "$1" = --version ] && exit 0\nwhile [ $# -gt 0 ]; do if [ "$1" = -o ]; then shift; : > "$1"; fi; shift; done\n');
    chmodSync(fake, 0o755);
  });
  const build = (env: Record<string, string>) => {
    const r = spawnSync(process.execPath, [script], { cwd: copy, encoding: 'utf8', timeout: 60_000, env: cleanEnv(env) });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };

  it('CLEAVE_SKIP_NATIVE=1: one line saying it skips, exit 0', () => {
    const r = build({ CLEAVE_SKIP_NATIVE: '1' });
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^cleave: CLEAVE_SKIP_NATIVE is set, skipping the CUDA addon[^\n]*\n$/);
  });

  it('an NVCC that cannot start: one failure naming it; exit 0, or 1 with CI_REQUIRE_CUDA', () => {
    const r = build({ NVCC: '/nonexistent' });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('cleave: the CUDA addon failed to build (NVCC=/nonexistent could not be started: ENOENT); the CPU backend still works\n');
    const ci = build({ NVCC: '/nonexistent', CI_REQUIRE_CUDA: '1' });
    expect(ci.code).toBe(1);
    expect(ci.stderr).toMatch(/NVCC=\/nonexistent could not be started/);
  });

  it('builds every source, then says the addon is up to date, then rebuilds only what includes a touched header', () => {
    const first = build({ NVCC: fake });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/building the CUDA addon \(native\/build\/cleave_cuda\.node\) with .*fake-nvcc .*: 8 sources/);
    expect(first.stdout).toMatch(/^cleave: built native\/build\/cleave_cuda\.node in /m);
    const again = build({ NVCC: fake });
    expect(again.code).toBe(0);
    expect(again.stdout).toBe('cleave: the CUDA addon is up to date (native/build/cleave_cuda.node; npm run build:native rebuilds it)\n');
    const now = Date.now() / 1000;
    utimesSync(join(copy, 'native', 'src', 'gemm.h'), now, now);
    const touched = build({ NVCC: fake });
    expect(touched.code, touched.stderr).toBe(0);
    expect(touched.stdout).toMatch(/: [1-7] of 8 sources/);
    expect(touched.stdout).toMatch(/\] gemm\.cpp /);
    expect(touched.stdout).not.toMatch(/\] kernels\.cu /);
    expect(build({ NVCC: fake }).stdout).toMatch(/is up to date/);
  });
});
