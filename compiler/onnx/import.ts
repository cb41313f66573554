import { dirname } from 'node:path';
import { CleaveError, SymbolicDimError, visible } from '../../src/core/errors.js';
import { type Frozen, freezeBuffers } from '../passes/buffers.js';
import { dtypeFromOnnx, isFloat } from '../../src/core/ir/dtype.js';
import { type AttrValue, type Attrs, Graph, type NodeMeta, type Value, type ValueType, scopeOf } from '../../src/core/ir/graph.js';
import { topoOrder } from '../../src/core/ir/order.js';
import { type Dim, formatShape } from '../../src/core/ir/shape.js';
import type { Tensor } from '../../src/core/ir/tensor.js';
import { foldTooLarge } from '../../src/core/ir/materialize.js';
import { validateGraph } from '../../src/core/ir/validate.js';
import { type OpContext, type OpDef, findOp, normalizeAttrs } from '../../src/core/ops/index.js';
import { decodeAttr } from './attributes.js';
import { offsetInSource, readModelFile } from '../../src/core/onnx/codec.js';
import { inlineFunctions } from './functions.js';
import { SEQUENCE_OPS, lowerSequenceNode } from './sequences.js';
import type { ModelP, NodeP, ValueInfoP } from '../../src/core/onnx/proto.js';
import type { TensorP } from '../../src/core/onnx/proto.js';
import { type TensorSource, tensorWithOrigin } from '../../src/core/onnx/tensors.js';

export const MIN_OPSET = 13;
export const MAX_OPSET = 23;

export interface ImportOptions {
  /** Binds the symbolic leading dimension of the inputs (the batch) to this size. */
  batch?: number;
  /** Binds named symbolic dimensions (ONNX dim_param) to sizes. */
  dims?: Readonly<Record<string, number>>;
}

export function importOnnx(file: string, opts: ImportOptions = {}): Graph {
  return importModel(readModelFile(file), { baseDir: dirname(file), file }, opts);
}

const DEFAULT_DOMAINS = new Set(['', 'ai.onnx']);

/**
 * IR versions 1 and 2 have no opset_import (the opset was implied by the IR version), so nothing in
 * such a file says which ops' semantics it uses: it would be read as importing no opset at all.
 */
export const MIN_IR_VERSION = 3;

function defaultOpset(model: ModelP, file: string): number {
  const ir = Number(model.irVersion ?? 0);
  if (ir < MIN_IR_VERSION) {
    throw new CleaveError(`${file}: ONNX IR version ${ir} is not supported (cleave reads IR version ${MIN_IR_VERSION} and newer, which name their opsets; convert it with a newer onnx)`);
  }
  const entry = (model.opsetImport ?? []).find((o) => DEFAULT_DOMAINS.has(o.domain ?? ''));
  if (!entry) throw new CleaveError(`${file}: imports no opset of the default ONNX domain`);
  const v = Number(entry.version);
  if (v < MIN_OPSET || v > MAX_OPSET) throw new CleaveError(`${file}: opset ${v} is not supported (cleave imports default-domain opsets ${MIN_OPSET}–${MAX_OPSET}; convert it with onnx.version_converter)`);
  return v;
}

/** A node cleave cannot import, and why. */
export interface Unsupported {
  node: string;
  op: string;
  domain: string;
  reason: string;
}

/** Every node cleave cannot run, all at once, so one run shows the whole job. */
export function findUnsupported(nodes: readonly NodeP[], opset: number): Unsupported[] {
  const out: Unsupported[] = [];
  for (const n of nodes) {
    const u = { node: n.name || '(unnamed)', op: n.opType ?? '', domain: n.domain ?? '' };
    if (!DEFAULT_DOMAINS.has(u.domain)) out.push({ ...u, reason: `domain '${u.domain}' is not supported` });
    else if (SEQUENCE_OPS.has(u.op)) continue;
    else {
      const def = findOp(u.op);
      if (!def || def.domain) out.push({ ...u, reason: `op ${u.op} is not supported` });
      else if (def.since > opset) out.push({ ...u, reason: `${u.op} needs opset ≥ ${def.since}, the model imports ${opset}` });
    }
  }
  return out;
}

/** The nodes of a model after local functions are inlined, with the opset they are read at. */
export function modelNodes(model: ModelP, file: string): { nodes: NodeP[]; opset: number } {
  const opset = defaultOpset(model, file);
  return { nodes: inlineFunctions(model.graph?.node ?? [], model.functions ?? [], file), opset };
}

