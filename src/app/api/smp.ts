/**
 * SMP's training-script flow with TypeScript names. A script calls `init()`: in the main thread it
 * starts one worker thread per rank running the same script, waits for them and exits with their
 * status; in a rank it sets up the transport (and, for a compiled plan, the weights and the
 * executor) and returns. The rest of the script is then what SMP users write: wrap, step,
 * reduce_mean, optimizer step, print on rank 0. A model written with the module library is traced
 * and compiled on its first step.
 */
import { dirname, resolve } from 'node:path';
import { type MessagePort, Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { readModelFile } from '../../core/onnx/codec.js';
import { importModel } from '../../../compiler/onnx/import.js';
import { CpuRankBackend } from '../../../runtime/backends/cpu/rank_backend.js';
import { type DataSource, defaultTask } from '../../../runtime/data/sources.js';
import { Executor } from '../../../runtime/executor/executor.js';
import type { Feeds } from '../../../runtime/executor/backend.js';
import type { OptimizerConfig } from '../../../runtime/optim/optimizer.js';
import { PortTransport, pairwisePorts } from '../../../runtime/transport/ports.js';
import { writeOnnx } from '../../../compiler/onnx/export.js';
import { CleaveError } from '../../core/errors.js';
import { dtypeFromOnnx } from '../../core/ir/dtype.js';
import { type Graph, Value } from '../../core/ir/graph.js';
import { materializeAll } from '../../core/ir/materialize.js';
import { type Tensor, tensor } from '../../core/ir/tensor.js';
import '../../core/ops/index.js';
import { readPlan } from '../../core/plan/io.js';
import type { Plan } from '../../core/plan/types.js';
import { type SmpConfig, compileOptionsOf, parseSmpConfig, readSmpConfig } from './config.js';
import { type ModelConfig, checkPlansAgree, compileOnFirstStep, splitModelConfig } from './first_step.js';
import { type Model, requireModel } from './nn/trace.js';

export interface InitOptions {
  /** A compiled plan (cleave compile) to train. Or give `config`, and the model is traced and compiled on its first step. */
  plan?: string;
  /** SMP's modelparallel parameters (an object, or a JSON file) for a model traced on its first step: the world is partitions × dp ranks. */
  config?: SmpConfig | string;
  /** Initial weights for a plan; default: the model the plan was compiled from. */
  weights?: string;
  /** Reject a batch that does not divide into the microbatches instead of dropping the remainder. */
  strictBatches?: boolean;
  timeoutSeconds?: number;
}

interface World { size: number; pp: number; dp: number; placement: 'cluster' | 'spread' }

/** What runs once the plan is known: from init for a compiled plan, from the first step for a traced model. */
interface Running {
  plan: Plan;
  backend: CpuRankBackend;
  executor: Executor;
}

interface Context {
  rank: number;
  world: World;
  transport: PortTransport;
  options: InitOptions;
  config: SmpConfig;
  run?: Running;
  /** The optimizer's settings, when DistributedOptimizer comes before the first step. */
  optimizer?: OptimizerConfig;
  /** The one DistributedModel of the script. */
  model?: object;
}

let ctx: Context | undefined;

function need(): Context {
  if (!ctx) throw new CleaveError('call smp.init() first');
  return ctx;
}

interface RankData { smp: true; rank: number; ports: Record<number, MessagePort>; options: InitOptions }

/** The world a config asks for: partitions × dp ranks. */
function configWorld(c: SmpConfig): World {
  const o = compileOptionsOf(c, 'init config');
  return { size: o.partitions * o.dp, pp: o.partitions, dp: o.dp, placement: o.placement ?? 'cluster' };
}

export async function init(options: InitOptions): Promise<void> {
  if (!options.plan === !options.config) throw new CleaveError('smp.init() takes either { plan } (a compiled plan) or { config } (SMP parameters for a model traced on its first step)');
  if (isMainThread) {
    const config = typeof options.config === 'string' ? readSmpConfig(options.config) : options.config;
    const N = options.plan ? readPlan(options.plan).world.size : configWorld(parseSmpConfig(config, 'init config')).size;
    const ports = pairwisePorts(N);
    const script = process.argv[1]!;
    const opts: InitOptions = { ...options, plan: options.plan && resolve(options.plan), config, weights: options.weights && resolve(options.weights) };
    const workers = Array.from({ length: N }, (_, rank) => new Worker(script, {
      argv: process.argv.slice(2), workerData: { smp: true, rank, ports: ports[rank], options: opts } satisfies RankData, transferList: Object.values(ports[rank]!),
    }));
    let failed = false;
    const codes = await Promise.all(workers.map((w, rank) => new Promise<number>((res) => {
      w.on('error', (e) => {
        if (!failed) process.stderr.write(`rank ${rank} failed: ${e.message}\n`);
        failed = true;
        // One rank down: stop the others rather than let them wait for it.
        for (const o of workers) void o.terminate();
        res(1);
      });
      w.on('exit', (c) => res(c));
    })));
    process.exit(codes.some((c) => c !== 0) || failed ? 1 : 0);
  }
  const d = workerData as RankData;
  if (!d?.smp) throw new CleaveError('smp.init() runs in a script started with node, not inside another worker');
  const plan = d.options.plan ? readPlan(d.options.plan) : undefined;
  const config = (d.options.config ?? {}) as SmpConfig;
  const world = plan ? { size: plan.world.size, pp: plan.world.pp, dp: plan.world.dp, placement: plan.world.placement as World['placement'] } : configWorld(config);
  const transport = new PortTransport(d.rank, world.size, new Map(Object.entries(d.ports).map(([k, p]) => [Number(k), p])), (d.options.timeoutSeconds ?? 60) * 1000);
  ctx = { rank: d.rank, world, transport, options: d.options, config };
  if (plan) {
    const file = d.options.weights ?? plan.model.source;
    const g = importModel(readModelFile(file), { baseDir: dirname(file), file }, { batch: plan.model.microbatchSize });
    materializeAll(g);
    start(ctx, plan, new Map([...g.params(), ...g.states()].map((v) => [v.name, v.data!])));
  }
  void parentPort;
}

function start(c: Context, plan: Plan, weights: ReadonlyMap<string, Tensor>): Running {
  // The optimizer's kind and rate are set by DistributedOptimizer; until then SGD holds the slot.
  const backend = new CpuRankBackend(plan, c.rank, c.transport, weights, c.optimizer ?? { kind: 'sgd', lr: 0 });
  c.run = { plan, backend, executor: new Executor(plan, c.rank, backend, c.transport) };
  return c.run;
}

/** Pipeline rank and replica of a world rank (the plan's placement, or the config's before there is a plan). */
function coords(c: Context): { pp: number; dp: number } {
  if (c.run) return { pp: c.run.plan.ranks[c.rank]!.ppRank, dp: c.run.plan.ranks[c.rank]!.dpRank };
  const { pp, dp, placement } = c.world;
  return placement === 'cluster' ? { pp: c.rank % pp, dp: Math.floor(c.rank / pp) } : { pp: Math.floor(c.rank / dp), dp: c.rank % dp };
}

export const rank = (): number => need().rank;
export const size = (): number => need().world.size;
/** Ranks run as threads of one process: the local rank is the rank. */
export const localRank = (): number => need().rank;
export const dpRank = (): number => coords(need()).dp;
export const ppRank = (): number => coords(need()).pp;
/** SMP's name for the pipeline rank. */
export const mpRank = ppRank;
export const dpSize = (): number => need().world.dp;
export const ppSize = (): number => need().world.pp;
export const mpSize = ppSize;

/** What `DistributedModel.step` returns: the loss of each microbatch, as SMP's StepOutput. */
export class StepOutput {
  constructor(readonly outputs: readonly number[]) {}
  reduceMean(): number {
    return this.outputs.reduce((a, b) => a + b, 0) / this.outputs.length;
  }
  reduceSum(): number {
    return this.outputs.reduce((a, b) => a + b, 0);
  }
  /** The per-microbatch values in order (for scalar losses, concat and stack agree). */
  concat(): number[] {
    return [...this.outputs];
  }
  stack(): number[][] {
    return this.outputs.map((x) => [x]);
  }
}

function rows(b: Readonly<Record<string, Tensor>>, from: number, n: number): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(b)) {
    const row = t.data.length / t.shape[0]!;
    out[k] = tensor(t.dtype, [n, ...t.shape.slice(1)], t.data.subarray(from * row, (from + n) * row));
  }
  return out;
}

