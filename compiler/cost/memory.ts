import { CleaveError } from '../../src/core/errors.js';
import type { DtypePolicy } from './model.js';

export type OptimizerFamily = 'sgd' | 'sgd-momentum' | 'adam' | 'adamw';

/**
 * Bytes each trainable parameter costs on its stage: the weight, its gradient, and the optimizer's
 * state. Under the bf16 and fp16 policies weights and gradients are 16-bit and a float32 master copy is kept;
 * optimizer moments are always float32.
 */
export function bytesPerParam(opt: OptimizerFamily, policy: DtypePolicy): number {
  const moments = opt === 'sgd' ? 0 : opt === 'sgd-momentum' ? 4 : 8;
  return policy !== 'fp32' ? 2 + 2 + 4 + moments : 4 + 4 + moments;
}

export type ScheduleName = 'gpipe' | '1f1b' | 'interleaved-1f1b' | 'zb-h1' | 'zbv';
export const SCHEDULES: readonly ScheduleName[] = ['gpipe', '1f1b', 'interleaved-1f1b', 'zb-h1', 'zbv'];
/** SMP's names for its pipelines. */
export const SCHEDULE_ALIASES: Readonly<Record<string, ScheduleName>> = { simple: 'gpipe', interleaved: '1f1b' };

export function scheduleName(s: string): ScheduleName {
  const n = SCHEDULE_ALIASES[s] ?? s;
  if (!(SCHEDULES as readonly string[]).includes(n)) throw new CleaveError(`unknown schedule '${s}' (known: ${[...SCHEDULES, ...Object.keys(SCHEDULE_ALIASES)].join(', ')})`);
  return n as ScheduleName;
}

/**
 * Microbatches whose activations a stage holds at its peak. GPipe runs every forward first (all M).
 * 1F1B and ZB-H1 hold at most as many as there are stages from this one to the last. Interleaved
 * 1F1B holds, per virtual stage on device d, its share of Megatron's (v−1)·p + 2(p−d) − 1 warm-up
 * chunks. ZB-V holds about 1F1B's peak, split over its two chunks. (The scheduler's simulator gives
 * exact peaks; this is the partitioner's estimate.)
 */
export function inFlight(schedule: ScheduleName, stage: number, stages: number, devices: number, microbatches: number): number {
  const v = stages / devices;
  const d = stage % devices;
  switch (schedule) {
    case 'gpipe': return microbatches;
    case '1f1b': case 'zb-h1': return Math.min(microbatches, stages - stage);
    case 'interleaved-1f1b': return Math.min(microbatches, Math.ceil(((v - 1) * devices + 2 * (devices - d) - 1) / v));
    case 'zbv': return Math.min(microbatches, Math.ceil((2 * (devices - d)) / 2));
  }
}
