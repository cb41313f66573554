/**
 * SMP traces a model on its first step; so does cleave: the first batch fixes the inputs' dtypes and
 * the microbatch size, the model is traced at that size, compiled into a plan with the script's
 * config, and its traced weights become the ranks' starting weights. Every rank does this itself
 * (tracing and compiling are deterministic) and the ranks then check that their plans agree.
 */
import { type LossSpec, autoLoss } from '../../../compiler/autodiff/loss.js';
import { compile } from '../../../compiler/compile.js';
import type { Transport } from '../../../runtime/transport/transport.js';
import { CleaveError } from '../../core/errors.js';
import type { Graph } from '../../core/ir/graph.js';
import { materializeAll } from '../../core/ir/materialize.js';
import type { Tensor } from '../../core/ir/tensor.js';
import { encodePlan } from '../../core/plan/io.js';
import type { Plan } from '../../core/plan/types.js';
import { type SmpConfig, compileOptionsOf } from './config.js';
import { checkStageOrder } from './nn/stages.js';
import { type InputSpec, type Model, trace } from './nn/trace.js';

/** How a traced model trains: its loss, which batch entries its forward takes, how it is traced. */
export interface TraceConfig {
  /** Default `auto`: the model's scalar output, or cross-entropy for token models and classifiers, else mse. */
  loss?: LossSpec | LossSpec['kind'] | 'auto';
  /** Batch entries passed to forward, in order; default every entry but the labels, in the batch's order. */
  inputs?: readonly string[];
  /** Names of the forward's outputs (see nn.trace). */
  outputs?: readonly string[];
  /** Seeds parameters that have no data; every rank uses the same seed, so every rank starts alike. */
  seed?: number;
}

/** `new DistributedModel(model, config)`'s config: SMP's parameters over init's, and how to trace. */
export type ModelConfig = SmpConfig & TraceConfig;

const TRACE_KEYS: readonly (keyof TraceConfig)[] = ['loss', 'inputs', 'outputs', 'seed'];

export function splitModelConfig(c: ModelConfig): { smp: SmpConfig; trace: TraceConfig } {
  const smp: Record<string, unknown> = {}, tr: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(c)) ((TRACE_KEYS as readonly string[]).includes(k) ? tr : smp)[k] = v;
  return { smp: smp as SmpConfig, trace: tr as TraceConfig };
}

export function lossSpec(l: TraceConfig['loss']): LossSpec | 'auto' {
  if (l === undefined || l === 'auto') return 'auto';
  if (typeof l === 'string') {
    if (l !== 'output' && l !== 'cross-entropy' && l !== 'mse') throw new CleaveError(`DistributedModel: loss must be auto, output, cross-entropy or mse, got '${l}'`);
    return { kind: l };
  }
  return l;
}

/** The batch entry that holds the labels (none for a model whose output is its loss). */
function labelsKey(loss: LossSpec | 'auto', keys: readonly string[]): string | undefined {
  if (loss === 'auto') return keys.find((k) => k === 'labels' || k === 'targets');
  if (loss.kind === 'output') return undefined;
  return loss.labels ?? (loss.kind === 'cross-entropy' ? 'labels' : 'targets');
}

export interface Compiled {
  plan: Plan;
  graph: Graph;
  weights: Map<string, Tensor>;
}

/** Traces `model` for this batch and compiles it with `config`. */
export function compileOnFirstStep(model: Model, batch: Readonly<Record<string, Tensor>>, config: ModelConfig): Compiled {
  const { smp, trace: tc } = splitModelConfig(config);
  const opts = compileOptionsOf(smp, 'DistributedModel config');
  const keys = Object.keys(batch);
  let loss = lossSpec(tc.loss);
  const labels = labelsKey(loss, keys);
  if (labels !== undefined && !keys.includes(labels)) throw new CleaveError(`the batch has no '${labels}' entry for the loss's labels (entries: ${keys.join(', ')})`);
  const names = tc.inputs ?? keys.filter((k) => k !== labels);
  for (const k of names) if (!batch[k]) throw new CleaveError(`the batch has no entry '${k}' for the model's input (entries: ${keys.join(', ')})`);
  const n = batch[names[0]!]?.shape[0] ?? 0;
  const mb = Math.floor(n / opts.microbatches);
  if (mb < 1) throw new CleaveError(`the first batch has ${n} samples, fewer than the ${opts.microbatches} microbatches`);
  const inputs: Record<string, InputSpec> = {};
  for (const k of names) inputs[k] = { dtype: batch[k]!.dtype, shape: [mb, ...batch[k]!.shape.slice(1)] };
  const graph = trace(model, inputs, { seed: tc.seed, outputs: tc.outputs });
  if (opts.autoPartition === false) checkStageOrder(graph, opts.defaultPartition ?? 0);
  // The labels input is named after the batch entry, so the batch feeds it as it stands.
  if (loss === 'auto') loss = autoLoss(graph);
  if (loss.kind !== 'output' && !loss.labels) {
    if (labels === undefined) throw new CleaveError(`the ${loss.kind} loss needs labels: the batch has no '${loss.kind === 'mse' ? 'targets' : 'labels'}' entry (entries: ${keys.join(', ')})`);
    loss = { ...loss, labels };
  }
  const { plan } = compile({ model: graph.name, graph, loss, ...opts, batch: opts.microbatches * mb });
  materializeAll(graph);
  return { plan, graph, weights: new Map([...graph.params(), ...graph.states()].map((v) => [v.name, v.data!])) };
}

/** FNV-1a over the plan's bytes and the weights', cut to 26 bits so that sums of squares over ranks stay exact. */
function fingerprint(c: Compiled): number {
  let h = 0x811c9dc5;
  const add = (bytes: Uint8Array) => {
    for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  };
  add(encodePlan(c.plan));
  for (const name of [...c.weights.keys()].sort()) {
    const d = c.weights.get(name)!.data;
    add(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  }
  return h % 2 ** 26;
}

/**
 * Every rank traced and compiled alone: the plans must be one plan (or the ranks would wait on each
 * other forever) and the starting weights one set (or replicas and tied copies would drift apart).
 */
export async function checkPlansAgree(c: Compiled, transport: Transport): Promise<void> {
  const h = fingerprint(c);
  const sums = Float64Array.of(h, h * h);
  await transport.allreduce(Array.from({ length: transport.size }, (_, r) => r), 'plan-agreement', sums);
  const N = transport.size;
  if (sums[0] !== N * h || sums[1] !== N * h * h) {
    throw new CleaveError(`rank ${transport.rank}: the ranks traced different models: their plans or starting weights differ (build the model and its config the same way on every rank, with the same seed)`);
  }
}