/**
 * The model being trained. Without arguments it is the plan's (init({ plan })). Given a module, it
 * is traced and compiled on the first `step()`, as SMP does, with init's config under `config`.
 * `step(batch)` runs forward and backward over every microbatch.
 */
export class DistributedModel {
  private readonly c = need();
  private readonly config: ModelConfig;
  private traced?: Graph;

  constructor(readonly module?: Model, config: ModelConfig = {}) {
    const c = this.c;
    if (c.model) throw new CleaveError('one DistributedModel per script: SMP wraps a single model too');
    if (module === undefined && !c.run) throw new CleaveError('new DistributedModel() takes its model from a plan; init({ config }) was given none: pass the model, new DistributedModel(model)');
    if (module !== undefined && c.run) throw new CleaveError('init({ plan }) was given a compiled plan, which holds the model: construct DistributedModel() without one, or init({ config }) to trace this one');
    if (module !== undefined) requireModel(module, 'DistributedModel');
    const own = splitModelConfig(config);
    this.config = { ...c.config, ...parseSmpConfig(own.smp, 'DistributedModel config'), ...own.trace };
    const want = configWorld(this.config);
    if (module !== undefined && want.size !== c.world.size) {
      throw new CleaveError(`DistributedModel config asks for ${want.pp} partitions × ${want.dp} replicas = ${want.size} ranks; init started ${c.world.size} (${c.world.pp} × ${c.world.dp})`);
    }
    c.model = this;
  }

