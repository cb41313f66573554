import { CleaveError } from '../../src/core/errors.js';
import type { Node, Value } from '../../src/core/ir/graph.js';
import { numel } from '../../src/core/ir/shape.js';
import type { TrainingGraph } from '../autodiff/training.js';
import { type OptimizerFamily, type ScheduleName, bytesPerParam, inFlight } from '../cost/memory.js';
import { type DtypePolicy, type MeasuredProfile, costModel } from '../cost/model.js';
import { deviceProfile } from '../cost/profiles.js';
import { type SplitProblem, optimalSplit, stageCost, totals } from './dp.js';
import { type PipelineShape, type UnitTimes, refineSplit } from './refine.js';
import { checkSpec, stageRank } from '../schedule/pipeline.js';
import { valueBytes } from '../schedule/programs.js';
import { type Units, buildUnits } from './units.js';

export interface PartitionOptions {
  /** Pipeline ranks (SMP's `partitions`). */
  partitions: number;
  /** Stages per rank (interleaved schedules); S = partitions × virtualStages. */
  virtualStages?: number;
  /** SMP's memory_weight: 0 balances time only, 1 memory only. Default 0.8, as in SMP. */
  memoryWeight?: number;
  device?: string;
  policy?: DtypePolicy;
  optimizer?: OptimizerFamily;
  schedule?: ScheduleName;
  microbatches?: number;
  /** SMP's active_microbatches (the schedule's limit on microbatches in flight). */
  activeMicrobatches?: number;
  /** SMP's auto_partition (default true). Off: unannotated nodes go to `defaultPartition`. */
  autoPartition?: boolean;
  defaultPartition?: number;
  /** `REGEX=STAGE` rules matched against node names (scopes included). */
  assign?: readonly string[];
  measured?: MeasuredProfile;
}

export interface StagePlan {
  index: number;
  /** The pipeline rank that runs the stage (round-robin for virtual stages). */
  rank: number;
  /** Forward and loss nodes, in order. */
  nodes: Node[];
  backward: Node[];
  params: string[];
  paramCount: number;
  fwdMs: number;
  bwdMs: number;
  /** Sending this stage's outgoing boundary, both directions. */
  commMs: number;
  memory: { params: number; activations: number; temp: number; total: number };
  /** Values this stage sends to later stages. */
  sends: { value: Value; to: number[]; bytes: number }[];
}

export interface Partition {
  stages: StagePlan[];
  /** Every node of the training graph → its stage. */
  stageOf: Map<Node, number>;
  /** Parameters read on several stages: each keeps a copy; gradients are all-reduced among them. */
  tied: { param: string; stages: number[] }[];
  /** Slowest stage time ÷ mean stage time. */
  imbalance: number;
  mode: 'auto' | 'manual' | 'mixed';
  device: string;
  capacityBytes: number;
}

interface Rule { re: RegExp; stage: number; text: string }

export function parseRule(text: string): Rule {
  const k = text.lastIndexOf('=');
  const stage = Number(text.slice(k + 1));
  if (k <= 0 || !Number.isInteger(stage) || stage < 0) throw new CleaveError(`--assign '${text}': a rule is REGEX=STAGE, such as '/h\\.[0-5]/=0'`);
  try {
    return { re: new RegExp(text.slice(0, k)), stage, text };
  } catch (e) {
    throw new CleaveError(`--assign '${text}': ${(e as Error).message}`);
  }
}

