import { resolve } from 'node:path';
import { dropoutRng } from '../../src/ops/movement.js';
import type { Plan } from '../../src/plan/types.js';
import type { CudaRankBackend } from '../backends/cuda/rank_backend.js';
import { checkpointModel, shardName, writeManifest, writeShard } from '../checkpoint/checkpoint.js';
import type { ResumeState } from '../checkpoint/resume.js';
import type { DataSource } from '../data/sources.js';

/**
 * Writes a GPU rank's shard of the checkpoint after `step` steps, in the format CPU ranks write
 * (float32 master weights and state, the optimizer's buffers as float64, the generators' states).
 * Returns the step's folder.
 */
export function saveGpuShard(dir: string, step: number, rank: number, backend: CudaRankBackend, source: DataSource | undefined): string {
  const folder = `${dir}/step-${step}`;
  const { world } = backend.plan, me = backend.plan.ranks[rank]!;
  writeShard(folder, {
    rank, step, tensors: backend.tensors(), optimizer: backend.optimizerState(), rng: { data: source?.state() ?? [], dropout: dropoutRng.state },
    place: { pp: world.pp, dp: world.dp, ppRank: me.ppRank, dpRank: me.dpRank },
  });
  return folder;
}

/** Once every rank's shard is on disk: the manifest that makes the folder a checkpoint. */
export function finishCheckpoint(folder: string, step: number, planFile: string, plan: Plan, weights?: string): void {
  writeManifest(folder, {
    format: 'cleave-checkpoint', version: 1, step, plan: resolve(planFile), model: checkpointModel(plan, planFile, weights), world: plan.world.size,
    pp: plan.world.pp, dp: plan.world.dp, shards: plan.ranks.map((r) => shardName(r.rank)),
  });
}

/**
 * Puts a resumed rank's optimizer and Dropout generator where the checkpoint left them (gathered
 * for this rank by gatherCheckpoint, or a shard read whole). Its data source comes from
 * resumeDataSource, which restores the stream where it continues.
 */
export function restoreFromShard(shard: ResumeState, backend: CudaRankBackend): void {
  backend.restoreOptimizer(shard.optimizer);
  dropoutRng.state = shard.rng.dropout;
}
