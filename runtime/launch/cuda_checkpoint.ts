import { randomUUID } from 'node:crypto';
import { dropoutRng } from '../../src/core/ops/movement.js';
import type { Plan } from '../../src/core/plan/types.js';
import type { CudaRankBackend } from '../backends/cuda/rank_backend.js';
import { type RunIdentity, manifestFor, planSha256, writeManifest, writeShard } from '../checkpoint/checkpoint.js';
import type { ResumeState } from '../checkpoint/resume.js';
import type { DataSource } from '../data/sources.js';
import type { Transport } from '../transport/transport.js';
import type { RunOptions } from './options.js';

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

/**
 * A multi-process run's identity, the same on every rank: rank 0's run id (`o.runId`, else a new
 * one), sent to every other rank before any step; each rank's plan checksum from its own plan file
 * (one file, so one checksum, unless the ranks were given different plans, which the checkpoint's
 * reader then refuses).
 */
export async function shareIdentity(transport: Transport, o: Pick<RunOptions, 'planFile' | 'runId'>): Promise<RunIdentity> {
  if (transport.rank === 0) {
    const identity = runIdentity(o.planFile, o.runId);
    for (let r = 1; r < transport.size; r++) transport.send(r, 'run id', new TextEncoder().encode(identity.run));
    return identity;
  }
  const run = new TextDecoder().decode((await transport.recv(0, 'run id')) as Uint8Array);
  return { run, planSha256: planSha256(o.planFile) };
}

/**
 * After every rank wrote its shard of `step`: on rank 0, each rank's shard checksum by rank (for the
 * manifest, which only rank 0 writes, once all are on disk); elsewhere undefined, once this rank's is sent.
 */
export async function gatherShardSums(transport: Transport, step: number, sha256: string): Promise<string[] | undefined> {
  const tag = `saved step ${step}`;
  if (transport.rank !== 0) {
    transport.send(0, tag, new TextEncoder().encode(sha256));
    return undefined;
  }
  const sums = [sha256];
  for (let r = 1; r < transport.size; r++) sums.push(new TextDecoder().decode((await transport.recv(r, tag)) as Uint8Array));
  return sums;
}