/** Stage annotations of the forward units: ONNX annotations first, then the first matching rule. */
function annotate(u: Units, rules: Rule[], S: number): Int32Array {
  const fixed = new Int32Array(u.units.length).fill(-1);
  const hint = `there ${S === 1 ? 'is' : 'are'} ${S} stage${S === 1 ? '' : 's'} (0–${S - 1}); raise -p/--virtual-stages or fix the annotation`;
  for (const unit of u.units) {
    const n = unit.node;
    const from = n.meta.partition !== undefined ? { stage: n.meta.partition, why: 'its ONNX annotation' } : (() => {
      const r = rules.find((x) => x.re.test(n.name));
      return r ? { stage: r.stage, why: `rule '${r.text}'` } : undefined;
    })();
    if (!from) continue;
    if (from.stage >= S) throw new CleaveError(`node '${n.name}' is placed on stage ${from.stage} by ${from.why}, but ${hint}`);
    fixed[unit.index] = from.stage;
  }
  // A rule that places nothing is a typo or a model other than the one meant: never ignored.
  const idle = rules.find((r) => !u.units.some((x) => r.re.test(x.node.name)));
  if (idle) {
    const names = u.units.slice(0, 3).map((x) => `'${x.node.name}'`).join(', ');
    throw new CleaveError(`--assign '${idle.text}' matches no node of the model (its node names look like ${names})`);
  }
  return fixed;
}

/** Every edge between stages must point forward; the error names both ends and the value. */
function checkEdges(u: Units, stage: ArrayLike<number>): void {
  const unitOf = new Map(u.units.map((x) => [x.node, x.index]));
  for (const unit of u.units) {
    for (const v of unit.node.inputs) {
      const p = v?.producer ? unitOf.get(v.producer) : undefined;
      if (p === undefined) continue;
      if (stage[p]! > stage[unit.index]!) {
        throw new CleaveError(`edge '${v!.producer!.name}' → '${unit.node.name}' (value '${v!.name}') goes from stage ${stage[p]} back to stage ${stage[unit.index]}: a stage may only feed later stages; move '${unit.node.name}' to stage ≥ ${stage[p]} or '${v!.producer!.name}' to stage ≤ ${stage[unit.index]}`);
      }
    }
  }
}

/** The partitioner's view of a training graph: its units and the split problem over them. */
export interface Prepared {
  units: Units;
  problem: SplitProblem;
  fixed: Int32Array;
  S: number;
  p: number;
  device: string;
  bytes: (v: Value) => number;
  /** The pipeline the split is for, and the units' times the schedule's simulation takes. */
  shape: PipelineShape;
  times: UnitTimes;
}

export function preparePartition(t: TrainingGraph, opts: PartitionOptions): Prepared {
  const p = opts.partitions, v = opts.virtualStages ?? 1;
  if (!Number.isInteger(p) || p < 1) throw new CleaveError(`partitions must be a positive integer, got ${p}`);
  if (!Number.isInteger(v) || v < 1) throw new CleaveError(`virtual stages must be a positive integer, got ${v}`);
  const S = p * v;
  const w = opts.memoryWeight ?? 0.8;
  if (!(w >= 0 && w <= 1)) throw new CleaveError(`memory_weight must be in [0, 1], got ${w}`);
  const device = deviceProfile(opts.device ?? 'h100');
  const cost = costModel(device, opts.policy ?? 'fp32', opts.measured);
  const schedule = opts.schedule ?? '1f1b';
  const M = opts.microbatches ?? S;
  const u = buildUnits(t, cost);
  const rules = (opts.assign ?? []).map(parseRule);
  const fixed = annotate(u, rules, S);
  const bpp = bytesPerParam(opts.optimizer ?? 'adamw', opts.policy ?? 'fp32');
  const problem: SplitProblem = {
    time: u.units.map((x) => x.fwd + x.bwd),
    stash: u.units.map((x) => x.stash),
    temp: u.units.map((x) => x.temp),
    params: u.units.map((x) => x.params),
    paramBytes: u.paramElems.map((n) => n * bpp),
    commTime: u.cut.map((b, i) => cost.transferTime(b) + cost.transferTime(u.cutGrad[i]!)),
    inBytes: u.cut,
    stages: S,
    inFlight: (k) => inFlight(schedule, k, S, p, M),
    // Virtual stages of one rank share its memory.
    capacity: device.memory / v,
    memoryWeight: w,
    fixed,
  };
  // Transfers as compile times the schedule: the crossing values' bytes (valueBytes), one way.
  const comm = Array.from({ length: u.units.length + 1 }, (_, i) => cost.transferTime(u.crossing(i).reduce((a, x) => a + valueBytes(x), 0)));
  const times: UnitTimes = { f: u.units.map((x) => x.fwd), b: u.units.map((x) => x.bwd - x.wgt), w: u.units.map((x) => x.wgt), comm: (i) => comm[i]! };
  return { units: u, problem, fixed, S, p, device: device.name, bytes: (x) => cost.bytes(x.dtype, numel(x.shape, 1)), shape: { schedule, p, v, m: M, active: opts.activeMicrobatches }, times };
}

