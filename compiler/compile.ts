import { dirname, resolve } from 'node:path';
import { type LossSpec, autoLoss } from './autodiff/loss.js';
import { type TrainingGraph, buildTrainingGraph } from './autodiff/training.js';
import { type OptimizerFamily, type ScheduleName, SCHEDULES } from './cost/memory.js';
import { type CostModel, type DtypePolicy, type MeasuredProfile, costModel } from './cost/model.js';
import { deviceProfile } from './cost/profiles.js';
import { readModelFile } from '../src/core/onnx/codec.js';
import { exporterMadeParams, frozenBuffers, importModel } from './onnx/import.js';
import { type FusionReport, emptyFusionReport, fuseForward } from './passes/fusions.js';
import { fuseEpilogues } from './passes/epilogue.js';
import { fuseMatMuls } from './passes/matmul.js';
import { type Partition, partitionTraining } from './partition/partition.js';
import { type Placement, buildInstructions } from './schedule/instructions.js';
import { checkMemory, programWorkspace, rankMemory } from './schedule/memory_plan.js';
import { type PipelineSchedule, schedulePipeline, stageRank } from './schedule/pipeline.js';
import { type ProgramKind, type Programs, buildPrograms } from './schedule/programs.js';
import { simulate } from '../src/core/plan/simulate.js';
import { CleaveError } from '../src/core/errors.js';
import { dtypeToOnnx } from '../src/core/ir/dtype.js';
import type { Graph, Node, Value } from '../src/core/ir/graph.js';
import { numel } from '../src/core/ir/shape.js';
import { parameterStats } from '../src/core/ir/stats.js';
import { tensorToBytes } from '../src/core/ir/tensor.js';
import { getOp } from '../src/core/ops/index.js';
import { type Plan, type PlanOptimizer, PLAN_VERSION, type PlanNode, type PlanValue, type WeightRef, type Workspace } from '../src/core/plan/types.js';
import { attrsToJson } from '../src/core/plan/attrs.js';
import { optimizerFamily, planOptimizer, stateBuffers } from '../src/core/plan/optimizer.js';

export interface CompileOptions {
  model: string;
  /** The model already imported (benchmarks build theirs in code); `model` then only names it. */
  graph?: Graph;
  loss: LossSpec | 'auto';
  partitions: number;
  microbatches: number;
  /** Samples per step per data-parallel replica; each microbatch gets batch ÷ microbatches. */
  batch?: number;
  schedule: ScheduleName | 'auto';
  virtualStages?: number;
  dp?: number;
  placement?: Placement;
  activeMicrobatches?: number;
  memoryWeight?: number;
  autoPartition?: boolean;
  defaultPartition?: number;
  assign?: readonly string[];
  device?: string;
  policy?: DtypePolicy;
  /** The optimizer's family: what state the memory plan holds (default: `optimizerConfig`'s, else adamw). */
  optimizer?: OptimizerFamily;
  /** The optimizer and hyperparameters the plan records for `cleave run` (default: `optimizer`'s family with cleave's defaults). */
  optimizerConfig?: PlanOptimizer;
  measured?: MeasuredProfile;
  dims?: Record<string, number>;
  /** Fuse causal attention into one kernel and fold transposes and scalar scalings into matrix products (default true; false compiles the graph as written). */
  fuse?: boolean;
}

/** Everything a compile produced, for the writer, the printer and tests. */
export interface Compiled {
  plan: Plan;
  training: TrainingGraph;
  partition: Partition;
  pipeline: PipelineSchedule;
  /** What the fusion passes did and left. */
  fusions: FusionReport;
}

const PROG_KINDS: ProgramKind[] = ['forward', 'backwardB', 'backwardW'];