/** The one error that lists every unsupported node. */
export function unsupportedError(problems: readonly Unsupported[], file: string): CleaveError {
  // Op types and node names come from the file: a line break in one would split the message.
  const ops = [...new Set(problems.map((p) => visible(p.domain ? `${p.domain}:${p.op}` : p.op)))];
  const lines = problems.map((p) => `${visible(p.node)} (${visible(p.domain ? `${p.domain}:` : '')}${visible(p.op)}): ${visible(p.reason)}`);
  return new CleaveError(`${file}: ${problems.length} node${problems.length > 1 ? 's' : ''} cannot be imported (${ops.join(', ')}):\n  ${lines.join('\n  ')}`);
}

function nodeMeta(n: NodeP, where: string): NodeMeta {
  const meta: NodeMeta = {};
  const stage = n.deviceConfigurations?.find((d) => d.pipelineStage !== undefined)?.pipelineStage;
  const prop = n.metadataProps?.find((p) => p.key === 'partition' || p.key === 'pipeline_stage')?.value;
  const raw = stage ?? prop;
  if (raw !== undefined) {
    const v = Number(raw);
    if (!Number.isInteger(v) || v < 0) throw new CleaveError(`${where}: partition '${raw}' is not a non-negative integer`);
    meta.partition = v;
  }
  return meta;
}

/** Resolves input dims: numbers stay, named symbols bind to --dim values or, leading, to --batch. */
class DimBinder {
  private readonly bound = new Map<string, number>();
  /** Every named dimension the inputs declare, so a `--dim` of another name is refused. */
  readonly named = new Set<string>();
  constructor(private readonly opts: ImportOptions, private readonly file: string) {
    for (const [k, v] of Object.entries(opts.dims ?? {})) {
      if (!Number.isSafeInteger(v) || v < 0) throw new CleaveError(`${file}: --dim ${k}=${v}: a dimension must be a non-negative integer`);
      this.bound.set(k, v);
    }
    if (opts.batch !== undefined && (!Number.isSafeInteger(opts.batch) || opts.batch < 0)) throw new CleaveError(`${file}: --batch ${opts.batch}: the batch must be a non-negative integer`);
  }
  dim(d: { dimValue?: number; dimParam?: string }, i: number, input: string): Dim {
    if (d.dimValue !== undefined && d.dimParam === undefined) return checkedDim(d.dimValue, i, input, this.file);
    const name = d.dimParam || `${input}.${i}`;
    if (d.dimParam) this.named.add(d.dimParam);
    const b = this.bound.get(name);
    if (b !== undefined) return b;
    if (i === 0 && this.opts.batch !== undefined) {
      this.bound.set(name, this.opts.batch);
      return this.opts.batch;
    }
    return name;
  }
  /** A declared dim as a symbol-or-size, for comparison with an inferred one. */
  declared(d: { dimValue?: number; dimParam?: string }, i: number, value: string): Dim | undefined {
    if (d.dimValue !== undefined && d.dimParam === undefined) return checkedDim(d.dimValue, i, value, this.file);
    return d.dimParam ? this.bound.get(d.dimParam) ?? d.dimParam : undefined;
  }
}

/**
 * A dim the file states. Negative ones (some exporters write -1 for "unknown") would flow into
 * shapes, byte counts and FLOPs as negative numbers, so they are refused naming the value.
 */
function checkedDim(raw: number, i: number, value: string, file: string): number {
  const v = Number(raw);
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new CleaveError(`${file}: value '${value}' declares dimension ${i} as ${raw}; dims must be non-negative integers (leave a dimension unknown with dim_param instead)`);
  }
  return v;
}

function tensorTypeOf(vi: ValueInfoP, file: string, what: string): { elemType: number; dims: { dimValue?: number; dimParam?: string }[] } {
  const tt = vi.type?.tensorType;
  if (!tt) throw new CleaveError(`${file}: ${what} '${vi.name}' is not a tensor (sequences, maps and optionals are not supported)`);
  return { elemType: tt.elemType ?? 0, dims: tt.shape?.dim ?? [] };
}

/** Converts a lifted constant input to its attribute value. */
function liftValue(t: Tensor, type: 'int' | 'ints' | 'float' | 'bool'): AttrValue {
  const vals = Array.from(t.data);
  return type === 'ints' ? vals : vals[0] ?? 0;
}

