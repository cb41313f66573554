import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { type HostPhases, type RankTimes, measuredTrace } from '../../src/core/plan/measured.js';
import { writeFileAtomic } from '../../src/core/util/fs.js';
import { pairwisePorts } from '../transport/ports.js';
import { CleaveError } from '../../src/core/errors.js';
import type { Tensor } from '../../src/core/ir/tensor.js';
import { readPlan } from '../../src/core/plan/io.js';
import { randomUUID } from 'node:crypto';
import { type RunIdentity, cleanCheckpointDir, manifestFor, planSha256, writeManifest } from '../checkpoint/checkpoint.js';
import { instructionLabel } from '../executor/executor.js';
import { HEARTBEAT_MS, ProgressBoard } from '../executor/progress.js';
import { type PortableResume, announceResume, gatherCheckpoint, openCheckpoint } from '../checkpoint/resume.js';
import type { RunOptions, WorkerMessage } from './options.js';

export interface StepReport {
  step: number;
  /** SMP's reduce_mean: the mean loss over microbatches, averaged over data-parallel replicas. */
  loss: number;
  /** Per replica, per microbatch. */
  losses: number[][];
  gradNorm: number;
  lr: number;
  samples: number;
}

/** A step's report from each replica's microbatch losses: SMP's reduce_mean, then the replicas' mean. */
export function stepReport(step: number, perReplica: number[][], gradNorm: number, lr: number, samples: number): StepReport {
  const means = perReplica.map((l) => l.reduce((a, b) => a + b, 0) / l.length);
  return { step, loss: means.reduce((a, b) => a + b, 0) / means.length, losses: perReplica, gradNorm, lr, samples };
}

export interface RunResult {
  steps: StepReport[];
  weights?: Map<string, Tensor>;
  checkpoints: string[];
}

/** What each rank resumes from, its part of `dir` gathered by name; says once what cannot continue exactly. */
function resumeAll(dir: string, plan: ReturnType<typeof readPlan>): PortableResume[] {
  const ck = openCheckpoint(dir);
  const all = plan.ranks.map((r) => gatherCheckpoint(ck, plan, r.rank));
  announceResume(all[0]!);
  return all.map((g) => ({ step: g.step, tensors: [...g.tensors], optimizer: g.optimizer, rng: g.rng }));
}

/** An error that is a bug in cleave (the CLI says so, exit 1), carrying the failing rank's stack. */
function internalError(message: string, stack?: string): Error {
  const e = new Error(message);
  if (stack) e.stack = `${message}\n  in the rank: ${stack}`;
  return e;
}

/** The compiled worker script (tests run the TypeScript sources; workers always run the build). */
function workerScript(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const built = here.includes(`${join('dist', 'runtime')}`) ? join(here, 'worker.js') : resolve(here, '..', '..', 'dist', 'runtime', 'launch', 'worker.js');
  if (!existsSync(built)) throw new CleaveError(`${built} is missing: build with npm run build`);
  return built;
}

/**
 * Runs a plan on CPU ranks: one worker thread per rank, joined pairwise by message ports (the
 * shared-memory transport). Reports each step as it completes. If any rank fails, every worker is
 * stopped at once and the run rejects with the failing rank's message; nothing is left hanging.
 */