/** Compiles for one schedule; `auto` tries each that applies and keeps the fastest that fits. */
export function compile(o: CompileOptions): Compiled {
  if (o.schedule !== 'auto') return compileWith(prepare(o), o.schedule);
  // One training graph serves every candidate: the schedule changes only what comes after it.
  const prepared = prepare(o);
  const tried: string[] = [];
  let best: Compiled | undefined;
  for (const s of SCHEDULES) {
    const v = s === 'zbv' || s === 'interleaved-1f1b' ? 2 : 1;
    if (s === 'interleaved-1f1b' && o.microbatches % o.partitions) continue;
    try {
      const c = compileWith({ ...prepared, o: { ...prepared.o, virtualStages: v } }, s);
      if (!best || c.plan.prediction.stepMs < best.plan.prediction.stepMs) best = c;
    } catch (e) {
      if (!(e instanceof CleaveError)) throw e;
      tried.push(`${s}: ${e.message}`);
    }
  }
  if (!best) throw new CleaveError(`no schedule fits:\n  ${tried.join('\n  ')}`);
  return best;
}

/** The training graph's fusion passes; its loss and gradient records follow the values by name. */
function fuseTraining(t: TrainingGraph, report: FusionReport): void {
  const folded = fuseMatMuls(t.graph, new Set([t.seed]));
  const epilogues = fuseEpilogues(t.graph);
  if (folded) report.rules.push({ rule: 'transposes and scalings folded into products (nodes removed)', count: folded });
  if (epilogues) report.rules.push({ rule: 'bias and GELU folded into GEMM epilogues (nodes removed)', count: epilogues });
  const now = (v: Value): Value => t.graph.values.get(v.name) ?? v;
  t.loss = now(t.loss);
  t.seed = now(t.seed);
  for (const [k, v] of t.grads) t.grads.set(k, now(v));
  for (const [k, v] of t.stateUpdates) t.stateUpdates.set(k, now(v));
}

/** The training graph a compile partitions: imported at the microbatch size, differentiated, fused. */
interface Prepared { o: CompileOptions & { optimizer: OptimizerFamily }; optimizerConfig: PlanOptimizer; g: Graph; lossSpec: LossSpec; training: TrainingGraph; microbatch: number; fusions: FusionReport }

/**
 * The microbatch size a model with a fixed batch dimension allows (exporters such as torch.onnx's
 * dynamo path bake the sample's batch into every Reshape): that dimension, where --batch was not
 * given; a --batch that disagrees is refused, naming the input.
 */
function fixedBatch(g: Graph, microbatch: number, batch: number | undefined, m: number): number {
  const fixed = g.inputs.find((v) => typeof v.shape[0] === 'number' && v.shape[0] !== microbatch);
  if (!fixed) return microbatch;
  const b0 = fixed.shape[0] as number;
  const other = g.inputs.find((v) => v.shape[0] !== b0);
  if (other) throw new CleaveError(`the model's inputs disagree on the batch: '${fixed.name}' [${fixed.shape}] and '${other.name}' [${other.shape}]`);
  if (batch !== undefined) throw new CleaveError(`--batch ${batch} makes microbatches of ${microbatch}, but the model's input '${fixed.name}' has a fixed batch of ${b0} ([${fixed.shape}]): use --batch ${b0 * m}, or export the model with a dynamic batch dimension`);
  return b0;
}

function prepare(given: CompileOptions): Prepared {
  const optimizerConfig = given.optimizerConfig ?? planOptimizer(given.optimizer ?? 'adamw');
  const o = { ...given, optimizer: given.optimizer ?? optimizerFamily(optimizerConfig) };
  if (stateBuffers(o.optimizer) < stateBuffers(optimizerFamily(optimizerConfig))) {
    throw new CleaveError(`the optimizer ${optimizerConfig.kind} keeps more state than the ${o.optimizer} family the memory plan is asked to hold`);
  }
  const m = o.microbatches, dp = o.dp ?? 1;
  const batch = o.batch ?? m;
  if (!Number.isInteger(dp) || dp < 1) throw new CleaveError(`--dp must be a positive integer, got ${dp}`);
  if (!Number.isInteger(batch) || batch % m) throw new CleaveError(`--batch ${batch} does not divide into ${m} microbatches`);
  let microbatch = batch / m;
  const g = o.graph ?? importModel(readModelFile(o.model), { baseDir: dirname(o.model), file: o.model }, { batch: microbatch, dims: o.dims });
  microbatch = fixedBatch(g, microbatch, o.batch, m);
  const lossSpec = o.loss === 'auto' ? autoLoss(g) : o.loss;
  // Attention is fused on the training graph's own copy: a graph handed in by the caller stays as given.
  const fusions = emptyFusionReport(frozenBuffers(g), exporterMadeParams(g));
  const training = buildTrainingGraph(g, { loss: lossSpec, rewrite: o.fuse !== false ? (t) => fuseForward(t, fusions) : undefined });
  if (o.fuse !== false) fuseTraining(training, fusions);
  return { o, optimizerConfig, g, lossSpec, training, microbatch, fusions };
}

