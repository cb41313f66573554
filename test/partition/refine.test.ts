import { describe, expect, it } from 'vitest';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import type { ScheduleName } from '../../compiler/cost/memory.js';
import { importOnnx } from '../../compiler/onnx/import.js';
import { type SplitProblem, optimalSplit, stageCost, totals } from '../../compiler/partition/dp.js';
import { type Prepared, partitionTraining, preparePartition } from '../../compiler/partition/partition.js';
import { refineSplit } from '../../compiler/partition/refine.js';
import { schedulePipeline, stageRank } from '../../compiler/schedule/pipeline.js';
import '../../src/core/ops/index.js';
import { fixturePath } from '../helpers/fixtures.js';

const t = buildTrainingGraph(importOnnx(fixturePath('gpt'), { batch: 2 }), { loss: { kind: 'cross-entropy' } });
const prepare = (schedule: ScheduleName, p: number, extra: { capacity?: number; fixed?: [number, number] } = {}): Prepared => {
  const prep = preparePartition(t, { partitions: p, virtualStages: 2, schedule, microbatches: 8, memoryWeight: 0, device: 'cpu' });
  if (extra.capacity !== undefined) prep.problem.capacity = extra.capacity;
  if (extra.fixed) (prep.problem.fixed as Int32Array)[extra.fixed[0]] = extra.fixed[1];
  return prep;
};

/** The step the schedule's simulation predicts for a split, computed here from the units' times. */
function step(prep: Prepared, bounds: readonly number[]): number {
  const S = bounds.length - 1, { f, b, w, comm } = prep.times, { schedule, p } = prep.shape;
  const per = (a: ArrayLike<number>) => Array.from({ length: S }, (_, k) => {
    let x = 0;
    for (let i = bounds[k]!; i < bounds[k + 1]!; i++) x += a[i]!;
    return x;
  });
  const across = Array.from({ length: S }, (_, k) => (k + 1 < S && stageRank(schedule, k, p) !== stageRank(schedule, k + 1, p) ? comm(bounds[k + 1]!) : 0));
  return schedulePipeline({ ...prep.shape, times: { f: per(f), b: per(b), w: per(w), comm: across } }).makespan;
}

const feasible = (p: SplitProblem, bounds: readonly number[]) =>
  Array.from({ length: p.stages }, (_, k) => bounds[k]! < bounds[k + 1]! && stageCost(p, bounds[k]!, bounds[k + 1]!, k, totals(p)).feasible).every(Boolean);

describe('moving stage boundaries by the schedule\'s simulation (several stages per rank)', () => {
  it.each([['zbv', 2], ['zbv', 4], ['interleaved-1f1b', 2], ['interleaved-1f1b', 4]] as const)('%s at pp %i: a step no longer than the DP split\'s, with every stage non-empty and feasible', (schedule, p) => {
    const prep = prepare(schedule, p);
    const dp = optimalSplit(prep.problem)!.bounds;
    const refined = refineSplit(prep.problem, dp, prep.shape, prep.times);
    expect(refined[0]).toBe(0);
    expect(refined.at(-1)).toBe(prep.problem.time.length);
    expect(feasible(prep.problem, refined)).toBe(true);
    expect(step(prep, refined)).toBeLessThanOrEqual(step(prep, dp) * (1 + 1e-12));
  });

  it('shortens the GPT fixture\'s ZB-V step at pp 2, whose DP split leaves one rank the heavier pair of stages', () => {
    const prep = prepare('zbv', 2);
    const dp = optimalSplit(prep.problem)!.bounds;
    const refined = refineSplit(prep.problem, dp, prep.shape, prep.times);
    expect(step(prep, refined)).toBeLessThan(step(prep, dp) * 0.97);
  });

  it('keeps every stage within memory and annotated units on their stages', () => {
    const free = prepare('zbv', 2);
    const dp = optimalSplit(free.problem)!.bounds;
    const moved = refineSplit(free.problem, dp, free.shape, free.times);
    // A capacity just above the DP split's largest stage: the move the free search made may not fit.
    const most = Math.max(...Array.from({ length: 4 }, (_, k) => stageCost(free.problem, dp[k]!, dp[k + 1]!, k, totals(free.problem)).memory));
    const tight = prepare('zbv', 2, { capacity: most });
    expect(feasible(tight.problem, refineSplit(tight.problem, dp, tight.shape, tight.times))).toBe(true);
    // Pin to stage 1 the last unit the free search gave stage 0: the search leaves it there.
    const u = moved[1]! - 1;
    const pinned = prepare('zbv', 2, { fixed: [u, 1] });
    const r = refineSplit(pinned.problem, optimalSplit(pinned.problem)!.bounds, pinned.shape, pinned.times);
    expect(r[1]).toBeLessThanOrEqual(u);
    expect(feasible(pinned.problem, r)).toBe(true);
  });

  it('with memory_weight 1 balances what each rank holds: its fullest rank holds less than in the DP split', () => {
    const prep = preparePartition(t, { partitions: 2, virtualStages: 2, schedule: 'zbv', microbatches: 8, memoryWeight: 1, device: 'cpu' });
    const fullest = (b: readonly number[]) => {
      const held = [0, 0];
      for (let k = 0; k < 4; k++) held[[0, 1, 1, 0][k]!]! += stageCost(prep.problem, b[k]!, b[k + 1]!, k, totals(prep.problem)).memory;
      return Math.max(...held);
    };
    const dp = optimalSplit(prep.problem)!.bounds;
    const refined = refineSplit(prep.problem, dp, prep.shape, prep.times);
    expect(feasible(prep.problem, refined)).toBe(true);
    expect(fullest(refined)).toBeLessThan(fullest(dp));
  });

  it('is what the partitioner returns for zbv, and leaves one-stage-per-rank schedules to the DP', () => {
    const prep = prepare('zbv', 2);
    const refined = refineSplit(prep.problem, optimalSplit(prep.problem)!.bounds, prep.shape, prep.times);
    const part = partitionTraining(t, { partitions: 2, virtualStages: 2, schedule: 'zbv', microbatches: 8, memoryWeight: 0, device: 'cpu' });
    expect(part.stages.map((s) => s.nodes.length)).toEqual(refined.slice(1).map((b, k) => b - refined[k]!));
    const one = preparePartition(t, { partitions: 2, schedule: '1f1b', microbatches: 8, memoryWeight: 0, device: 'cpu' });
    const dp = optimalSplit(one.problem)!.bounds;
    const flat = partitionTraining(t, { partitions: 2, schedule: '1f1b', microbatches: 8, memoryWeight: 0, device: 'cpu' });
    expect(flat.stages.map((s) => s.nodes.length)).toEqual(dp.slice(1).map((b, k) => b - dp[k]!));
  });
});
