// Child processes with a wall-clock bound and a memory bound: a hang is a run still going at the
// bound (its whole process group is killed), a memory blow-up a resident set above the limit (read
// from /proc while it runs: typed arrays live outside the V8 heap that --max-old-space-size bounds)
// or V8's own out-of-memory abort.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: found upward from this file, so that it works from test/fuzz and from dist/test/fuzz. */
export function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(d, 'bin', 'cleave.js')) && existsSync(join(d, 'package.json'))) return d;
    const up = dirname(d);
    if (up === d) throw new Error('fuzz: cannot find the repository root (bin/cleave.js) above ' + fileURLToPath(import.meta.url));
    d = up;
  }
}

export const CLEAVE_BIN = (): string => join(repoRoot(), 'bin', 'cleave.js');

export interface Bounds {
  /** Wall-clock limit in milliseconds. */
  timeoutMs: number;
  /** Resident-set limit in MiB (the process is killed above it). */
  maxRssMb: number;
  /** V8 heap limit passed as --max-old-space-size. */
  heapMb: number;
}

export const DEFAULT_BOUNDS: Bounds = { timeoutMs: 20_000, maxRssMb: 1536, heapMb: 1024 };

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Killed for a resident set above the limit. */
  rssKilled: boolean;
  peakRssMb: number;
  ms: number;
}

/** Keeps the first and last part of a long output: enough to classify, without holding megabytes. */
const KEEP = 256 * 1024;
function collector(): { add: (b: Buffer) => void; text: () => string } {
  let head = '', tail = '', dropped = 0;
  return {
    add(b) {
      const s = b.toString('utf8');
      if (head.length < KEEP) head += s;
      else {
        tail += s;
        if (tail.length > KEEP) { dropped += tail.length - KEEP; tail = tail.slice(-KEEP); }
      }
    },
    text: () => (dropped ? `${head}\n…[${dropped} characters left out]…\n${tail}` : head + tail),
  };
}

/** Resident set of a process in MiB, or 0 once it is gone. */
export function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** Runs `node [--max-old-space-size] script args` in its own process group, within the bounds. */
export function execNode(script: string, args: readonly string[], bounds: Bounds, cwd?: string, env?: NodeJS.ProcessEnv): Promise<ExecResult> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [`--max-old-space-size=${bounds.heapMb}`, script, ...args], {
    cwd, env: { ...process.env, ...env, NO_COLOR: '1', FORCE_COLOR: '0' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
  });
  const out = collector(), err = collector();
  child.stdout.on('data', out.add);
  child.stderr.on('data', err.add);
  let timedOut = false, rssKilled = false, peak = 0;
  const kill = (): void => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
  };
  const timer = setTimeout(() => { timedOut = true; kill(); }, bounds.timeoutMs);
  const poll = setInterval(() => {
    const r = rssMb(child.pid!);
    peak = Math.max(peak, r);
    if (r > bounds.maxRssMb) { rssKilled = true; kill(); }
  }, 50);
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearInterval(poll);
      resolve({ code, signal, stdout: out.text(), stderr: err.text(), timedOut, rssKilled, peakRssMb: Math.round(peak), ms: performance.now() - t0 });
    });
  });
}

/** Runs the CLI (bin/cleave.js, the build in dist/) as a user would. */
export function execCli(args: readonly string[], bounds: Bounds, cwd?: string): Promise<ExecResult> {
  return execNode(CLEAVE_BIN(), args, bounds, cwd);
}

/** A shell line that reproduces a CLI run (for the findings file). */
export function shellLine(args: readonly string[], bounds?: Bounds): string {
  const q = (a: string): string => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  return `node${bounds ? ` --max-old-space-size=${bounds.heapMb}` : ''} bin/cleave.js ${args.map(q).join(' ')}`;
}