const virtualStagesOf = (o: CompileOptions, schedule: ScheduleName): number => o.virtualStages ?? (schedule === 'zbv' ? 2 : 1);

function partitionPrepared({ o, training }: Prepared, schedule: ScheduleName): Partition {
  return partitionTraining(training, {
    partitions: o.partitions, virtualStages: virtualStagesOf(o, schedule), memoryWeight: o.memoryWeight, device: deviceProfile(o.device ?? 'h100').name, policy: o.policy, optimizer: o.optimizer,
    schedule, microbatches: o.microbatches, activeMicrobatches: o.activeMicrobatches, autoPartition: o.autoPartition, defaultPartition: o.defaultPartition, assign: o.assign, measured: o.measured,
  });
}

/**
 * The stages a compile builds, and nothing after: the same import, loss, fusions and partitioner
 * (`cleave partition` prints these). `auto` is not a schedule here: the partition depends on it.
 */
export function partitionModel(o: CompileOptions & { schedule: ScheduleName }): { partition: Partition; training: TrainingGraph; microbatch: number } {
  const prepared = prepare(o);
  return { partition: partitionPrepared(prepared, o.schedule), training: prepared.training, microbatch: prepared.microbatch };
}

function compileWith(prepared: Prepared, schedule: ScheduleName): Compiled {
  const { o, optimizerConfig, g, lossSpec, training, microbatch } = prepared;
  const p = o.partitions, m = o.microbatches, dp = o.dp ?? 1;
  const v = virtualStagesOf(o, schedule);
  const device = deviceProfile(o.device ?? 'h100');
  const cost = costModel(device, o.policy ?? 'fp32', o.measured);
  const S = p * v;
  const partition = partitionPrepared(prepared, schedule);
  const rankOf = (s: number) => stageRank(schedule, s, p);
  const progs = buildPrograms(training, partition, rankOf);
  const ms = (nodes: readonly Node[]) => nodes.reduce((a, n) => a + cost.nodeTime(n), 0) * 1000;
  const stageMs = progs.stages.map((s) => ({ f: ms(s.forward), b: ms(s.backwardB), w: ms(s.backwardW) }));
  const commMs = Array.from({ length: S }, (_, s) => {
    const bytes = progs.boundaries.filter((b) => b.from === s && b.to === s + 1).reduce((a, b) => a + b.bytes, 0);
    return rankOf(s) === rankOf(s + 1) ? 0 : cost.transferTime(bytes) * 1000;
  });
  const pipeline = schedulePipeline({
    schedule, p, v, m, active: o.activeMicrobatches,
    times: { f: stageMs.map((x) => x.f), b: stageMs.map((x) => x.b), w: stageMs.map((x) => x.w), comm: commMs },
  });
  const world = { pp: p, dp, placement: o.placement ?? 'cluster' };
  const inst = buildInstructions(progs, pipeline, world, rankOf);

  // Plan tables: values and nodes by index.
  const g2 = training.graph;
  const values: PlanValue[] = [];
  const vIndex = new Map<Value, number>();
  for (const val of g2.values.values()) {
    vIndex.set(val, values.length);
    values.push({
      name: val.name, dtype: dtypeToOnnx(val.dtype), shape: val.shape.map((d) => Number(d)), kind: val.kind,
      ...(val.kind === 'const' && val.data ? { data: tensorToBytes(val.data) } : {}),
      ...(val.kind === 'param' || val.kind === 'state' ? weightRef(g.values.get(val.name) ?? val) : {}),
    });
  }
  const nodes: PlanNode[] = [];
  const nIndex = new Map<object, number>();
  for (const n of g2.nodes) {
    if (progs.dropped.has(n)) continue;
    nIndex.set(n, nodes.length);
    nodes.push({
      name: n.name, op: n.op, inputs: n.inputs.map((x) => (x ? vIndex.get(x)! : -1)), outputs: n.outputs.map((x) => vIndex.get(x)!),
      attrs: attrsToJson(n.attrs), phase: String(n.meta['phase']), stage: progs.stageOf.get(n)!,
    });
  }
  const workspaces = progs.stages.map((s) => Object.fromEntries(PROG_KINDS.map((k) => [k, workspaceOf(progs, s.index, k, vIndex)])) as Record<ProgramKind, Workspace>);
  const readers = (tid: number) => {
    const b = progs.boundaries[tid]!;
    const st = progs.stages[b.to]!;
    const out: ('FORWARD' | 'BACKWARD_B' | 'BACKWARD_W')[] = [];
    if (st.forward.some((n) => n.inputs.includes(b.value))) out.push('FORWARD');
    if (st.backwardB.some((n) => n.inputs.includes(b.value))) out.push('BACKWARD_B');
    if (st.backwardW.some((n) => n.inputs.includes(b.value))) out.push('BACKWARD_W');
    return out;
  };
  const sim = simulate({
    ranks: inst.ranks, groups: inst.groups, buckets: inst.buckets,
    tensors: progs.boundaries.map((b) => ({ id: b.id, bytes: b.bytes, fromStage: b.from, toStage: b.to, direction: b.direction })),
    stageRank: rankOf, ppRankOf: (w) => inst.coords[w]!.pp, readers,
    computeMs: (ins) => computeMs(ins, stageMs, progs, cost),
    transferMs: (bytes, from, to) => cost.transferTime(bytes, Math.floor(from / 8) !== Math.floor(to / 8)) * 1000,
    allreduceMs: (bytes, ranks) => allreduceMs(cost, bytes, ranks),
  });
  const ranks = inst.ranks.map((list, w) => {
    const c = inst.coords[w]!;
    const timed = list.map((ins, i) => ({ ...ins, startMs: sim.times[w]![i]!.start, endMs: sim.times[w]![i]!.end }));
    const onRank = progs.stages.filter((s) => s.ppRank === c.pp).map((s) => s.index);
    const mem = rankMemory(progs, timed, (s, k) => workspaces[s]![k].bytes, o.optimizer ?? 'adamw', onRank);
    checkMemory(w, mem.allocations, mem.arenaBytes);
    const busy = timed.filter((x) => x.kind !== 'SEND' && x.kind !== 'RECV' && x.kind !== 'ALLREDUCE').reduce((a, x) => a + (x.endMs - x.startMs), 0);
    return { rank: w, ppRank: c.pp, dpRank: c.dp, instructions: timed, memory: mem, bubble: sim.stepMs ? 1 - busy / sim.stepMs : 0 };
  });
  const bucketValues = inst.bucketParams;
  const plan: Plan = {
    version: PLAN_VERSION,
    producer: 'cleave 0.1.0',
    model: {
      name: g.name, source: resolve(o.model), sourceFromPlan: '', opset: g.opset, loss: JSON.stringify(lossSpec), microbatchSize: microbatch,
      dtypePolicy: o.policy ?? 'fp32', optimizer: o.optimizer, optimizerConfig, parameters: parameterStats(g).count,
      lossValue: vIndex.get(training.loss)!,
      labelsValue: training.labels ? vIndex.get(training.labels)! : -1,
      lossSeedValue: vIndex.get(training.seed) ?? -1,
      classes: lossSpec.kind === 'cross-entropy' ? Number(g.outputs.find((x) => x.name === lossSpec.output)?.shape.at(-1) ?? g.outputs[0]!.shape.at(-1)) : 0,
    },
    world: { pp: p, dp, virtualStages: v, placement: world.placement, size: p * dp },
    schedule: { name: schedule, microbatches: m, activeMicrobatches: o.activeMicrobatches ?? 0, device: device.name, split: pipeline.split },
    values,
    nodes,
    stages: progs.stages.map((s) => ({
      index: s.index, ppRank: s.ppRank,
      forward: s.forward.map((n) => nIndex.get(n)!), backwardB: s.backwardB.map((n) => nIndex.get(n)!), backwardW: s.backwardW.map((n) => nIndex.get(n)!),
      params: s.params.map((x) => vIndex.get(x)!),
      workspaces: { forward: workspaces[s.index]!.forward, backwardB: workspaces[s.index]!.backwardB, backwardW: workspaces[s.index]!.backwardW },
      fwdMs: stageMs[s.index]!.f, bMs: stageMs[s.index]!.b, wMs: stageMs[s.index]!.w,
      grads: s.grads.map((x) => ({ param: vIndex.get(x.param)!, value: vIndex.get(x.value)! })),
      states: [...training.stateUpdates].filter(([, val]) => progs.stageOf.get(val.producer!) === s.index)
        .map(([name, val]) => ({ state: vIndex.get(g2.values.get(name)!)!, value: vIndex.get(val)! })),
    })),
    tensors: progs.boundaries.map((b) => ({ id: b.id, value: vIndex.get(b.value)!, fromStage: b.from, toStage: b.to, direction: b.direction, bytes: b.bytes })),
    groups: inst.groups,
    buckets: inst.buckets.map((b) => ({ ...b, params: (bucketValues.get(b.id) ?? []).map((x) => vIndex.get(x)!) })),
    ranks,
    prediction: { stepMs: sim.stepMs, pipelineMs: pipeline.makespan },
  };
  return { plan, training, partition, pipeline, fusions: prepared.fusions };
}