export function partitionTraining(t: TrainingGraph, opts: PartitionOptions): Partition {
  const prep = preparePartition(t, opts);
  const { units: u, problem, fixed, S, p } = prep;
  const N = u.units.length;
  const annotated = fixed.some((x) => x >= 0);
  const auto = opts.autoPartition ?? true;
  let stage: Int32Array;
  if (!auto) {
    const dflt = opts.defaultPartition ?? 0;
    if (!Number.isInteger(dflt) || dflt < 0 || dflt >= S) throw new CleaveError(`default_partition ${dflt} is out of range: there are ${S} stages (0–${S - 1})`);
    stage = Int32Array.from(fixed, (x) => (x >= 0 ? x : dflt));
  } else {
    if (N < S) throw new CleaveError(`the model has ${N} forward nodes, too few for ${S} stages; lower -p or --virtual-stages`);
    const split = optimalSplit(problem);
    if (!split) throw explainInfeasible(u, problem, fixed, prep.device);
    // Several stages per rank: the schedule's simulation moves the DP's boundaries (refineSplit),
    // where the schedule can run this pipeline at all (compile says why where it cannot).
    const bounds = prep.shape.v > 1 && runnable(prep.shape) ? refineSplit(problem, split.bounds, prep.shape, prep.times) : split.bounds;
    stage = new Int32Array(N);
    for (let k = 0; k < S; k++) for (let i = bounds[k]!; i < bounds[k + 1]!; i++) stage[i] = k;
  }
  checkEdges(u, stage);
  for (let k = 0; k < S; k++) {
    if (!stage.includes(k)) {
      throw new CleaveError(`stage ${k} has no nodes: ${auto ? 'the annotations leave it empty' : `every unannotated node goes to default_partition ${opts.defaultPartition ?? 0}`}; annotate nodes for stage ${k}, or lower -p`);
    }
  }
  return describe(u, stage, problem, {
    S, p, schedule: opts.schedule ?? '1f1b', mode: !auto ? 'manual' : annotated ? 'mixed' : 'auto', device: prep.device, capacity: problem.capacity,
    ms: (s) => s * 1000, bytes: prep.bytes,
  });
}

function runnable(shape: PipelineShape): boolean {
  try {
    checkSpec({ ...shape, times: { f: [], b: [], w: [], comm: [] } });
    return true;
  } catch {
    return false;
  }
}

function explainInfeasible(u: Units, problem: SplitProblem, fixed: Int32Array, device: string): CleaveError {
  let last = -1, lastNode = '';
  for (const unit of u.units) {
    const f = fixed[unit.index]!;
    if (f < 0) continue;
    if (f < last) return new CleaveError(`annotations cannot form contiguous stages: '${lastNode}' (stage ${last}) comes before '${unit.node.name}' (stage ${f}) in topological order; stages follow the model's order`);
    last = f;
    lastNode = unit.node.name;
  }
  // Memory: what the least memory-hungry split would need per device.
  const lean = optimalSplit({ ...problem, memoryWeight: 1, capacity: Infinity, fixed: undefined });
  if (lean) {
    const t = totals(problem);
    let peak = 0;
    for (let k = 0; k < problem.stages; k++) peak = Math.max(peak, stageCost(problem, lean.bounds[k]!, lean.bounds[k + 1]!, k, t).memory);
    if (peak > problem.capacity) {
      const gib = (b: number) => (b / 2 ** 30).toFixed(2);
      return new CleaveError(`no split fits in memory: the leanest needs ${gib(peak)} GiB on some stage, more than the ${gib(problem.capacity)} GiB a stage has on ${device}; use more partitions, fewer microbatches in flight, or the bf16 policy`);
    }
  }
  return new CleaveError('the annotations leave no feasible split; check that annotated stages are in model order and leave room for every stage');
}

