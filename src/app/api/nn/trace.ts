import { foldConstants } from '../../../../compiler/passes/fold.js';
import { writeOnnx } from '../../../../compiler/onnx/export.js';
import { CleaveError } from '../../../core/errors.js';
import type { DType } from '../../../core/ir/dtype.js';
import type { Graph } from '../../../core/ir/graph.js';
import type { Shape } from '../../../core/ir/shape.js';
import { validateGraph } from '../../../core/ir/validate.js';
import { MODULE_BRAND, Module } from './module.js';
import { checkStageOrder } from './stages.js';
import { SymTensor } from './tensor.js';
import { Tracer, runTrace } from './tracer.js';

/** A model input: dtype and shape (a symbol such as `'N'` for a dimension fixed later). */
export interface InputSpec {
  dtype: DType;
  shape: Shape;
}

export type ForwardOutput = SymTensor | readonly SymTensor[] | Readonly<Record<string, SymTensor>>;

/** A module whose forward takes the model's inputs: what `trace` and `DistributedModel` accept. */
export type Model = Module & { forward(...inputs: SymTensor[]): ForwardOutput };

export interface TraceOptions {
  /** Graph name; default the model's class name. */
  name?: string;
  /** Seeds the initial values of parameters that have no data (default 0): equal seeds, equal weights. */
  seed?: number;
  opset?: number;
  /** Parameters without data get an initializer spec instead of data. */
  lazy?: boolean;
  /** Names of the outputs when forward returns a tensor (`output`) or a list (`output_0`, …). */
  outputs?: readonly string[];
}

/** Throws unless `x` is a Module of this copy of cleave. */
export function requireModel(x: unknown, what: string): asserts x is Model {
  if (x instanceof Module && typeof (x as { forward?: unknown }).forward === 'function') return;
  if (x instanceof Module) throw new CleaveError(`${what}: ${x.constructor.name} has no forward method`);
  if (typeof x === 'object' && x !== null && (x as Record<symbol, unknown>)[MODULE_BRAND]) {
    throw new CleaveError(`${what}: the model's modules come from another copy of cleave than the one running; import cleave from the same installation (import { nn } from 'cleave')`);
  }
  throw new CleaveError(`${what}: expected an nn.Module, got ${x === null ? 'null' : typeof x === 'object' ? (x as object).constructor?.name ?? 'an object' : typeof x}`);
}

/**
 * Runs the model's forward on symbolic inputs and returns the IR it records: nodes named and
 * annotated from the module tree and partition blocks, parameters named by module path, constant
 * computations folded. Partition blocks that would make a stage feed an earlier one are an error
 * naming both modules.
 */
export function trace(model: Model, inputs: Readonly<Record<string, InputSpec>>, opts: TraceOptions = {}): Graph {
  requireModel(model, 'trace');
  const t = new Tracer(model, { name: opts.name ?? model.constructor.name, seed: opts.seed, opset: opts.opset, lazy: opts.lazy });
  const out = runTrace(t, () => {
    const args = Object.entries(inputs).map(([name, s]) => t.input(name, s?.dtype, s?.shape));
    const result = model.forward(...args);
    return named(result, opts.outputs, model.constructor.name).map(([name, x]) => [name, x.sym()] as const);
  });
  for (const [name, x] of out) t.builder.output(x.value, name);
  const g = t.builder.graph;
  foldConstants(g);
  validateGraph(g);
  checkStageOrder(g);
  return g;
}

function named(result: ForwardOutput, names: readonly string[] | undefined, model: string): [string, SymTensor][] {
  const bad = (x: unknown) => new CleaveError(`${model}.forward must return a tensor, a list of tensors or a record of them; got ${x === undefined ? 'undefined' : String(x)}`);
  const list: [string, unknown][] = result instanceof SymTensor ? [[names?.[0] ?? 'output', result]]
    : Array.isArray(result) ? result.map((x, i) => [names?.[i] ?? `output_${i}`, x])
    : typeof result === 'object' && result !== null ? Object.entries(result) : [];
  if (!list.length) throw bad(result);
  for (const [, x] of list) if (!(x instanceof SymTensor)) throw bad(x);
  if (names && names.length !== list.length) throw new CleaveError(`${model}.forward returned ${list.length} output${list.length === 1 ? '' : 's'}, but ${names.length} name${names.length === 1 ? ' was' : 's were'} given`);
  return list as [string, SymTensor][];
}

/** Traces the model and writes it as ONNX, partition blocks as node metadata `partition`. */
export function exportOnnx(model: Model, inputs: Readonly<Record<string, InputSpec>>, file: string, opts: TraceOptions = {}): Graph {
  const g = trace(model, inputs, opts);
  writeOnnx(g, file);
  return g;
}
