import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CleaveError } from '../../src/core/errors.js';

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
  /**
   * Every rank must say it finished (rankFinished, as cleave's ranks do); one ending with code 0
   * without saying so fails the launch. Off, only a rank that said it started (rankStarted) must.
   */
  requireFinished?: boolean;
}

/**
 * The file a rank's process says in how far it got ('started', then 'done'): set by launchProcesses
 * in each rank's environment. A rank that ends with code 0 but is not done has not finished its
 * steps (its event loop emptied, something called exit), and the launch fails naming it.
 */
export const RANK_STATUS = 'CLEAVE_RANK_STATUS';

const sayStatus = (what: 'started' | 'done'): void => {
  const file = process.env[RANK_STATUS];
  if (file) writeFileSync(file, `${what}\n`);
};
/** This process, a rank, has started its work: from now on ending without rankFinished is a failure. */
export const rankStarted = (): void => sayStatus('started');
/** This process, a rank, has finished every step. */
export const rankFinished = (): void => sayStatus('done');

function readStatus(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
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
  // A status left by an earlier launch into the same folder must not speak for this one's ranks.
  const statuses = Array.from({ length: o.nprocs }, (_, k) => join(o.logDir, `rank-${first + k}.status`));
  for (const f of statuses) rmSync(f, { force: true });
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
          MASTER_ADDR: o.masterAddr ?? '127.0.0.1', MASTER_PORT: String(o.masterPort), [RANK_STATUS]: statuses[k]!,
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
        let why = signal ? `was killed by ${signal}` : code !== 0 ? `exited with code ${code}` : undefined;
        if (!why) {
          // Code 0 is a success only from a rank that finished its steps.
          const status = readStatus(statuses[k]!);
          if (status === 'started') why = 'exited with code 0 before finishing its steps (it started and never said it was done)';
          else if (status !== 'done' && o.requireFinished) why = 'exited with code 0 without saying it finished its steps';
          if (why) codes[k] = 1;
        }
        if (why && !failed) {
          failed = { rank, why };
          stopOthers();
        }
        settle();
      });
    }
  });
}
