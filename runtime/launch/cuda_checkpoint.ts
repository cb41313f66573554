import { resolve } from 'node:path';
import { dropoutRng } from '../../src/ops/movement.js';
import type { Plan } from '../../src/plan/types.js';
import type { CudaRankBackend } from '../backends/cuda/rank_backend.js';
import { shardName, type Shard, writeManifest, writeShard } from '../checkpoint/checkpoint.js';
import type { DataSource } from '../data/sources.js';

/**
 * Writes a GPU rank's shard of the checkpoint after `step` steps, in the format CPU ranks write
 * (float32 master weights and state, the optimizer's buffers as float64, the generators' states).
 * Returns the step's folder.
 */
export function saveGpuShard(dir: string, step: number, rank: number, backend: CudaRankBackend, source: DataSource | undefined): string {
  const folder = `${dir}/step-${step}`;
  writeShard(folder, { rank, step, tensors: backend.tensors(), optimizer: backend.optimizerState(), rng: { data: source?.state() ?? [], dropout: dropoutRng.state } });
  return folder;
}

/** Once every rank's shard is on disk: the manifest that makes the folder a checkpoint. */
export function finishCheckpoint(folder: string, step: number, planFile: string, plan: Plan): void {
  writeManifest(folder, {
    format: 'cleave-checkpoint', version: 1, step, plan: resolve(planFile), model: resolve(plan.model.source), world: plan.world.size,
    shards: plan.ranks.map((r) => shardName(r.rank)),
  });
}

/** Puts a resumed rank's optimizer and generators where the shard left them. */
export function restoreFromShard(shard: Shard, backend: CudaRankBackend, source: DataSource | undefined): void {
  backend.restoreOptimizer(shard.optimizer);
  source?.restore(shard.rng.data);
  dropoutRng.state = shard.rng.dropout;
}