export function importModel(model: ModelP, src: TensorSource, opts: ImportOptions = {}): Graph {
  // Initializers are decoded (and their bytes hashed) once, though the graph may be built twice.
  const decoded = new Map<TensorP, ReturnType<typeof tensorWithOrigin>>();
  const initializer = (t: TensorP, what: string, mayBeWeight: (t: Tensor) => boolean) => {
    let d = decoded.get(t);
    if (!d) decoded.set(t, (d = tensorWithOrigin(t, src, what, (view) => offsetInSource(model, view), mayBeWeight)));
    return d;
  };
  const g = buildGraph(model, src, opts, new Set(), initializer);
  // ONNX does not say which initializers are trained. A float initializer no gradient can reach
  // (an attention mask compared into a bool, say) is a buffer: import again with those as constants,
  // which also lets the computations on them fold away.
  const frozen = unreachableByGradient(g);
  const out = frozen.size ? buildGraph(model, src, opts, frozen, initializer) : g;
  // Buffers the exporter folded into initializers (rotary tables, causal masks) are known by role.
  FROZEN.set(out, freezeBuffers(out));
  FOLDED.set(out, exporterMade(model, out));
  return out;
}

const FROZEN = new WeakMap<Graph, Frozen[]>();
const FOLDED = new WeakMap<Graph, string[]>();

/**
 * Parameters that are not the PyTorch model's own but the exporter's: torch.onnx names what its
 * constant folding made from parameters `onnx::…` (TorchScript) or with no module path (the dynamo
 * exporter's `val_93`, `expand`, `add_4`), where the model's own parameters keep their dotted
 * state_dict names. Training them is training the folded copy (a transposed weight: the same; a
 * class token repeated per batch item or a sliced table: not the same model).
 */
function exporterMade(model: ModelP, g: Graph): string[] {
  if (model.producerName !== 'pytorch') return [];
  const params = g.params().map((p) => p.name);
  if (!params.some((n) => n.includes('.') && !n.startsWith('onnx::'))) return [];
  return params.filter((n) => n.startsWith('onnx::') || !n.includes('.'));
}

/** Parameters torch.onnx made by folding computations on the model's own (see exporterMade). */
export const exporterMadeParams = (g: Graph): readonly string[] => FOLDED.get(g) ?? [];

/** The initializers an import made constants because they are buffers (a rotary table, a mask), with their roles. */
export const frozenBuffers = (g: Graph): readonly Frozen[] => FROZEN.get(g) ?? [];

/** Parameters from which no chain of floating-point values leads to a graph output. */
function unreachableByGradient(g: Graph): Set<string> {
  const live = new Set<Value>(g.outputs.filter((v) => isFloat(v.dtype)));
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const n = g.nodes[i]!;
    if (!n.outputs.some((o) => live.has(o))) continue;
    for (const v of n.inputs) if (v && isFloat(v.dtype)) live.add(v);
  }
  return new Set(g.params().filter((p) => !live.has(p)).map((p) => p.name));
}

type Initializer = (t: TensorP, what: string, mayBeWeight: (t: Tensor) => boolean) => ReturnType<typeof tensorWithOrigin>;