export function runPlanCpu(o: RunOptions, onStep?: (r: StepReport) => void): Promise<RunResult> {
  const plan = readPlan(o.planFile);
  const N = plan.world.size;
  // With no ranks nothing would ever report, and the run would end as if it had succeeded.
  if (!(N >= 1) || plan.ranks.length !== N) throw new CleaveError(`${o.planFile}: the plan's world has ${N} ranks but lists ${plan.ranks.length}; recompile it`);
  const ports = pairwisePorts(N);
  const script = workerScript();
  const absolute = { ...o, planFile: resolve(o.planFile) };
  // Each rank reads its own parameters' bytes from the model (the plan says where they lie). Each
  // shard of a checkpoint is read once here, and every rank's tensors, optimizer state and
  // generators gathered from them by name.
  const resumed = o.resume ? resumeAll(o.resume, plan) : undefined;
  // Every shard of this run says which run and plan wrote it (one id for all ranks, new each launch).
  const identity: RunIdentity = { run: o.runId ?? randomUUID(), planSha256: planSha256(o.planFile) };
  // What saves cut short left there (their processes gone) goes before this run's first save.
  if (o.checkpointDir) cleanCheckpointDir(o.checkpointDir);
  const board = ProgressBoard.create(N);
  const workers = Array.from({ length: N }, (_, rank) => new Worker(script, {
    workerData: { rank, ports: ports[rank], options: absolute, resume: resumed?.[rank], identity, board: { buffer: board.buffer, epoch: board.epoch } },
    transferList: Object.values(ports[rank]!),
  }));
  const byStep = new Map<number, Map<number, Extract<WorkerMessage, { type: 'step' }>>>();
  const saved = new Map<number, Map<number, string>>();
  const result: RunResult = { steps: [], checkpoints: [], weights: o.returnWeights ? new Map() : undefined };
  let finished = 0;
  const doneRanks = new Set<number>();
  let failed = false;
  const times: RankTimes[] = plan.ranks.map(() => []);
  const phases: (HostPhases | undefined)[] = [];

  return new Promise<RunResult>((resolvePromise, reject) => {
    let watchdog: NodeJS.Timeout | undefined;
    const stopAll = (why: Error): void => {
      if (failed) return;
      failed = true;
      clearInterval(watchdog);
      // Terminate, not ask: a rank blocked on a receive from the failed one must not linger.
      Promise.allSettled(workers.map((w) => w.terminate())).then(() => reject(why));
    };
    // A rank's receives time out, but nothing inside its thread can stop a compute that never
    // returns (its event loop is blocked): the watchdog here can, and names where it is stuck.
    const limitMs = (o.timeoutSeconds ?? 60) * 1000;
    watchdog = setInterval(() => {
      for (let rank = 0; rank < N; rank++) {
        if (doneRanks.has(rank)) continue;
        const p = board.read(rank);
        if (!p.inStep || p.quietMs < limitMs) continue;
        const ins = plan.ranks[rank]!.instructions[p.instruction];
        const where = ins ? `${instructionLabel(ins)} (instruction ${p.instruction} of step ${p.step})` : `step ${p.step}`;
        return stopAll(new CleaveError(`rank ${rank}: no progress for ${formatSeconds(limitMs)} s in ${where}; stopped (--timeout ${formatSeconds(limitMs)})`));
      }
    }, Math.max(HEARTBEAT_MS, Math.min(1000, limitMs / 4)));
    watchdog.unref();
    workers.forEach((w, rank) => {
      w.on('message', (msg: WorkerMessage) => {
        if (failed) return;
        switch (msg.type) {
          case 'error': {
            const text = msg.message.startsWith(`rank ${msg.rank}`) ? msg.message : `rank ${msg.rank}: ${msg.message}`;
            // A bug in a rank stays a bug (exit 1, with the rank's stack), not a user's error.
            return stopAll(msg.internal ? internalError(text, msg.stack) : new CleaveError(text));
          }
          case 'warning': process.stderr.write(`warning: rank ${msg.rank}: ${msg.message}\n`); return;
          case 'step': {
            const m = byStep.get(msg.step) ?? new Map();
            m.set(msg.rank, msg);
            byStep.set(msg.step, m);
            if (m.size === N) {
              // One report per replica (its pipeline shares the losses); average the replicas.
              const perReplica = plan.ranks.filter((r) => r.ppRank === 0).map((r) => m.get(r.rank)!.losses);
              const first = m.get(0)!;
              const report = stepReport(msg.step, perReplica, first.gradNorm, first.lr, first.samples * plan.world.dp);
              result.steps.push(report);
              byStep.delete(msg.step);
              onStep?.(report);
            }
            return;
          }
          case 'saved': {
            const s = saved.get(msg.step) ?? new Map<number, string>();
            s.set(msg.rank, msg.sha256);
            saved.set(msg.step, s);
            if (s.size === N) {
              // Every shard is on disk: only now does the checkpoint become one, by its manifest.
              const dir = dirname(msg.file);
              writeManifest(dir, manifestFor(plan, absolute.planFile, msg.step, identity, plan.ranks.map((r) => s.get(r.rank)!), o.weights));
              saved.delete(msg.step);
              result.checkpoints.push(dir);
            }
            return;
          }
          case 'done':
            doneRanks.add(msg.rank);
            if (msg.weights && result.weights) for (const [k, t] of msg.weights) if (!result.weights.has(k)) result.weights.set(k, t);
            if (msg.times) times[msg.rank] = msg.times;
            phases[msg.rank] = msg.phases;
            if (++finished === N) {
              clearInterval(watchdog);
              // Done on every rank means every step reported by every rank, or the run did not finish.
              const want = Math.max(0, o.steps - (resumed?.[0]?.step ?? 0));
              if (result.steps.length !== want || byStep.size) {
                const partial = [...byStep].map(([k, m]) => `step ${k} (from rank${m.size === 1 ? '' : 's'} ${[...m.keys()].join(', ')} only)`);
                return reject(new CleaveError(`every rank reported done, but ${result.steps.length} of ${want} steps were reported by every rank${partial.length ? `; ${partial.join(', ')}` : ''}: the run did not finish`));
              }
              if (o.trace) {
                try {
                  writeFileAtomic(o.trace, JSON.stringify(measuredTrace(plan, times, phases, { backend: 'cpu', device: 'cpu' })));
                } catch (e) {
                  return reject(e instanceof CleaveError ? e : new CleaveError(`writing the trace ${o.trace}: ${(e as Error).message}`));
                }
              }
              resolvePromise(result);
            }
            return;
        }
      });
      w.on('error', (e) => stopAll((e as { code?: string }).code === 'ERR_WORKER_OUT_OF_MEMORY'
        ? new CleaveError(`rank ${rank} ran out of memory (its thread's JavaScript heap): the model or microbatch is too large for a CPU run`)
        : internalError(`rank ${rank} crashed: ${e.message}`, e.stack)));
      w.on('exit', (code) => {
        if (code !== 0 && !failed && finished < N) stopAll(new CleaveError(`rank ${rank} exited with code ${code}`));
        // A rank whose thread ends quietly without reporting done has not finished its steps (its
        // event loop emptied, e.g. waiting on a channel that no rank will write): the run fails,
        // it never ends as a success with steps missing.
        else if (!failed && !doneRanks.has(rank)) stopAll(new CleaveError(`rank ${rank} ended without finishing its steps (it reported done for none; it may have waited on a message no rank sends)`));
      });
    });
  });
}

/** Seconds as said in a message: whole where whole, else to a tenth. */
const formatSeconds = (ms: number): string => (ms % 1000 === 0 ? String(ms / 1000) : (ms / 1000).toFixed(1));
