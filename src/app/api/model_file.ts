/**
 * Models given to the CLI as code (`cleave compile model.ts` or `model.js`): an ES module whose
 * default export is a ModelSpec — the model and its inputs — or a function returning one.
 */
import { register } from 'node:module';
import { dirname, extname, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { CleaveError } from '../../core/errors.js';
import type { Graph } from '../../core/ir/graph.js';
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

let hooks = false;

/** cleave's own folder: frames of the stack inside it are cleave's, not the model's. */
const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), dirname(fileURLToPath(import.meta.url)).split(sep).includes('dist') ? '../../../..' : '../../..');
const OWN = ['dist', 'src', 'compiler', 'runtime', 'node_modules'].map((d) => resolve(packageRoot, d) + sep);

/** The innermost frame of an error's stack in the model's own code (not cleave's, not Node's): `file:line:column`. */
export function modelFrame(e: unknown): string | undefined {
  const stack = e instanceof Error ? e.stack ?? '' : '';
  for (const m of stack.matchAll(/\(?((?:file:\/\/)?\/[^\s()]+?):(\d+):(\d+)\)?$/gm)) {
    const path = m[1]!.startsWith('file:') ? fileURLToPath(m[1]!) : m[1]!;
    if (OWN.some((d) => path.startsWith(d)) || path.startsWith('node:')) continue;
    const shown = relative(process.cwd(), path);
    return `${shown.startsWith('..') ? path : shown}:${m[2]}:${m[3]}`;
  }
  return undefined;
}

/**
 * An error thrown while the model's code ran, as one line a user acts on: the place in their code
 * and the message (a cleave error keeps its words; a JavaScript error says what it was).
 */
export function modelCodeError(e: unknown, file: string, doing: string): CleaveError {
  const where = modelFrame(e) ?? file;
  if (e instanceof CleaveError) return new CleaveError(e.message.startsWith(file) ? e.message : `${where}: ${e.message}`);
  const err = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return new CleaveError(`${where}: ${doing} failed: ${err}`);
}

export async function loadModelFile(file: string): Promise<ModelSpec> {
  // Hooks for every model file: `import 'cleave'` is this CLI's package; .ts files are transpiled (src/app/api/ts_hooks.ts).
  if (!hooks) {
    register(new URL('./ts_hooks.js', import.meta.url));
    // Stack traces in a TypeScript model then give its own lines (the transpiler's inline maps).
    process.setSourceMapsEnabled(true);
    hooks = true;
  }
  let mod: { default?: unknown };
  try {
    mod = (await import(pathToFileURL(resolve(file)).href)) as { default?: unknown };
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' && (e as Error).message.includes(`'${resolve(file)}'`)) throw new CleaveError(`${file}: no such file`);
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'ERR_PACKAGE_PATH_NOT_EXPORTED') throw new CleaveError(`${file}: ${(e as Error).message}`);
    if (e instanceof SyntaxError && !modelFrame(e)) throw new CleaveError(`${file}: ${e.message}`);
    throw modelCodeError(e, file, 'loading the model module');
  }
  let spec = mod.default;
  try {
    if (typeof spec === 'function') spec = await (spec as () => unknown)();
  } catch (e) {
    throw modelCodeError(e, file, 'the default export (a function making the model)');
  }
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
  try {
    return trace(spec.model, inputs, { seed: spec.seed, outputs: spec.outputs });
  } catch (e) {
    throw modelCodeError(e, file, 'tracing the model\'s forward');
  }
}