function buildGraph(model: ModelP, src: TensorSource, opts: ImportOptions, constants: ReadonlySet<string>, initializer: Initializer): Graph {
  const file = src.file;
  const { nodes: nodesP, opset } = modelNodes(model, file);
  const gp = model.graph!;
  const problems = findUnsupported(nodesP, opset);
  if (problems.length) throw unsupportedError(problems, file);
  if (gp.sparseInitializer?.length) throw new CleaveError(`${file}: sparse initializers are not supported`);

  const g = new Graph(gp.name || 'model', opset);
  const env = new Map<string, Value>();
  const binder = new DimBinder(opts, file);

  // Initializers: float tensors are trainable parameters unless an op keeps them as state; the rest
  // (shapes, indices, scalars) are constants.
  const stateNames = new Set<string>();
  for (const n of nodesP) for (const i of findOp(n.opType ?? '')?.stateInputs ?? []) if (n.input?.[i]) stateNames.add(n.input[i]!);
  for (const t of gp.initializer ?? []) {
    const name = t.name ?? '';
    if (env.has(name)) throw new CleaveError(`${file}: initializer '${name}' is defined twice`);
    // Only what may become a parameter or state needs to know where its bytes lie (and be hashed).
    const floatTensor = (d: Tensor) => (d.dtype === 'float32' || d.dtype === 'float16' || d.dtype === 'bfloat16' || d.dtype === 'float64') && d.shape.length > 0;
    const { tensor: data, origin } = initializer(t, `initializer '${name}'`, (d) => stateNames.has(name) || floatTensor(d));
    const trainable = floatTensor(data) && !constants.has(name);
    const v = stateNames.has(name) ? g.addState(name, data) : trainable ? g.addParam(name, data) : g.addConst(name, data);
    if (v.kind !== 'const' && origin) v.origin = origin;
    env.set(name, v);
  }
  for (const vi of gp.input ?? []) {
    const name = vi.name ?? '';
    if (env.has(name)) continue; // IR < 4: initializers were listed as inputs too.
    const { elemType, dims } = tensorTypeOf(vi, file, 'input');
    const dtype = dtypeFromOnnx(elemType, `${file}: input '${name}'`);
    env.set(name, g.addInput(name, dtype, dims.map((d, i) => binder.dim(d, i, name))));
  }
  const unknownDim = Object.keys(opts.dims ?? {}).find((k) => !binder.named.has(k));
  if (unknownDim !== undefined) {
    throw new CleaveError(`${file}: --dim ${unknownDim}: the model's inputs have no dimension named '${unknownDim}' (${binder.named.size ? `named dimensions: ${[...binder.named].join(', ')}` : 'it names none'})`);
  }

  const declared = new Map<string, ValueInfoP>();
  for (const vi of [...(gp.valueInfo ?? []), ...(gp.output ?? [])]) if (vi.name) declared.set(vi.name, vi);

  nameNodes(nodesP, file);
  const producer = new Map<string, NodeP>();
  for (const n of nodesP) {
    for (const o of n.output ?? []) {
      if (!o) continue;
      const prev = producer.get(o);
      if (prev) throw new CleaveError(`${file}: value '${o}' is produced by two nodes, '${prev.name}' (${prev.opType}) and '${n.name}' (${n.opType}); each value must have one producer`);
      if (env.has(o)) throw new CleaveError(`${file}: node '${n.name}' (${n.opType}) produces '${o}', which is already a graph input or initializer`);
      producer.set(o, n);
    }
  }
  const ordered = topoOrder(nodesP, (n) => n.name!, (n) => (n.input ?? []).map((v) => producer.get(v)?.name ?? ''), `${file}: graph`);
  const live = liveNodes(nodesP, producer, (gp.output ?? []).map((o) => o.name ?? ''));

  const state: ImportState = { g, env, src, opset, declared, binder, live, skipped: new Set() };
  const parts = new Map<string, Value[]>();
  const seqHost = { g, env, importNode: (m: NodeP) => importNode(state, m), where: (m: NodeP) => `${file}: node '${m.name}' (${m.opType})` };
  for (const n of ordered) {
    if (SEQUENCE_OPS.has(n.opType ?? '') && DEFAULT_DOMAINS.has(n.domain ?? '')) lowerSequenceNode(seqHost, n, parts);
    else importNode(state, n);
  }

  for (const vi of gp.output ?? []) {
    const v = env.get(vi.name ?? '');
    if (!v) throw new CleaveError(`${file}: output '${vi.name}' is not produced by any node, input or initializer`);
    g.addOutput(v);
  }
  g.removeDeadCode();
  validateGraph(g);
  return g;
}

/**
 * Names unnamed nodes `${op}_${position}` (avoiding names the file gives) and refuses two nodes of one
 * name: a name is how errors, partition annotations and plans refer to a node, and a duplicate
 * would otherwise show up as a node depending on itself.
 */
function nameNodes(nodes: readonly NodeP[], file: string): void {
  const seen = new Map<string, number>();
  nodes.forEach((n, i) => {
    if (!n.name) return;
    const prev = seen.get(n.name);
    if (prev !== undefined) {
      throw new CleaveError(`${file}: node name '${n.name}' is used twice, by node #${prev} (${nodes[prev]!.opType}) and node #${i} (${n.opType}); node names must be unique`);
    }
    seen.set(n.name, i);
  });
  nodes.forEach((n, i) => {
    if (n.name) return;
    let name = `${n.opType}_${i}`;
    for (let k = 1; seen.has(name); k++) name = `${n.opType}_${i}_${k}`;
    n.name = name;
    seen.set(name, i);
  });
}

