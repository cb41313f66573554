// One rank of a CPU run: a worker thread started by launch/cpu.ts.
import { CleaveError } from '../../src/core/errors.js';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import type { Tensor } from '../../src/core/ir/tensor.js';
import '../../src/core/ops/index.js';
import { dropoutRng } from '../../src/core/ops/movement.js';
import { readPlan } from '../../src/core/plan/io.js';
import { rankWeightNames, readPlanWeights } from '../../src/core/plan/weights.js';
import { CpuRankBackend } from '../backends/cpu/rank_backend.js';
import { type RunIdentity, writeShard } from '../checkpoint/checkpoint.js';
import { ProgressBoard, rankProgress } from '../executor/progress.js';
import { type PortableResume, type ResumeState, gatherCheckpoint, resumeDataSource } from '../checkpoint/resume.js';
import { Executor } from '../executor/executor.js';
import { learningRate } from '../optim/optimizer.js';
import { PortTransport } from '../transport/ports.js';
import type { RunOptions, WorkerMessage } from './options.js';
import { stepFeeds } from './data.js';

interface Init {
  rank: number; ports: Record<number, MessagePort>; options: RunOptions;
  /** `options.resume`'s part for this rank, gathered by the launcher. */
  resume?: PortableResume;
  /** The run's identity, recorded in every shard this rank writes. */
  identity: RunIdentity;
  /** The run's progress board (launch/cpu.ts's watchdog reads it): its memory and epoch. */
  board: { buffer: SharedArrayBuffer; epoch: number };
}

const post = (m: WorkerMessage): void => parentPort!.postMessage(m);

async function main(): Promise<void> {
  const { rank, ports, options: o, resume, identity, board: shared } = workerData as Init;
  const board = new ProgressBoard(shared.buffer, shared.epoch);
  const stopBeating = board.startHeartbeat(rank);
  const plan = readPlan(o.planFile);
  const me = plan.ranks[rank]!;
  const transport = new PortTransport(rank, plan.world.size, new Map(Object.entries(ports).map(([k, p]) => [Number(k), p])), (o.timeoutSeconds ?? 60) * 1000, () => board.someoneBusy());
  const m = plan.schedule.microbatches, mbSize = plan.model.microbatchSize;
  const B = m * mbSize;

  // Weights: the checkpoint's (gathered by the launcher, else here), or this rank's own from the model.
  let weights: Map<string, Tensor>;
  let shard: ResumeState | undefined;
  if (resume) shard = { ...resume, tensors: new Map(resume.tensors) };
  else if (o.resume) shard = gatherCheckpoint(o.resume, plan, rank);
  if (shard) weights = new Map(shard.tensors);
  else weights = readPlanWeights(plan, rankWeightNames(plan, rank), { planFile: o.planFile, from: o.weights });
  const backend = new CpuRankBackend(plan, rank, transport, weights, o.optimizer);
  const failing = o.failAt?.rank === rank ? o.failAt : undefined;
  const exec = new Executor(plan, rank, backend, transport, failing && !failing.step && !failing.hang ? failing.instruction : undefined);
  if (failing?.hang && !failing.step) exec.hangAt = failing.instruction;
  let current = 0;
  exec.progress = rankProgress(board, rank, () => current);
  exec.record = !!o.trace;
  if (o.trace) exec.phases = [];

  // Data: this replica's own stream (seeded by its data-parallel rank), or its slice of given batches.
  // Resumed: where the checkpoint's stream continues, or afresh where it cannot.
  const source = resumeDataSource(plan, o, me.dpRank, shard);
  let start = 0;
  if (shard) {
    start = shard.step;
    backend.optimizer.state.step = shard.optimizer.step;
    backend.optimizer.state.buffers = shard.optimizer.buffers;
    dropoutRng.state = shard.rng.dropout;
  }
  for (let step = start; step < o.steps; step++) {
    const feeds = stepFeeds(plan, o, source, me.dpRank, step);
    current = step + 1;
    if (failing?.step === step + 1) exec[failing.hang ? 'hangAt' : 'failAt'] = failing.instruction;
    const lr = learningRate(o.optimizer.lr, step, o.schedule ?? { kind: 'constant' });
    const { losses, gradNorm } = await exec.trainStep(feeds, { lr, clip: o.clip });
    post({ type: 'step', rank, step: step + 1, losses: Array.from({ length: m }, (_, k) => losses.get(k) ?? NaN), gradNorm, lr, samples: B });
    if (o.saveEvery && o.checkpointDir && (step + 1) % o.saveEvery === 0) {
      const { file, sha256 } = writeShard(`${o.checkpointDir}/step-${step + 1}`, {
        rank, step: step + 1, tensors: backend.tensors(), optimizer: backend.optimizer.state,
        rng: { data: source?.state() ?? [], dropout: dropoutRng.state },
        place: { pp: plan.world.pp, dp: plan.world.dp, ppRank: me.ppRank, dpRank: me.dpRank }, identity,
      });
      post({ type: 'saved', rank, step: step + 1, file, sha256 });
    }
  }
  post({ type: 'done', rank, weights: o.returnWeights ? [...backend.tensors()] : undefined, times: o.trace ? Array.from(exec.times, (t) => t ?? null) : undefined, phases: exec.phases });
  stopBeating();
  for (const p of Object.values(ports)) p.close();
}

main().catch((e: unknown) => {
  const internal = !(e instanceof CleaveError);
  post({ type: 'error', rank: (workerData as Init).rank, message: e instanceof Error ? e.message : String(e), internal, ...(internal && e instanceof Error ? { stack: e.stack } : {}) });
});