interface DescribeOptions {
  S: number;
  p: number;
  schedule: ScheduleName;
  mode: Partition['mode'];
  device: string;
  capacity: number;
  ms: (s: number) => number;
  bytes: (v: Value) => number;
}

function describe(u: Units, stage: Int32Array, problem: SplitProblem, o: DescribeOptions): Partition {
  const stageOf = new Map<Node, number>();
  const stages: StagePlan[] = Array.from({ length: o.S }, (_, k) => ({
    index: k, rank: stageRank(o.schedule, k, o.p), nodes: [], backward: [], params: [], paramCount: 0, fwdMs: 0, bwdMs: 0, commMs: 0,
    memory: { params: 0, activations: 0, temp: 0, total: 0 }, sends: [],
  }));
  const paramStages = new Map<number, Set<number>>();
  for (const unit of u.units) {
    const k = stage[unit.index]!;
    const s = stages[k]!;
    s.nodes.push(unit.node);
    s.backward.push(...unit.backward);
    stageOf.set(unit.node, k);
    for (const b of unit.backward) stageOf.set(b, k);
    s.fwdMs += o.ms(unit.fwd);
    s.bwdMs += o.ms(unit.bwd);
    s.memory.activations += unit.stash * problem.inFlight(k);
    s.memory.temp = Math.max(s.memory.temp, unit.temp);
    for (const q of unit.params) {
      const set = paramStages.get(q) ?? new Set<number>();
      set.add(k);
      paramStages.set(q, set);
    }
  }
  for (const [q, set] of paramStages) {
    for (const k of set) {
      stages[k]!.params.push(u.params[q]!.name);
      stages[k]!.paramCount += u.paramElems[q]!;
      stages[k]!.memory.params += problem.paramBytes[q]!;
    }
  }
  // Boundary values: produced on one stage, read on later ones.
  const unitOf = new Map(u.units.map((x) => [x.node, x.index]));
  for (const unit of u.units) {
    const k = stage[unit.index]!;
    for (const v of unit.node.outputs) {
      const to = new Set<number>();
      for (const user of v.users) {
        const s = stageOf.get(user);
        if (s !== undefined && s !== k) to.add(s);
      }
      if (!to.size) continue;
      stages[k]!.sends.push({ value: v, to: [...to].sort((a, b) => a - b), bytes: o.bytes(v) });
    }
  }
  for (const s of stages) {
    // Received activations are stashed for backward like the stage's own.
    const first = s.nodes[0] ? unitOf.get(s.nodes[0]!)! : 0;
    if (isContiguous(stage, s.index)) s.memory.activations += problem.inBytes[first]! * problem.inFlight(s.index);
    s.memory.total = s.memory.params + s.memory.activations + s.memory.temp;
    const last = s.nodes.length ? unitOf.get(s.nodes[s.nodes.length - 1]!)! + 1 : 0;
    s.commMs = isContiguous(stage, s.index) ? o.ms(problem.commTime[last] ?? 0) : 0;
  }
  const times = stages.map((s) => s.fwdMs + s.bwdMs + s.commMs);
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  const tied = [...paramStages].filter(([, set]) => set.size > 1).map(([q, set]) => ({ param: u.params[q]!.name, stages: [...set].sort((a, b) => a - b) }));
  return { stages, stageOf, tied, imbalance: mean ? Math.max(...times) / mean : 1, mode: o.mode, device: o.device, capacityBytes: o.capacity };
}

function isContiguous(stage: Int32Array, k: number): boolean {
  const first = stage.indexOf(k), last = stage.lastIndexOf(k);
  for (let i = first; i <= last; i++) if (stage[i] !== k) return false;
  return first >= 0;
}