/** Nodes some graph output depends on: only they may need a large constant folded. */
function liveNodes(nodes: readonly NodeP[], producer: ReadonlyMap<string, NodeP>, outputs: readonly string[]): Set<NodeP> {
  const live = new Set<NodeP>();
  const stack = outputs.map((o) => producer.get(o)).filter((n): n is NodeP => !!n);
  while (stack.length) {
    const n = stack.pop()!;
    if (live.has(n)) continue;
    live.add(n);
    for (const v of n.input ?? []) {
      const p = producer.get(v);
      if (p && !live.has(p)) stack.push(p);
    }
  }
  return live;
}

interface ImportState {
  readonly g: Graph;
  readonly env: Map<string, Value>;
  readonly src: TensorSource;
  readonly opset: number;
  readonly declared: Map<string, ValueInfoP>;
  readonly binder: DimBinder;
  /** Nodes a graph output depends on. */
  readonly live: ReadonlySet<NodeP>;
  /** Values of dead nodes left out because folding them would materialize too much. */
  readonly skipped: Set<string>;
}

function importNode(st: ImportState, n: NodeP): void {
  const { g, env, src, declared, binder } = st;
  const where = `${src.file}: node '${n.name}' (${n.opType})`;
  const def = findOp(n.opType!)!;
  // A dead node reading what a skipped dead node would have made is dead too, and skipped with it.
  if (!st.live.has(n) && (n.input ?? []).some((v) => st.skipped.has(v))) {
    for (const o of n.output ?? []) if (o) st.skipped.add(o);
    return;
  }
  const rawInputs = (n.input ?? []).map((name) => {
    if (!name) return null;
    const v = env.get(name);
    if (!v) throw new CleaveError(`${where}: reads '${name}', which no node, input or initializer defines`);
    return v;
  });
  const attrs: Attrs = {};
  for (const a of n.attribute ?? []) attrs[a.name ?? ''] = decodeAttr(a, src, where);
  const { inputs, lifted } = liftInputs(def, rawInputs, where);
  Object.assign(attrs, lifted);
  const [minIn, maxIn] = def.arity;
  while (inputs.length > minIn && inputs[inputs.length - 1] === null) inputs.pop();
  if (inputs.length < minIn || inputs.length > maxIn) {
    throw new CleaveError(`${where}: has ${inputs.length} inputs; ${n.opType} takes ${minIn === maxIn ? minIn : `${minIn} to ${maxIn}`}`);
  }
  for (let i = 0; i < minIn; i++) if (!inputs[i]) throw new CleaveError(`${where}: input ${i} is required`);
  const outputs = n.output ?? [];
  const [minOut, maxOut] = def.outputs ?? [1, 1];
  let numOutputs = outputs.length;
  while (numOutputs > minOut && !outputs[numOutputs - 1]) numOutputs--;
  if (numOutputs < minOut || numOutputs > maxOut) throw new CleaveError(`${where}: has ${numOutputs} outputs; ${n.opType} gives ${minOut === maxOut ? minOut : `${minOut} to ${maxOut}`}`);

  const norm = normalizeAttrs(def, attrs, where);
  const ctx: OpContext = {
    node: n.name!,
    inputs,
    numOutputs,
    attrs: norm,
    consts: inputs.map((v) => (v?.kind === 'const' ? v.data : undefined)),
  };
  let types: ValueType[];
  try {
    types = def.infer(ctx);
  } catch (e) {
    if (e instanceof SymbolicDimError) {
      throw new SymbolicDimError(`${src.file}: ${e.message}. The model's shapes depend on a symbolic dimension; fix it with --batch N (or --dim NAME=SIZE)`);
    }
    throw e instanceof CleaveError ? new CleaveError(`${src.file}: ${e.message}`) : e;
  }
  types.forEach((t, i) => checkType(outputs[i] || `output ${i}`, t, where));
  types.forEach((t, i) => checkDeclared(outputs[i], t, declared, binder, where));

  if (willFold(def, ctx, inputs)) {
    const tooLarge = foldTooLarge(where, outputs, types);
    if (tooLarge) {
      // Not needed by any output: leave it (and what reads it) out rather than fail on dead code.
      if (!st.live.has(n)) {
        for (const o of outputs) if (o) st.skipped.add(o);
        return;
      }
      throw new CleaveError(tooLarge);
    }
  }
  const folded = fold(def, ctx, inputs, where);
  if (folded) {
    folded.forEach((t, i) => { if (outputs[i]) env.set(outputs[i]!, g.addConst(g.uniqueName(outputs[i]!), t)); });
    return;
  }
  if (def.alias) {
    env.set(outputs[0]!, inputs[0]!);
    return;
  }
  const node = g.addNode({
    op: def.op,
    name: n.name!,
    scope: scopeOf(n.name!),
    inputs,
    attrs: norm,
    meta: nodeMeta(n, where),
    outputs: types.map((t, i) => ({ name: outputs[i] || g.uniqueName(`${n.name}_unused${i}`), dtype: t.dtype, shape: t.shape })),
  });
  node.outputs.forEach((v, i) => { if (outputs[i]) env.set(outputs[i]!, v); });
}

