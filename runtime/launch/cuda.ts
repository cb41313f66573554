import { CleaveError } from '../../src/core/errors.js';
import type { Tensor } from '../../src/core/ir/tensor.js';
import { readPlan } from '../../src/core/plan/io.js';
import { type WeightSource, allWeightNames, readPlanWeights } from '../../src/core/plan/weights.js';
import type { Plan } from '../../src/core/plan/types.js';
import { type HostPhases, type RankTimes, measuredTrace } from '../../src/core/plan/measured.js';
import { writeFileAtomic } from '../../src/core/util/fs.js';
import { CudaRankBackend } from '../backends/cuda/rank_backend.js';
import { Executor } from '../executor/executor.js';
import { learningRate } from '../optim/optimizer.js';
import { LocalTransport } from '../transport/local.js';
import { type RunResult, type StepReport, stepReport } from './cpu.js';
import { stepFeeds } from './data.js';
import type { RunOptions } from './options.js';
import { finishCheckpoint, restoreFromShard, runIdentity, saveGpuShard } from './cuda_checkpoint.js';
import { cleanCheckpointDir } from '../checkpoint/checkpoint.js';
import { type ResumeState, announceResume, gatherCheckpoint, resumeDataSource } from '../checkpoint/resume.js';

/**
 * Runs a one-rank plan on the GPU in this process: the CUDA backend behind the same executor the
 * CPU ranks use, the same data sources, step reports and checkpoints. (Multi-rank plans run one
 * process per GPU: launch/cuda_rank.ts.)
 */
export async function runPlanCuda(o: RunOptions, onStep?: (r: StepReport) => void): Promise<RunResult & { stepMs: number[]; peakBytes: number }> {
  const plan = readPlan(o.planFile);
  if (plan.world.size !== 1) throw new CleaveError(`this plan has ${plan.world.size} ranks: multi-rank plans run one process per GPU (cleave run --gpus ${plan.world.size})`);
  // A resumed run gathers its checkpoint once (by name, from whichever shards hold its tensors):
  // its weights here, its optimizer state, generators and step below.
  const shard = o.resume ? gatherCheckpoint(o.resume, plan, 0) : undefined;
  if (shard) announceResume(shard);
  return runWithWeights(plan, shard?.tensors ?? planWeights(plan, { planFile: o.planFile, from: o.weights }), o, onStep, shard);
}

/** A plan's initial weights (`names`, default all): where the plan references them, or from `source.from`. */
export function planWeights(plan: Plan, source: WeightSource = {}, names: readonly string[] = allWeightNames(plan)): Map<string, Tensor> {
  return readPlanWeights(plan, names, source);
}

export function runWithWeights(plan: Plan, weights: ReadonlyMap<string, Tensor>, o: RunOptions, onStep?: (r: StepReport) => void, shard?: ResumeState): Promise<RunResult & { stepMs: number[]; peakBytes: number }> {
  const backend = new CudaRankBackend(plan, 0, weights, o.optimizer);
  backend.cudaGraph = !!o.cudaGraph;
  backend.launchLists = o.launchLists !== false;
  if (o.lossScale !== undefined) backend.setLossScale(o.lossScale);
  return runOnBackend(backend, o, onStep, shard);
}

/**
 * Runs `o.steps` training steps on a backend already holding its weights; frees its device memory
 * at the end, or on failure. `shard`: `o.resume`'s, where the caller has read it already (a shard
 * read whole, or gathered for rank 0 of this plan by gatherCheckpoint).
 */
export async function runOnBackend(backend: CudaRankBackend, o: RunOptions, onStep?: (r: StepReport) => void, shard?: ResumeState): Promise<RunResult & { stepMs: number[]; peakBytes: number }> {
  const plan = backend.plan;
  backend.timing = !!o.trace;
  let failed = false;
  try {
    backend.dev.n.synchronize();
    const exec = new Executor(plan, 0, backend, new LocalTransport());
    const m = plan.schedule.microbatches, B = m * plan.model.microbatchSize;
    const result: RunResult & { stepMs: number[]; peakBytes: number } = { steps: [], checkpoints: [], stepMs: [], peakBytes: 0 };
    const resumed = shard ?? (o.resume ? gatherCheckpoint(o.resume, plan, 0) : undefined);
    const source = resumeDataSource(plan, o, 0, resumed);
    if (resumed) restoreFromShard(resumed, backend);
    const start = resumed?.step ?? 0;
    // Only a run that saves needs its identity (a backend driven from memory may have no plan file).
    const saving = !!(o.saveEvery && o.checkpointDir);
    const identity = saving ? runIdentity(o.planFile, o.runId) : undefined;
    if (saving) cleanCheckpointDir(o.checkpointDir!);
    if (o.trace) exec.phases = [];
    backend.dev.n.memInfo(true);
    for (let step = start; step < o.steps; step++) {
      const feeds = stepFeeds(plan, o, source, 0, step);
      const t0 = performance.now();
      const lr = learningRate(o.optimizer.lr, step, o.schedule ?? { kind: 'constant' });
      const { losses, gradNorm } = await exec.trainStep(feeds, { lr, clip: o.clip });
      backend.dev.n.synchronize();
      result.stepMs.push(performance.now() - t0);
      const report = stepReport(step + 1, [Array.from({ length: m }, (_, k) => losses.get(k) ?? NaN)], gradNorm, lr, B);
      result.steps.push(report);
      onStep?.(report);
      if (o.saveEvery && o.checkpointDir && (step + 1) % o.saveEvery === 0) {
        const { folder, sha256 } = saveGpuShard(o.checkpointDir, step + 1, 0, backend, source, identity!);
        finishCheckpoint(folder, step + 1, o.planFile, plan, identity!, [sha256], o.weights);
        result.checkpoints.push(folder);
      }
    }
    result.peakBytes = backend.peakBytes();
    if (o.returnWeights) result.weights = backend.tensors();
    if (o.trace && result.steps.length) writeDeviceTrace(o.trace, plan, [backend.deviceTimes()], [exec.phases], backend.dev.n.info()?.name);
    return result;
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    try {
      backend.dispose();
      backend.dev.freeAll();
    } catch (e) {
      // After a failure the first error says more than one from cleaning up.
      if (!failed) throw e;
    }
  }
}

/** The last step's measured timeline of every rank (device times and host phases, one clock), as a Perfetto trace. */
export function writeDeviceTrace(file: string, plan: Plan, times: readonly RankTimes[], phases: readonly (HostPhases | undefined)[] = [], gpu = 'unknown GPU'): void {
  try {
    writeFileAtomic(file, JSON.stringify(measuredTrace(plan, times, phases, { backend: 'cuda', device: gpu })));
  } catch (e) {
    throw e instanceof CleaveError ? e : new CleaveError(`writing the trace ${file}: ${(e as Error).message}`);
  }
}