/** Where an imported parameter's bytes lie, for the plan (none for a graph built in memory). */
function weightRef(v: Value): { weight?: WeightRef } {
  const o = v.origin;
  if (!o) return {};
  if (o.kind === 'initializer') return { weight: { kind: 'initializer', name: o.name } };
  return { weight: { ...o, dtype: dtypeToOnnx(v.dtype), shape: v.shape.map(Number) } };
}

function workspaceOf(progs: Programs, stage: number, kind: ProgramKind, vIndex: Map<Value, number>): Workspace {
  const nodes = progs.stages[stage]![kind];
  const inProgram = new Set(nodes);
  const g = progs.graph;
  // External: read by another program or stage, or a graph output (loss, gradients, state).
  const external = (v: Value): boolean => g.outputs.includes(v) || v.users.some((u) => !inProgram.has(u));
  return programWorkspace(nodes, external, (v) => vIndex.get(v)!, (n) => getOp(n.op, `node '${n.name}'`).view === true);
}

function computeMs(ins: { kind: string; stage: number }, stageMs: { f: number; b: number; w: number }[], progs: Programs, cost: CostModel): number {
  switch (ins.kind) {
    case 'FORWARD': return stageMs[ins.stage]!.f;
    case 'BACKWARD_B': return stageMs[ins.stage]!.b;
    case 'BACKWARD_W': return stageMs[ins.stage]!.w;
    case 'BACKWARD': return stageMs[ins.stage]!.b + stageMs[ins.stage]!.w;
    case 'OPTIMIZER_STEP': {
      // Read weight, gradient and two moments, write weight and moments: about 6 passes over the bytes.
      const bytes = progs.graph.params().reduce((a, p) => a + numel(p.shape, 1) * 4, 0) / Math.max(1, new Set(progs.stages.map((s) => s.ppRank)).size);
      return ((6 * bytes) / cost.device.bandwidth + cost.device.launch) * 1000;
    }
    default: return 0;
  }
}

/** Ring all-reduce: 2(n−1)/n of the bytes over each link, 2(n−1) latencies. */
function allreduceMs(cost: CostModel, bytes: number, ranks: readonly number[]): number {
  const n = ranks.length;
  if (n <= 1) return 0;
  const crossHost = Math.floor(Math.min(...ranks) / 8) !== Math.floor(Math.max(...ranks) / 8);
  const bw = crossHost ? cost.device.link.interHost : cost.device.link.intraHost;
  return ((2 * (n - 1) * bytes) / n / bw + 2 * (n - 1) * cost.device.link.latency) * 1000;
}

