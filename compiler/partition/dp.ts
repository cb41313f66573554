/**
 * The optimal split of a sequence of units into S contiguous stages.
 *
 * Each stage's cost blends its memory and its time, both normalised by the whole model's:
 *
 *   cost = w · memory / totalMemory + (1 − w) · (compute + boundary transfer) / totalTime
 *
 * where w is SMP's `memory_weight`. Memory is parameters (with gradients and optimizer state), the
 * activations stashed for backward times the microbatches in flight at that stage, and the largest
 * temporary; time is forward plus backward compute plus sending the stage's outgoing boundary
 * (activations forward, gradients back). A stage over the device's memory is infeasible.
 *
 * Minimising the largest stage cost is the bottleneck objective of a pipeline: the slowest stage sets
 * the step time. It is solved exactly by dynamic programming over (stages used, units covered) in
 * O(S · N²); a second pass, among the splits that reach that bottleneck, minimises the sum of squared
 * stage costs, so stages that are not the bottleneck come out balanced too.
 */
export interface SplitProblem {
  /** Per unit: compute seconds (forward + backward). */
  time: ArrayLike<number>;
  /** Per unit: stashed bytes per in-flight microbatch. */
  stash: ArrayLike<number>;
  /** Per unit: largest transient bytes. */
  temp: ArrayLike<number>;
  /** Per unit: indices of the parameters it reads. */
  params: readonly (readonly number[])[];
  /** Per parameter: bytes it costs on a stage (weight, gradient, optimizer state). */
  paramBytes: ArrayLike<number>;
  /** commTime[i]: seconds to move the boundary before unit i (both directions); 0 at 0 and N. */
  commTime: ArrayLike<number>;
  /** inBytes[i]: activation bytes arriving at a stage that starts at unit i (stashed for backward). */
  inBytes: ArrayLike<number>;
  stages: number;
  /** Microbatches in flight at stage k. */
  inFlight: (k: number) => number;
  /** Memory per stage, bytes. */
  capacity: number;
  memoryWeight: number;
  /** Per unit: the stage it must be on, or −1. */
  fixed?: ArrayLike<number>;
}

export interface StageCost {
  memory: number;
  time: number;
  cost: number;
  feasible: boolean;
}

interface Totals { memory: number; time: number }

export function totals(p: SplitProblem): Totals {
  let time = 0, stash = 0, temp = 0;
  for (let u = 0; u < p.time.length; u++) {
    time += p.time[u]!;
    stash += p.stash[u]!;
    temp = Math.max(temp, p.temp[u]!);
  }
  let params = 0;
  for (let i = 0; i < p.paramBytes.length; i++) params += p.paramBytes[i]!;
  return { memory: params + stash + temp || 1, time: time || 1 };
}

/** Cost of stage k covering units [i, j), computed directly (the DP computes the same incrementally). */
export function stageCost(p: SplitProblem, i: number, j: number, k: number, t: Totals = totals(p)): StageCost {
  let time = 0, stash = p.inBytes[i]!, temp = 0, params = 0;
  const seen = new Set<number>();
  let fixedOk = true;
  for (let u = i; u < j; u++) {
    time += p.time[u]!;
    stash += p.stash[u]!;
    temp = Math.max(temp, p.temp[u]!);
    for (const q of p.params[u]!) if (!seen.has(q)) { seen.add(q); params += p.paramBytes[q]!; }
    const f = p.fixed ? p.fixed[u]! : -1;
    if (f >= 0 && f !== k) fixedOk = false;
  }
  time += p.commTime[j]!;
  const memory = params + stash * p.inFlight(k) + temp;
  const feasible = fixedOk && memory <= p.capacity;
  const cost = p.memoryWeight * (memory / t.memory) + (1 - p.memoryWeight) * (time / t.time);
  return { memory, time, cost, feasible };
}

export interface Split {
  /** Stage boundaries: stage k covers units [bounds[k], bounds[k+1]). */
  bounds: number[];
  /** The largest stage cost (the objective). */
  bottleneck: number;
}

/** The optimal contiguous split, or null when no split is feasible (memory, fixed stages, too few units). */
export function optimalSplit(p: SplitProblem): Split | null {
  const N = p.time.length, S = p.stages;
  if (N < S) return null;
  const t = totals(p);
  // Pass 1: minimise the bottleneck. Pass 2: among splits within it, minimise Σ cost².
  const best = solve(p, t, (prev, c) => Math.max(prev, c), Infinity);
  if (!best) return null;
  const bottleneck = best.value;
  const balanced = solve(p, t, (prev, c) => (c <= bottleneck * (1 + 1e-9) + 1e-15 ? prev + c * c : Infinity), Infinity);
  return { bounds: (balanced ?? best).bounds, bottleneck };
}

/** Generic DP over (stage, end): f[k][j] = min_i combine(f[k−1][i], cost(i, j, k)). */
function solve(p: SplitProblem, t: Totals, combine: (prev: number, cost: number) => number, inf: number): { value: number; bounds: number[] } | null {
  const N = p.time.length, S = p.stages;
  let prev = new Float64Array(N + 1).fill(inf);
  prev[0] = 0;
  const arg: Int32Array[] = [];
  const seen = new Int32Array(p.paramBytes.length).fill(-1);
  let stamp = 0;
  for (let k = 0; k < S; k++) {
    const cur = new Float64Array(N + 1).fill(inf);
    const from = new Int32Array(N + 1).fill(-1);
    const flight = p.inFlight(k);
    // Stage k ends at j; it must leave at least one unit for each later stage.
    for (let j = k + 1; j <= N - (S - 1 - k); j++) {
      stamp++;
      let time = 0, stash = 0, temp = 0, params = 0;
      let fixedOk = true;
      // Extend the stage backwards from j: running sums give cost(i, j, k) in O(1) per i.
      for (let i = j - 1; i >= k; i--) {
        time += p.time[i]!;
        stash += p.stash[i]!;
        temp = Math.max(temp, p.temp[i]!);
        for (const q of p.params[i]!) if (seen[q] !== stamp) { seen[q] = stamp; params += p.paramBytes[q]!; }
        const f = p.fixed ? p.fixed[i]! : -1;
        if (f >= 0 && f !== k) fixedOk = false;
        if (!fixedOk) break;
        if (prev[i] === inf) continue;
        const memory = params + (stash + p.inBytes[i]!) * flight + temp;
        if (memory > p.capacity) continue;
        const c = p.memoryWeight * (memory / t.memory) + (1 - p.memoryWeight) * ((time + p.commTime[j]!) / t.time);
        const v = combine(prev[i]!, c);
        if (v < cur[j]!) {
          cur[j] = v;
          from[j] = i;
        }
      }
    }
    arg.push(from);
    prev = cur;
  }
  if (prev[N] === inf) return null;
  const bounds = new Array<number>(S + 1);
  bounds[S] = N;
  for (let k = S - 1; k >= 0; k--) bounds[k] = arg[k]![bounds[k + 1]!]!;
  return { value: prev[N]!, bounds };
}
