import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CleaveError } from '../../src/errors.js';

export interface LaunchOptions {
  /** Processes on this host; global ranks are `firstRank + local rank`. */
  nprocs: number;
  /** The whole world (all hosts). */
  worldSize?: number;
  firstRank?: number;
  masterAddr?: string;
  masterPort: number;
  /** Program and arguments every process runs (the same for all; ranks come from the environment). */
  command: string;
  args: readonly string[];
  /** Each rank's output goes to `rank-K.log` here; rank 0's is also shown. */
  logDir: string;
  /** After the first failure, how long the others get to stop before they are killed (ms). */
  graceMs?: number;
  env?: Readonly<Record<string, string>>;
  /** Rank 0's output as it comes (default: this process's stdout). */
  echo?: (chunk: string) => void;
  /** Aborting stops every process as a failure does (SIGTERM, then SIGKILL after `graceMs`). */
  signal?: AbortSignal;
}

export interface LaunchResult {
  /** Exit code by rank (all 0 on success). */
  codes: number[];
  logs: string[];
}

/**
 * Starts one process per local rank with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
 * LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), each logging to its own file, and waits for them.
 * When one fails (exits non-zero or is killed), the others are asked to stop (SIGTERM) and killed
 * after `graceMs`; the launch rejects naming the first rank that failed and its log. No child
 * outlives the launch.
 */
export function launchProcesses(o: LaunchOptions): Promise<LaunchResult> {
  if (!Number.isInteger(o.nprocs) || o.nprocs < 1) throw new CleaveError(`the number of processes must be a positive integer, got ${o.nprocs}`);
  const world = o.worldSize ?? o.nprocs, first = o.firstRank ?? 0;
  if (first + o.nprocs > world) throw new CleaveError(`ranks ${first}…${first + o.nprocs - 1} do not fit a world of ${world}`);
  mkdirSync(o.logDir, { recursive: true });
  const echo = o.echo ?? ((c: string) => void process.stdout.write(c));
  const grace = o.graceMs ?? 10_000;
  const logs = Array.from({ length: o.nprocs }, (_, k) => join(o.logDir, `rank-${first + k}.log`));
  const codes: (number | null)[] = new Array(o.nprocs).fill(null);
  const children: ChildProcess[] = [];
  let failed: { rank: number; why: string } | undefined;
  let killTimer: NodeJS.Timeout | undefined;

  return new Promise<LaunchResult>((resolve, reject) => {
    const stopOthers = (): void => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
      killTimer = setTimeout(() => {
        for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      }, grace);
      killTimer.unref();
    };
    const settle = (): void => {
      if (codes.some((c) => c === null)) return;
      if (killTimer) clearTimeout(killTimer);
      if (failed) reject(new CleaveError(`rank ${failed.rank} ${failed.why}; the other ranks were stopped (its log: ${logs[failed.rank - first]})`));
      else resolve({ codes: codes as number[], logs });
    };
    o.signal?.addEventListener('abort', () => {
      if (failed) return;
      failed = { rank: first, why: 'was stopped: the launch was interrupted' };
      stopOthers();
    }, { once: true });
    for (let k = 0; k < o.nprocs; k++) {
      const rank = first + k;
      const log = createWriteStream(logs[k]!);
      const child = spawn(o.command, o.args, {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          ...process.env, ...o.env, RANK: String(rank), WORLD_SIZE: String(world), LOCAL_RANK: String(k), LOCAL_WORLD_SIZE: String(o.nprocs),
          MASTER_ADDR: o.masterAddr ?? '127.0.0.1', MASTER_PORT: String(o.masterPort),
        },
      });
      children.push(child);
      for (const stream of [child.stdout!, child.stderr!]) {
        stream.setEncoding('utf8');
        stream.on('data', (chunk: string) => {
          log.write(chunk);
          if (rank === 0) echo(chunk);
        });
      }
      child.on('error', (e) => {
        failed ??= { rank, why: `could not start: ${e.message}` };
        codes[k] = -1;
        log.end();
        stopOthers();
        settle();
      });
      child.on('exit', (code, signal) => {
        codes[k] = code ?? 128;
        log.end();
        if ((code !== 0 || signal) && !failed) {
          failed = { rank, why: signal ? `was killed by ${signal}` : `exited with code ${code}` };
          stopOthers();
        }
        settle();
      });
    }
  });
}
