/**
 * Models given to the CLI as code (`cleave compile model.ts` or `model.js`): an ES module whose
 * default export is a ModelSpec — the model and its inputs — or a function returning one.
 */
import { register } from 'node:module';
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CleaveError } from '../errors.js';
import type { Graph } from '../ir/graph.js';
import type { SmpConfig } from './config.js';
import { parseSmpConfig } from './config.js';
import type { TraceConfig } from './first_step.js';
import { type InputSpec, type Model, requireModel, trace } from './nn/trace.js';

export interface ModelSpec {
  model: Model;
  /** The forward's inputs in order; the batch dimension is the symbol `N`, set to the microbatch size. */
  inputs: Readonly<Record<string, InputSpec>>;
  loss?: TraceConfig['loss'];
  outputs?: readonly string[];
  seed?: number;
  /** SMP parameters the model comes with; `--config` and flags go over them. */
  config?: SmpConfig;
}

const SCRIPT = ['.js', '.mjs', '.cjs', '.ts', '.mts', '.cts'];

/** Whether the CLI should load this model as code rather than as ONNX. */
export const isModelScript = (file: string): boolean => SCRIPT.includes(extname(file).toLowerCase());

let tsHooks = false;

export async function loadModelFile(file: string): Promise<ModelSpec> {
  const ts = /\.[mc]?ts$/i.test(file);
  // TypeScript models are transpiled as they load (src/api/ts_hooks.ts), on every Node 20+.
  if (ts && !tsHooks) {
    register(new URL('./ts_hooks.js', import.meta.url));
    tsHooks = true;
  }
  let mod: { default?: unknown };
  try {
    mod = (await import(pathToFileURL(resolve(file)).href)) as { default?: unknown };
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' && (e as Error).message.includes(resolve(file))) throw new CleaveError(`${file}: no such file`);
    if (e instanceof CleaveError) throw new CleaveError(`${file}: ${e.message}`);
    throw new CleaveError(`${file}: loading the model module failed: ${(e as Error).message}`);
  }
  let spec = mod.default;
  if (typeof spec === 'function') spec = await (spec as () => unknown)();
  if (typeof spec !== 'object' || spec === null || !('model' in spec)) {
    throw new CleaveError(`${file}: the module's default export must be the model and its inputs: export default { model: new MyModel(), inputs: { x: { dtype: 'float32', shape: ['N', 16] } } }`);
  }
  const s = spec as ModelSpec;
  requireModel(s.model, file);
  if (typeof s.inputs !== 'object' || s.inputs === null || !Object.keys(s.inputs).length) throw new CleaveError(`${file}: the default export names no inputs: add inputs: { NAME: { dtype, shape } }`);
  if (s.config !== undefined) parseSmpConfig(s.config, `${file} (config)`);
  return s;
}

/** Traces a model file's model at a microbatch size: `N` and a leading symbol are the batch, other symbols come from `dims`. */
export function traceSpec(spec: ModelSpec, file: string, microbatch: number, dims: Readonly<Record<string, number>> = {}): Graph {
  const inputs: Record<string, InputSpec> = {};
  for (const [name, s] of Object.entries(spec.inputs)) {
    const shape = (s?.shape ?? []).map((d, i) => {
      if (typeof d === 'number') return d;
      if (dims[d] !== undefined) return dims[d]!;
      if (d === 'N' || i === 0) return microbatch;
      throw new CleaveError(`${file}: input '${name}' has the symbolic dimension '${d}': bind it with --dim ${d}=SIZE`);
    });
    inputs[name] = { dtype: s?.dtype, shape };
  }
  return trace(spec.model, inputs, { seed: spec.seed, outputs: spec.outputs });
}
