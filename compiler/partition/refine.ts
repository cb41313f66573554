import type { ScheduleName } from '../cost/memory.js';
import { schedulePipeline, stageRank } from '../schedule/pipeline.js';
import { type SplitProblem, stageCost, totals } from './dp.js';

/** The pipeline a split is for: its schedule, ranks, stages per rank and microbatches. */
export interface PipelineShape {
  schedule: ScheduleName;
  p: number;
  v: number;
  m: number;
  /** SMP's active_microbatches, as the schedule takes it. */
  active?: number;
}

/** Per unit: forward, input-gradient and weight-gradient seconds; `comm(i)`: one way across the boundary before unit i. */
export interface UnitTimes {
  f: ArrayLike<number>;
  b: ArrayLike<number>;
  w: ArrayLike<number>;
  comm: (i: number) => number;
}

/**
 * Positions each side of a boundary the simulation's polish tries, and its sweeps at most (the
 * rank-load pass tries every position): a simulation of 8 ranks × 16 microbatches takes ~10 ms.
 */
const POLISH = { reach: 4, sweeps: 6 };

/**
 * Moves stage boundaries so that ranks, not only stages, come out balanced, starting from the DP's
 * split.
 *
 * The DP balances stage against stage, which is the whole story for one stage per rank. With
 * several (interleaved, ZB-V) a rank's step is the sum of its stages, and a split whose stages are
 * balanced can still give one rank two heavy ones (the bench GPT's ZB-V split left rank 1 5% over
 * the mean, rank 3 9% under). Two passes of moving one boundary at a time, each to the best place
 * between its neighbours, until a sweep moves none:
 *
 * 1. by rank load (a rank's stages' compute and outgoing transfers: the largest, then the sum of
 *    squares), over every position, cheap enough for thousands of units;
 * 2. by the schedule's own simulation (`schedulePipeline`: the step, then rank loads), within a few
 *    units of where pass 1 left each boundary, for what loads miss (warm-up and drain).
 *
 * The DP's split stands where the simulation finds the result no faster. Stages stay feasible
 * (memory, annotated units). With memory_weight w > 0 both objectives blend, as the DP's does:
 * w · the fullest rank's memory + (1 − w) · time, each over the model's total.
 */
export function refineSplit(problem: SplitProblem, start: readonly number[], shape: PipelineShape, times: UnitTimes): number[] {
  const S = problem.stages, N = problem.time.length;
  const t = totals(problem);
  const sum = (a: ArrayLike<number>): Float64Array => {
    const out = new Float64Array(N + 1);
    for (let i = 0; i < N; i++) out[i + 1] = out[i]! + a[i]!;
    return out;
  };
  const F = sum(times.f), B = sum(times.b), W = sum(times.w);
  const comm = Float64Array.from({ length: N + 1 }, (_, i) => times.comm(i));
  const rankOf = Array.from({ length: S }, (_, k) => stageRank(shape.schedule, k, shape.p));
  const crosses = (k: number) => k + 1 < S && rankOf[k] !== rankOf[k + 1];
  const wm = problem.memoryWeight;
  // A rank holds all its stages: the memory term is the fullest rank's.
  const memoryTerm = (bounds: readonly number[]) => {
    if (wm === 0) return 0;
    const held = new Float64Array(shape.p);
    for (let k = 0; k < S; k++) held[rankOf[k]!]! += stageCost(problem, bounds[k]!, bounds[k + 1]!, k, t).memory;
    return wm * (Math.max(...held) / t.memory);
  };
  const loads = (bounds: readonly number[]): Float64Array => {
    const load = new Float64Array(shape.p);
    for (let k = 0; k < S; k++) {
      const [a, z] = [bounds[k]!, bounds[k + 1]!];
      load[rankOf[k]!]! += F[z]! - F[a]! + B[z]! - B[a]! + W[z]! - W[a]! + (crosses(k) ? comm[z]! : 0);
    }
    return load;
  };
  const squares = (load: Float64Array) => load.reduce((a, x) => a + x * x, 0);
  const byLoad = (bounds: readonly number[]): [number, number] => {
    const load = loads(bounds);
    return [(1 - wm) * (Math.max(...load) / t.time) + memoryTerm(bounds), squares(load)];
  };
  const bySimulation = (bounds: readonly number[]): [number, number] => {
    const span = (P: Float64Array) => Array.from({ length: S }, (_, k) => P[bounds[k + 1]!]! - P[bounds[k]!]!);
    const across = Array.from({ length: S }, (_, k) => (crosses(k) ? comm[bounds[k + 1]!]! : 0));
    const { makespan } = schedulePipeline({ ...shape, times: { f: span(F), b: span(B), w: span(W), comm: across } });
    return [(1 - wm) * (makespan / t.time) + memoryTerm(bounds), squares(loads(bounds))];
  };
  const better = (a: [number, number], b: [number, number]) => a[0] < b[0] * (1 - 1e-9) || (a[0] <= b[0] * (1 + 1e-9) && a[1] < b[1] * (1 - 1e-9));
  const feasible = (bounds: readonly number[], k: number) =>
    stageCost(problem, bounds[k - 1]!, bounds[k]!, k - 1, t).feasible && stageCost(problem, bounds[k]!, bounds[k + 1]!, k, t).feasible;

  /** Coordinate descent: each boundary to its best position within `reach` (between its neighbours). */
  const descend = (from: readonly number[], judge: (b: readonly number[]) => [number, number], reach: number, sweeps: number): number[] => {
    const bounds = [...from];
    let best = judge(bounds);
    for (let sweep = 0; sweep < sweeps; sweep++) {
      let moved = false;
      for (let k = 1; k < S; k++) {
        const at = bounds[k]!;
        let pick = at;
        for (let j = Math.max(bounds[k - 1]! + 1, at - reach); j < Math.min(bounds[k + 1]!, at + reach + 1); j++) {
          if (j === at) continue;
          bounds[k] = j;
          if (!feasible(bounds, k)) continue;
          const score = judge(bounds);
          if (better(score, best)) {
            best = score;
            pick = j;
          }
        }
        bounds[k] = pick;
        if (pick !== at) moved = true;
      }
      if (!moved) break;
    }
    return bounds;
  };
  const refined = descend(descend(start, byLoad, N, 20), bySimulation, POLISH.reach, POLISH.sweeps);
  return better(bySimulation(refined), bySimulation(start)) ? refined : [...start];
}