  private get run(): Running {
    if (!this.c.run) throw new CleaveError('the model is traced and compiled on its first step: call step(batch) first');
    return this.c.run;
  }

  /** The compiled plan (after the first step, for a traced model). */
  get plan(): Plan {
    return this.run.plan;
  }

  /** The graph traced from the module (after the first step). */
  get graph(): Graph | undefined {
    return this.traced;
  }

  /** Samples per step on this data-parallel replica: microbatches × microbatch size. */
  get batchSize(): number {
    return this.run.plan.schedule.microbatches * this.run.plan.model.microbatchSize;
  }

  /**
   * The bundled task's data for this replica (seeded by its data-parallel rank), for scripts that
   * bring no data of their own.
   */
  defaultData(seed = 0): DataSource {
    const p = this.run.plan;
    const asValue = (i: number) => new Value(p.values[i]!.name, dtypeFromOnnx(p.values[i]!.dtype, p.values[i]!.name), p.values[i]!.shape, 'input');
    const inputs = p.values.map((v, i) => [v, i] as const).filter(([v, i]) => v.kind === 'input' && i !== p.model.labelsValue).map(([, i]) => asValue(i));
    const kind = (JSON.parse(p.model.loss) as { kind: 'output' | 'cross-entropy' | 'mse' }).kind;
    return defaultTask({ inputs, labels: p.model.labelsValue >= 0 ? asValue(p.model.labelsValue) : undefined, lossKind: kind }, { vocab: p.model.classes || 2, classes: p.model.classes || 2, seed: seed + 7919 * dpRank() });
  }

  async step(batch: Readonly<Record<string, Tensor>>): Promise<StepOutput> {
    const c = this.c;
    if (!c.run) {
      const compiled = compileOnFirstStep(this.module!, batch, this.config);
      await checkPlansAgree(compiled, c.transport);
      this.traced = compiled.graph;
      start(c, compiled.plan, compiled.weights);
    }
    const p = this.run.plan;
    const m = p.schedule.microbatches, mb = p.model.microbatchSize;
    const n = Object.values(batch)[0]?.shape[0] ?? 0;
    if (n !== m * mb) {
      if (n < m * mb || c.options.strictBatches) throw new CleaveError(`the batch has ${n} samples; the plan takes ${m} microbatches of ${mb} (${m * mb})`);
      // SMP's drop_remainder: the samples past the last whole microbatch are not used.
      if (c.rank === 0) process.stderr.write(`warning: batch of ${n} samples: dropping the last ${n - m * mb} (the plan takes ${m * mb}; strictBatches rejects instead)\n`);
    }
    const feeds: Feeds[] = Array.from({ length: m }, (_, k) => rows(batch, k * mb, mb));
    const losses = await this.run.executor.step(feeds);
    return new StepOutput(Array.from({ length: m }, (_, k) => losses.get(k) ?? NaN));
  }

  /**
   * Writes the traced model as ONNX (its initial weights; partition blocks as node metadata
   * `partition`, which the importer reads back). The inputs' shapes come from the first step.
   */
  toOnnx(file: string): void {
    if (!this.module) throw new CleaveError('toOnnx: this model came from a plan; its ONNX model is the file it was compiled from');
    if (!this.traced) throw new CleaveError('toOnnx: the model is traced on its first step: call step(batch) first (or trace it yourself with nn.exportOnnx)');
    writeOnnx(this.traced, file);
  }
}

export interface DistributedOptimizerOptions {
  /** Clip the global gradient norm across every stage. */
  clip?: number;
}

/** The optimizer over the whole model: each rank updates its stages; the gradient norm is global. */
export class DistributedOptimizer {
  private readonly c = need();
  lastGradNorm = NaN;

  constructor(readonly model: DistributedModel, readonly config: OptimizerConfig & DistributedOptimizerOptions) {
    // A traced model has no ranks' backends before its first step: the settings wait for it.
    this.c.optimizer = config;
    this.c.run?.backend.configureOptimizer(config);
  }

  async step(lr = this.config.lr): Promise<void> {
    if (!this.c.run) throw new CleaveError('optimizer.step() before the model\'s first step: call model.step(batch) first');
    const r = await this.c.run.executor.optimizerStep({ lr, clip: this.config.clip });
    this.lastGradNorm = r.gradNorm;
  }
}
