import { randomUUID } from 'node:crypto';
import { dropoutRng } from '../../src/ops/movement.js';
import type { Plan } from '../../src/plan/types.js';
import type { CudaRankBackend } from '../backends/cuda/rank_backend.js';
import { type RunIdentity, manifestFor, planSha256, writeManifest, writeShard } from '../checkpoint/checkpoint.js';
import type { ResumeState } from '../checkpoint/resume.js';
import type { DataSource } from '../data/sources.js';

/**
 * Writes a GPU rank's shard of the checkpoint after `step` steps, in the format CPU ranks write
 * (float32 master weights and state, the optimizer's buffers as float64, the generators' states,
 * the run's identity). Returns the step's folder and the checksum of the shard's bytes.
 */
export function saveGpuShard(dir: string, step: number, rank: number, backend: CudaRankBackend, source: DataSource | undefined, identity: RunIdentity): { folder: string; sha256: string } {
  const folder = `${dir}/step-${step}`;
  const { world } = backend.plan, me = backend.plan.ranks[rank]!;
  const { sha256 } = writeShard(folder, {
    rank, step, tensors: backend.tensors(), optimizer: backend.optimizerState(), rng: { data: source?.state() ?? [], dropout: dropoutRng.state },
    place: { pp: world.pp, dp: world.dp, ppRank: me.ppRank, dpRank: me.dpRank }, identity,
  });
  return { folder, sha256 };
}

/** Once every rank's shard is on disk: the manifest that makes the folder a checkpoint, listing each shard's checksum (`sums`, by rank). */
export function finishCheckpoint(folder: string, step: number, planFile: string, plan: Plan, identity: RunIdentity, sums: readonly string[], weights?: string): void {
  writeManifest(folder, manifestFor(plan, planFile, step, identity, sums, weights));
}

/** A GPU run's identity: `o.runId` or a new random one, and its plan file's checksum. */
export const runIdentity = (planFile: string, runId?: string): RunIdentity => ({ run: runId ?? randomUUID(), planSha256: planSha256(planFile) });

/**
 * Puts a resumed rank's optimizer and Dropout generator where the checkpoint left them (gathered
 * for this rank by gatherCheckpoint, or a shard read whole). Its data source comes from
 * resumeDataSource, which restores the stream where it continues.
 */
export function restoreFromShard(shard: ResumeState, backend: CudaRankBackend): void {
  backend.restoreOptimizer(shard.optimizer);
  dropoutRng.state = shard.rng.dropout;
}