/** Moves constant inputs that the IR holds as attributes out of the input list. */
function liftInputs(def: OpDef, raw: (Value | null)[], where: string): { inputs: (Value | null)[]; lifted: Attrs } {
  const lifted: Attrs = {};
  const liftedAt = new Set<number>();
  for (const l of def.lifted ?? []) {
    liftedAt.add(l.input);
    const v = raw[l.input];
    if (!v) continue;
    if (v.kind !== 'const' || !v.data) {
      throw new CleaveError(`${where}: input '${l.attr}' ('${v.name}') must be constant; it is computed at run time (dynamic shapes are not supported)`);
    }
    lifted[l.attr] = liftValue(v.data, l.type);
  }
  return { inputs: raw.filter((_, i) => !liftedAt.has(i)), lifted };
}

/** Whether fold will run the node's CPU kernel (every input a constant). */
const willFold = (def: OpDef, ctx: OpContext, inputs: readonly (Value | null)[]): boolean =>
  !def.noFold && !!def.cpu && inputs.every((v) => !v || v.kind === 'const');

/** Evaluates a node whose inputs are all constants, or whose outputs follow from types alone. */
function fold(def: OpDef, ctx: OpContext, inputs: readonly (Value | null)[], where: string): Tensor[] | undefined {
  if (def.noFold) return undefined;
  const fromTypes = def.foldFromTypes?.(ctx);
  if (fromTypes) return fromTypes;
  if (!willFold(def, ctx, inputs)) return undefined;
  try {
    return def.cpu!(inputs.map((v) => v?.data ?? null), ctx.attrs, ctx.numOutputs);
  } catch (e) {
    // Kernels name their op, not the node: the node and file come first.
    throw e instanceof CleaveError ? new CleaveError(`${where}: ${e.message}`) : e;
  }
}

/**
 * An inferred type must be one a tensor can have: dims non-negative safe integers (or symbols) and
 * an element count that is a safe integer. A shape function fed extreme attributes (pads of 2^60)
 * would otherwise hand costs and the memory planner Infinity or negative sizes.
 */
function checkType(name: string, t: ValueType, where: string): void {
  const bad = t.shape.some((d) => typeof d === 'number' && !(Number.isSafeInteger(d) && d >= 0));
  // Zero dims count as 1: an empty tensor's other dims are still walked by kernels.
  const n = t.shape.reduce<number>((a, d) => a * (typeof d === 'number' && d > 0 ? d : 1), 1);
  if (bad || !Number.isSafeInteger(n)) {
    throw new CleaveError(`${where}: output '${name}' would have the shape ${formatShape(t.shape)}, which no tensor can have (dims must be non-negative integers and the element count below 2^53)`);
  }
}

/** Compares an inferred type with the one the file declares, where both are known. */
function checkDeclared(name: string | undefined, t: ValueType, declared: Map<string, ValueInfoP>, binder: DimBinder, where: string): void {
  const vi = name ? declared.get(name) : undefined;
  const tt = vi?.type?.tensorType;
  if (!tt?.shape?.dim) return;
  const dims = tt.shape.dim.map((d, i) => binder.declared(d, i, name!));
  const mismatch = dims.length !== t.shape.length || dims.some((d, i) => typeof d === 'number' && typeof t.shape[i] === 'number' && d !== t.shape[i]);
  if (mismatch) {
    throw new CleaveError(`${where}: output '${name}' is declared with shape ${formatShape(dims.map((d) => d ?? '?'))} but computes ${formatShape(t.shape)}`);
  }
}
