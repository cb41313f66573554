/**
 * SMP's training-script flow with TypeScript names. A script calls `init()`: in the main thread it
 * starts one worker thread per rank running the same script, waits for them and exits with their
 * status; in a rank it sets up the transport, the weights and the executor, and returns. The rest
 * of the script is then what SMP users write: wrap, step, reduce_mean, optimizer step, print on rank 0.
 */
import { dirname, resolve } from 'node:path';
import { type MessagePort, Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { readModelFile } from '../../compiler/onnx/codec.js';
import { importModel } from '../../compiler/onnx/import.js';
import { CpuRankBackend } from '../../runtime/backends/cpu/rank_backend.js';
import { type DataSource, defaultTask } from '../../runtime/data/sources.js';
import { Executor } from '../../runtime/executor/executor.js';
import type { Feeds } from '../../runtime/executor/backend.js';
import type { OptimizerConfig } from '../../runtime/optim/optimizer.js';
import { PortTransport, pairwisePorts } from '../../runtime/transport/ports.js';
import { CleaveError } from '../errors.js';
import { dtypeFromOnnx } from '../ir/dtype.js';
import { Value } from '../ir/graph.js';
import { materializeAll } from '../ir/materialize.js';
import { type Tensor, tensor } from '../ir/tensor.js';
import '../ops/index.js';
import { readPlan } from '../plan/io.js';
import type { Plan } from '../plan/types.js';

export interface InitOptions {
  /** The compiled plan (cleave compile) this script trains. */
  plan: string;
  /** Initial weights; default: the model the plan was compiled from. */
  weights?: string;
  /** Reject a batch that does not divide into the microbatches instead of dropping the remainder. */
  strictBatches?: boolean;
  timeoutSeconds?: number;
}

interface Context {
  plan: Plan;
  rank: number;
  transport: PortTransport;
  backend: CpuRankBackend;
  executor: Executor;
  options: InitOptions;
}

let ctx: Context | undefined;

function need(): Context {
  if (!ctx) throw new CleaveError('call smp.init() first');
  return ctx;
}

interface RankData { smp: true; rank: number; ports: Record<number, MessagePort>; options: InitOptions }

export async function init(options: InitOptions): Promise<void> {
  if (isMainThread) {
    const plan = readPlan(options.plan);
    const N = plan.world.size;
    const ports = pairwisePorts(N);
    const script = process.argv[1]!;
    const opts = { ...options, plan: resolve(options.plan), weights: options.weights && resolve(options.weights) };
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
  const plan = readPlan(d.options.plan);
  const transport = new PortTransport(d.rank, plan.world.size, new Map(Object.entries(d.ports).map(([k, p]) => [Number(k), p])), (d.options.timeoutSeconds ?? 60) * 1000);
  const file = d.options.weights ?? plan.model.source;
  const g = importModel(readModelFile(file), { baseDir: dirname(file), file }, { batch: plan.model.microbatchSize });
  materializeAll(g);
  const weights = new Map([...g.params(), ...g.states()].map((v) => [v.name, v.data!]));
  // The optimizer's kind and rate are set by DistributedOptimizer; until then SGD holds the slot.
  const backend = new CpuRankBackend(plan, d.rank, transport, weights, { kind: 'sgd', lr: 0 });
  ctx = { plan, rank: d.rank, transport, backend, executor: new Executor(plan, d.rank, backend, transport), options: d.options };
  void parentPort;
}

export const rank = (): number => need().rank;
export const size = (): number => need().plan.world.size;
/** Ranks run as threads of one process: the local rank is the rank. */
export const localRank = (): number => need().rank;
export const dpRank = (): number => need().plan.ranks[need().rank]!.dpRank;
export const ppRank = (): number => need().plan.ranks[need().rank]!.ppRank;
/** SMP's name for the pipeline rank. */
export const mpRank = ppRank;
export const dpSize = (): number => need().plan.world.dp;
export const ppSize = (): number => need().plan.world.pp;
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

/** The model the plan trains. `step(batch)` runs forward and backward over every microbatch. */
export class DistributedModel {
  private readonly c = need();

  /** Samples per step on this data-parallel replica: microbatches × microbatch size. */
  get batchSize(): number {
    return this.c.plan.schedule.microbatches * this.c.plan.model.microbatchSize;
  }

  /**
   * The bundled task's data for this replica (seeded by its data-parallel rank), for scripts that
   * bring no data of their own.
   */
  defaultData(seed = 0): DataSource {
    const p = this.c.plan;
    const asValue = (i: number) => new Value(p.values[i]!.name, dtypeFromOnnx(p.values[i]!.dtype, p.values[i]!.name), p.values[i]!.shape, 'input');
    const inputs = p.values.map((v, i) => [v, i] as const).filter(([v, i]) => v.kind === 'input' && i !== p.model.labelsValue).map(([, i]) => asValue(i));
    const kind = (JSON.parse(p.model.loss) as { kind: 'output' | 'cross-entropy' | 'mse' }).kind;
    return defaultTask({ inputs, labels: p.model.labelsValue >= 0 ? asValue(p.model.labelsValue) : undefined, lossKind: kind }, { vocab: p.model.classes || 2, classes: p.model.classes || 2, seed: seed + 7919 * dpRank() });
  }

  async step(batch: Readonly<Record<string, Tensor>>): Promise<StepOutput> {
    const p = this.c.plan;
    const m = p.schedule.microbatches, mb = p.model.microbatchSize;
    const n = Object.values(batch)[0]?.shape[0] ?? 0;
    if (n !== m * mb) {
      if (n < m * mb || this.c.options.strictBatches) throw new CleaveError(`the batch has ${n} samples; the plan takes ${m} microbatches of ${mb} (${m * mb})`);
      // SMP's drop_remainder: the samples past the last whole microbatch are not used.
      if (this.c.rank === 0) process.stderr.write(`warning: batch of ${n} samples: dropping the last ${n - m * mb} (the plan takes ${m * mb}; strictBatches rejects instead)\n`);
    }
    const feeds: Feeds[] = Array.from({ length: m }, (_, k) => rows(batch, k * mb, mb));
    const losses = await this.c.executor.step(feeds);
    return new StepOutput(Array.from({ length: m }, (_, k) => losses.get(k) ?? NaN));
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
    this.c.backend.configureOptimizer(config);
  }

  async step(lr = this.config.lr): Promise<void> {
    const r = await this.c.executor.optimizerStep({ lr, clip: this.config.clip });
    this.lastGradNorm = r.gradNorm;
  }
}
