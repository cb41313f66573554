import { renameSync, writeFileSync } from 'node:fs';
import type { MeasuredProfile } from '../../src/core/plan/signature.js';
import { CleaveError } from '../../src/core/errors.js';
import { readPlan } from '../../src/core/plan/io.js';
import { requireCuda } from '../backends/cuda/native.js';
import { CudaRankBackend } from '../backends/cuda/rank_backend.js';
import type { Tensor } from '../../src/core/ir/tensor.js';
import type { Plan } from '../../src/core/plan/types.js';
import { planWeights, runOnBackend } from './cuda.js';

export interface ProfileOptions {
  /** Steps measured, after `warmup` steps that are not (cuBLAS heuristics, allocator pool growth). */
  steps: number;
  warmup: number;
  weights?: string;
  seed?: number;
}

export interface ProfileResult {
  /** What `--profile` of `cleave partition`/`compile` reads: signature → mean ms per launch. */
  profile: MeasuredProfile & { policy: string };
  /** Per op kind, for the report: launches and total ms over the measured steps. */
  byOp: { op: string; launches: number; ms: number }[];
}

/**
 * Times every node of a one-rank plan on the GPU: runs whole training steps (forward, backward,
 * optimizer) on the bundled data, with CUDA events around each node, and averages each op
 * signature's device time. Signatures are the cost model's, so the result feeds the partitioner
 * directly. A node so small that the host launches it slower than the device runs it counts the
 * host's time (the device waits for it), as it does in a step run node by node.
 */
export async function profilePlan(planFile: string, o: ProfileOptions): Promise<ProfileResult> {
  const plan = readPlan(planFile);
  if (plan.world.size !== 1) throw new CleaveError(`${planFile}: cleave profile measures one-rank plans (compile with --partitions 1); this plan has ${plan.world.size} ranks`);
  requireCuda(); // before reading weights, which can take a while
  return profileWithWeights(plan, planWeights(plan, { planFile, from: o.weights }), o);
}

/** As profilePlan, for a plan and weights already in memory (benchmarks). */
export async function profileWithWeights(plan: Plan, weights: ReadonlyMap<string, Tensor>, o: ProfileOptions): Promise<ProfileResult> {
  // A zero learning rate: the weights stay as given, so every step times the same numbers.
  const optimizer = { kind: 'adamw', lr: 0 } as const;
  const backend = new CudaRankBackend(plan, 0, weights, optimizer);
  backend.profiling = o.warmup === 0;
  await runOnBackend(backend, { planFile: '', data: { kind: 'default' }, steps: o.warmup + o.steps, optimizer, seed: o.seed }, (r) => {
    if (r.step === o.warmup) backend.profiling = true;
  });
  const entries: Record<string, number> = {};
  const byOp = new Map<string, { launches: number; ms: number }>();
  for (const [sig, r] of backend.profile) {
    entries[sig] = r.ms / r.count;
    const x = byOp.get(r.op) ?? { launches: 0, ms: 0 };
    x.launches += r.count;
    x.ms += r.ms;
    byOp.set(r.op, x);
  }
  return {
    profile: { device: backend.dev.n.info()?.name, policy: plan.model.dtypePolicy, entries },
    byOp: [...byOp].map(([op, x]) => ({ op, ...x })).sort((a, b) => b.ms - a.ms),
  };
}

/** Writes a measured profile whole or not at all (a temporary file renamed into place). */
export function writeMeasuredProfile(file: string, profile: MeasuredProfile): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(profile, null, 1)}\n`);
  renameSync(tmp, file);
}
