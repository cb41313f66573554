import { CleaveError } from '../errors.js';
import { ALL_DTYPES, type DType, dtypeToOnnx } from '../ir/dtype.js';
import type { AttrValue, Attrs, Value, ValueType } from '../ir/graph.js';
import type { Tensor } from '../ir/tensor.js';
import type { BinaryOp, CompareOp, LogicOp, UnaryOp } from './native_codes.js';

/** ONNX attribute types; 'dtype' is an INT holding an element type code (Cast's `to`), which passes may retype. */
export type AttrType = 'int' | 'dtype' | 'float' | 'string' | 'ints' | 'floats' | 'strings' | 'tensor';

/**
 * What an attribute's value may be beyond its type: checked at import and on every plan node
 * (checkAttrs), so kernels and shape functions never see a stride of 0 or a perm that is a number.
 * Bounds apply to an int, or to each element of ints/floats.
 */
export interface AttrConstraints {
  /** Least value allowed. */
  readonly min?: number;
  /** Greatest value allowed. */
  readonly max?: number;
  /** The only values allowed: a 0/1 flag, a string enum. */
  readonly oneOf?: readonly (number | string)[];
  /** ints: no element twice (perm). */
  readonly distinct?: boolean;
  /** ints: no element 0 (Slice steps). */
  readonly nonzero?: boolean;
}

/** An attribute: its ONNX type, default and constraints. Without a default it is required, unless optional. */
export interface AttrSpec extends AttrConstraints {
  readonly type: AttrType;
  readonly default?: AttrValue;
  readonly optional?: boolean;
}

/** A 0/1 int attribute (transA, keepdims, ceil_mode …). */
export const flagAttr = (dflt: 0 | 1): AttrSpec => ({ type: 'int', default: dflt, oneOf: [0, 1] });

/**
 * A constant input that the IR holds as an attribute, so passes and kernels see one form whatever
 * the opset (ReduceMean's axes were an attribute until opset 18, an input since). The exporter writes
 * it back as an input from `sinceInput` on, as an attribute before.
 */
export interface LiftedInput extends AttrConstraints {
  readonly input: number;
  readonly attr: string;
  readonly type: 'int' | 'ints' | 'float' | 'bool';
  readonly sinceInput: number;
  /** As an input, its element type is that of IR input `like` (Clip's bounds, Pad's constant_value), not int64 or float32. */
  readonly like?: number;
}

/** What shape inference and cost functions see of a node. */
export interface OpContext {
  /** Node name, for error messages. */
  readonly node: string;
  readonly inputs: readonly (ValueType | null)[];
  /** How many outputs the node has (Split's count comes from here). */
  readonly numOutputs: number;
  readonly attrs: Attrs;
  /** Data of the inputs that are constants (undefined for the others). */
  readonly consts: readonly (Tensor | undefined)[];
}

/** FLOPs and bytes moved (read plus written) for one execution of a node. */
export interface Cost {
  readonly flops: number;
  readonly bytes: number;
}

/** Reference kernel: inputs (null where an optional one is absent), attributes, the node's output count. */
export type CpuKernel = (inputs: readonly (Tensor | null)[], attrs: Attrs, numOutputs: number) => Tensor[];

/** Groups that passes test instead of op names. */
export type OpCategory = 'elementwise' | 'movement' | 'shape' | 'reduce' | 'linalg' | 'norm' | 'conv' | 'pool' | 'activation' | 'loss' | 'random';

/** Adds nodes to a graph under construction; what gradient rules build their results with. */
export interface OpEmitter {
  op(op: string, inputs: readonly (Value | null)[], attrs?: Attrs): Value;
  ops(op: string, inputs: readonly (Value | null)[], attrs: Attrs, numOutputs: number): Value[];
  constant(data: Tensor, name?: string): Value;
  scalar(x: number, dtype?: DType): Value;
}

/**
 * What a GEMM applies to its product before writing it (cuBLASLt's epilogues): a bias per output
 * column; the bias then GELU-tanh, its input kept in `preact` where the backward needs it; or the
 * GELU-tanh gradient, the product times GELU′(preact).
 */
export type MatMulEpilogue =
  | { readonly kind: 'bias'; readonly bias: DeviceTensor }
  | { readonly kind: 'gelu-bias'; readonly bias: DeviceTensor; readonly preact: DeviceTensor | null }
  | { readonly kind: 'dgelu'; readonly preact: DeviceTensor };

/** A tensor in device memory, as CUDA kernels see it. */
export interface DeviceTensor {
  readonly ptr: bigint;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

/**
 * The device operations registry entries compose their CUDA kernels from (implemented by
 * runtime/backends/cuda). Codes name the scalar function a generic kernel applies.
 */
export interface CudaDevice {
  unary(op: UnaryOp, x: DeviceTensor, out: DeviceTensor, alpha?: number, beta?: number): void;
  binary(op: BinaryOp, a: DeviceTensor, b: DeviceTensor, out: DeviceTensor): void;
  where(cond: DeviceTensor, x: DeviceTensor, y: DeviceTensor, out: DeviceTensor): void;
  softmax(x: DeviceTensor, out: DeviceTensor, log: boolean): void;
  layerNorm(x: DeviceTensor, scale: DeviceTensor | null, bias: DeviceTensor | null, out: DeviceTensor, epsilon: number): void;
  /**
   * out = epilogue(alpha · op(a) · op(b) + beta · out); out may be float32 under 16-bit a and b.
   * Returns false where the epilogue could not be fused (odd sizes or alignments): the plain
   * product is then in `preact` for `gelu-bias` with one, else in `out`, and the caller applies the
   * epilogue with other kernels.
   */
  matmul(a: DeviceTensor, b: DeviceTensor, out: DeviceTensor, transA?: boolean, transB?: boolean, alpha?: number, beta?: number, epilogue?: MatMulEpilogue): boolean;
  /** out[index] = x[base + Σ index_d · strides_d]: views, transposes, slices, broadcasts. */
  stridedCopy(x: DeviceTensor, out: DeviceTensor, strides: readonly number[], base?: number): void;
  gather(data: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, axis: number): void;
  cast(x: DeviceTensor, out: DeviceTensor): void;
  geluGrad(g: DeviceTensor, x: DeviceTensor, out: DeviceTensor, tanh: boolean): void;
  concat(inputs: readonly DeviceTensor[], out: DeviceTensor, axis: number): void;
  /** Sum of several tensors of the output's shape. */
  sum(inputs: readonly DeviceTensor[], out: DeviceTensor): void;
  reduce(op: 'sum' | 'mean' | 'max' | 'min', x: DeviceTensor, out: DeviceTensor, axes: readonly number[]): void;
  /** Comparisons of float tensors into bool: 0 =, 1 <, 2 >, 3 ≤, 4 ≥. */
  compare(op: CompareOp, a: DeviceTensor, b: DeviceTensor, out: DeviceTensor): void;
  /** out = 0; out[…, indices[j], …] += g[…, j, …] (the gradient of Gather). */
  scatterAdd(g: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, axis: number, accumulate?: boolean): void;
  layerNormGradInput(g: DeviceTensor, x: DeviceTensor, scale: DeviceTensor, dx: DeviceTensor, epsilon: number): void;
  layerNormGradParams(g: DeviceTensor, x: DeviceTensor, dscale: DeviceTensor, dbias: DeviceTensor, epsilon: number): void;
  /** Softmax cross-entropy of [rows, classes] scores, mean or sum over non-ignored rows. */
  crossEntropy(scores: DeviceTensor, labels: DeviceTensor, out: DeviceTensor, mean: boolean, ignore: number | undefined): void;
  crossEntropyGrad(dloss: DeviceTensor, scores: DeviceTensor, labels: DeviceTensor, out: DeviceTensor, mean: boolean, ignore: number | undefined): void;
  /**
   * Fused (flash-style) attention over q, k, v of [B, T, H·Dh] (heads side by side in each row):
   * out [B, T, H·Dh] and the softmax's log-sum-exp per row, lse [B, H, T] float32; no T × T matrix.
   * window > 0 (causal only): each query sees its last `window` keys. k and v are [B, T, kvHeads·Dh]:
   * each of their heads is read by heads / kvHeads consecutive query heads (grouped-query attention).
   * k and v may have another length Tk than q's Tq (cross-attention; not with causal). A bias
   * [B or 1, H or 1, Tq, Tk] of q's type is added to the scaled scores before the softmax.
   */
  attention(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, heads: number, kvHeads: number, scale: number, causal: boolean, window: number, bias: DeviceTensor | null): void;
  /**
   * Its gradient: dq [B, Tq, H·Dh], dk, dv [B, Tk, Hkv·Dh] from dout, the inputs, out and lse; with a
   * bias, also dscores [B, H, Tq, Tk], the gradient of the biased scores (zero where masked).
   */
  attentionGrad(dout: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor,
    dq: DeviceTensor, dk: DeviceTensor, dv: DeviceTensor, heads: number, kvHeads: number, scale: number, causal: boolean, window: number,
    bias: DeviceTensor | null, dscores: DeviceTensor | null): void;
  /** Host data into a device tensor of its size, converted to the tensor's dtype (waits for the copy). */
  write(out: DeviceTensor, t: Tensor): void;
  /** Device → host (waits for the queued work). */
  download(t: DeviceTensor): Tensor;
  /** Every element of a float tensor set to `value`. */
  fill(out: DeviceTensor, value: number): void;
  /** out[outBase + Σ k_d·outStrides_d] = x[inBase + Σ k_d·inStrides_d] over each index k of `dims` (any element type). */
  copyRegion(x: DeviceTensor, out: DeviceTensor, dims: readonly number[], inStrides: readonly number[], outStrides: readonly number[], inBase?: number, outBase?: number): void;
  /** Bool tensors: 0 and, 1 or (broadcast), 2 not (b is null). */
  logic(op: LogicOp, a: DeviceTensor, b: DeviceTensor | null, out: DeviceTensor): void;
  isNaN(x: DeviceTensor, out: DeviceTensor): void;
  /** out[i] = data[i with its `axis` coordinate replaced by indices[i]] (ONNX GatherElements). */
  gatherElements(data: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, axis: number): void;
  /** out = 0; out[i with its `axis` coordinate replaced by indices[i]] += g[i] (the gradient of GatherElements). */
  scatterElementsAdd(g: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, axis: number): void;
  /** Each matrix of the last two axes with column − row < k (upper) or > k (lower) zeroed. */
  trilu(x: DeviceTensor, out: DeviceTensor, k: number, upper: boolean): void;
  /**
   * Dropout whose element i keeps when draw i+1 of src/core/util/random.ts's generator, from `state`, is
   * ≥ ratio (the CPU kernel's draws); kept elements are scaled by 1/(1 − ratio). mask may be null.
   */
  dropout(x: DeviceTensor, y: DeviceTensor, mask: DeviceTensor | null, ratio: number, state: number): void;
  /** ONNX Gemm on 2-D operands: out = alpha·op(A)·op(B) + beta·C, C broadcast to out. */
  gemm(a: DeviceTensor, b: DeviceTensor, c: DeviceTensor | null, out: DeviceTensor, transA: boolean, transB: boolean, alpha: number, beta: number): void;
  /**
   * BatchNormalization of x [N, C, …] on batch statistics (training; runMeanOut and runVarOut, where
   * given, get the blended running statistics) or on the running ones.
   */
  batchNorm(x: DeviceTensor, scale: DeviceTensor, bias: DeviceTensor, runMean: DeviceTensor, runVar: DeviceTensor, y: DeviceTensor,
    runMeanOut: DeviceTensor | null, runVarOut: DeviceTensor | null, epsilon: number, momentum: number, training: boolean): void;
  batchNormGradInput(g: DeviceTensor, x: DeviceTensor, scale: DeviceTensor, runMean: DeviceTensor, runVar: DeviceTensor, dx: DeviceTensor,
    epsilon: number, training: boolean): void;
  batchNormGradParams(g: DeviceTensor, x: DeviceTensor, runMean: DeviceTensor, runVar: DeviceTensor, dscale: DeviceTensor, dbias: DeviceTensor,
    epsilon: number, training: boolean): void;
  /** Convolution of x [N, C, …] by w [M, C/groups, …] (1-3 spatial dims), bias [M] optional. */
  conv(x: DeviceTensor, w: DeviceTensor, bias: DeviceTensor | null, out: DeviceTensor, win: WindowGeometry, groups: number): void;
  convGradInput(g: DeviceTensor, w: DeviceTensor, dx: DeviceTensor, win: WindowGeometry, groups: number): void;
  convGradWeight(g: DeviceTensor, x: DeviceTensor, dw: DeviceTensor, win: WindowGeometry, groups: number): void;
  /** Max pooling of x [N, C, …]; indices (int64, may be null) as MaxPool's second output. */
  maxPool(x: DeviceTensor, y: DeviceTensor, indices: DeviceTensor | null, win: WindowGeometry): void;
  maxPoolGrad(g: DeviceTensor, x: DeviceTensor, dx: DeviceTensor, win: WindowGeometry): void;
  /** Average pooling; with `padEnd` (trailing pads) the divisor counts the padding too (count_include_pad). */
  averagePool(x: DeviceTensor, y: DeviceTensor, win: WindowGeometry, padEnd: readonly number[] | null): void;
  averagePoolGrad(g: DeviceTensor, dx: DeviceTensor, win: WindowGeometry, padEnd: readonly number[] | null): void;
  /** RMSNormalization of the rows of x [rows, cols]: y = x / √(mean(x²) + ε) · scale[j mod |scale|]. */
  rmsNorm(x: DeviceTensor, scale: DeviceTensor, out: DeviceTensor, epsilon: number): void;
  /** Its input gradient over rows [rows, cols]. */
  rmsNormGradInput(g: DeviceTensor, x: DeviceTensor, scale: DeviceTensor, dx: DeviceTensor, epsilon: number): void;
  /** dscale[j] = Σ over rows of g · x / √(mean(x²) + ε), for x and g [rows, cols] and dscale of cols elements. */
  rmsNormGradParams(g: DeviceTensor, x: DeviceTensor, dscale: DeviceTensor, epsilon: number): void;
  /** ONNX RotaryEmbedding of x (layout in `geo`); positions (int64 [B, S]) index the caches' rows, or null for caches [B, S, rd/2]. */
  rotaryEmbedding(x: DeviceTensor, cos: DeviceTensor, sin: DeviceTensor, positions: DeviceTensor | null, out: DeviceTensor, geo: RotaryGeometry): void;
  /** Cumulative sum along `axis` (exclusive: each element left out of its own sum; reverse: from the end). */
  cumSum(x: DeviceTensor, out: DeviceTensor, axis: number, exclusive: boolean, reverse: boolean): void;
  /** out = x padded by `begin` leading elements per dim (negative crops): mode 0 constant `value`, 1 reflect, 2 edge. */
  pad(x: DeviceTensor, out: DeviceTensor, mode: number, begin: readonly number[], value: number): void;
  /** The gradient of pad: dx gathers g of every output element that read it (padding read nothing under mode 0). */
  padGrad(g: DeviceTensor, dx: DeviceTensor, mode: number, begin: readonly number[]): void;
  /** out = act(gate) · up elementwise (one shape, one float type); activation 0 silu, 1 gelu_tanh, 2 gelu. */
  gatedUnit(gate: DeviceTensor, up: DeviceTensor, out: DeviceTensor, activation: number): void;
  /** Its gradient in one pass: dup = dy · act(gate), dgate = dy · up · act′(gate). */
  gatedUnitGrad(dy: DeviceTensor, gate: DeviceTensor, up: DeviceTensor, dgate: DeviceTensor, dup: DeviceTensor, activation: number): void;
  /**
   * ONNX GatherND: out[b, j, q] = data[b, indices[b, j, :], q] (int64 or int32 indices, any element
   * type; negative indices wrap, out-of-range tuples give 0 as gatherElements does).
   */
  gatherND(data: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, batchDims: number): void;
  /** Its gradient: out = 0 (unless accumulate, float32 out); out[b, indices[b, j, :], q] += dy[b, j, q]. */
  gatherNDGrad(dy: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, batchDims: number, accumulate?: boolean): void;
}

/**
 * Where RotaryEmbedding reads x: element (b, s, h, d) at b·strides[0] + s·strides[1] + h·strides[2] + d;
 * the first `rotary` of each head's `head` elements rotate, in halves or interleaved pairs.
 */
export interface RotaryGeometry {
  readonly batch: number;
  readonly seq: number;
  readonly heads: number;
  readonly head: number;
  readonly strides: readonly [number, number, number];
  readonly rotary: number;
  readonly interleaved: boolean;
}

/** A sliding window over the spatial dims, as src/core/ops/conv.ts's windowOf computes it. */
export interface WindowGeometry {
  readonly kernel: readonly number[];
  readonly strides: readonly number[];
  readonly dilations: readonly number[];
  readonly padBegin: readonly number[];
  readonly out: readonly number[];
}

/**
 * A node's single output added into a float32 accumulator of its shape instead of written (a
 * weight gradient summed over microbatches: the GEMM adds into it with beta = 1).
 */
export type CudaAccumulateKernel = (dev: CudaDevice, inputs: readonly (DeviceTensor | null)[], acc: DeviceTensor, attrs: Attrs) => void;

/** A node's CUDA kernel: inputs and preallocated outputs on the device. */
export type CudaKernel = (dev: CudaDevice, inputs: readonly (DeviceTensor | null)[], outputs: readonly DeviceTensor[], attrs: Attrs) => void;

/** What a gradient rule sees: the forward node and the gradients of its outputs. */
export interface GradContext {
  readonly b: OpEmitter;
  readonly node: string;
  readonly inputs: readonly (Value | null)[];
  readonly outputs: readonly Value[];
  readonly attrs: Attrs;
  /** dLoss/dOutput for each output; null where no gradient flows (a zero). */
  readonly gradOutputs: readonly (Value | null)[];
  /** Which inputs need a gradient. */
  readonly needsGrad: readonly boolean[];
}

/** Returns dLoss/dInput for each input (null: none, or zero). Built from registry ops. */
export type GradRule = (ctx: GradContext) => (Value | null)[];

/** Everything cleave knows about one ONNX op, in one place. */
export interface OpDef {
  readonly op: string;
  /** 'cleave' for the project's own ops (gradient kernels): never read from or written to ONNX. */
  readonly domain?: 'cleave';
  /** First default-domain opset that has the op in the form cleave implements. */
  readonly since: number;
  readonly category: OpCategory;
  /** Number of IR inputs, [min, max]: ONNX's, less the lifted ones (optional trailing inputs may be absent). */
  readonly arity: readonly [number, number];
  readonly outputs?: readonly [number, number];
  readonly attrs: Readonly<Record<string, AttrSpec>>;
  readonly lifted?: readonly LiftedInput[];
  /**
   * Checks the attributes' specs cannot say (between attributes, or in the op's own words): what is
   * wrong, or undefined. checkAttrs runs it after each attribute's own check.
   */
  validate?(attrs: Attrs): string | undefined;
  /** dtype and shape of each output; throws CleaveError naming the node on bad input. */
  infer(ctx: OpContext): ValueType[];
  cost(ctx: OpContext, outputs: readonly ValueType[]): Cost;
  /**
   * The gradient rule; absent means the op is not differentiable where a gradient reaches it (an
   * error naming the node). `zero` means the gradient is zero almost everywhere (Floor, Ceil).
   */
  readonly grad?: GradRule | 'zero';
  /** The CUDA kernel (absent: the op does not run on the CUDA backend yet). */
  readonly cuda?: CudaKernel;
  /** Its CUDA kernel copies between host and device (waiting for the stream): a captured CUDA graph cannot hold it. */
  readonly cudaHostSync?: boolean;
  /** Optional: the kernel adding its output into a float32 accumulator (gradient accumulation). */
  readonly cudaAccumulate?: CudaAccumulateKernel;
  /** Reference kernel over host tensors (static shapes). Also what constant folding runs. */
  readonly cpu?: CpuKernel;
  /** Outputs computable from input types alone (Shape, Size), for folding without input data. */
  foldFromTypes?(ctx: OpContext): Tensor[] | undefined;
  /** Inputs that hold state the op updates rather than trains (BatchNorm's running statistics). */
  readonly stateInputs?: readonly number[];
  /** For ops that update state: [output index, state input index] pairs (BatchNorm's running stats). */
  readonly stateUpdates?: readonly (readonly [number, number])[];
  /** The op's training form (BatchNorm on batch statistics, Dropout dropping): attributes and output count. */
  training?(attrs: Attrs, numOutputs: number): { attrs: Attrs; numOutputs: number };
  /**
   * Outputs the run-time dtype policy leaves at the graph's dtype (a fused attention's float32
   * log-sum-exp stays float32 when the policy computes in bfloat16).
   */
  readonly keepDtype?: readonly number[];
  /** Output 0 is a view of input 0's data (Reshape and friends): a runtime need not copy. */
  readonly view?: boolean;
  /** Output 0 is input 0 unchanged (Identity): the importer points its uses at the input. */
  readonly alias?: boolean;
  /** Never folded even with constant inputs (random ops). */
  readonly noFold?: boolean;
}

const REGISTRY = new Map<string, OpDef>();

export function registerOps(defs: readonly OpDef[]): void {
  for (const d of defs) {
    if (REGISTRY.has(d.op)) throw new Error(`op ${d.op} is registered twice`);
    REGISTRY.set(d.op, d);
  }
}

/** Attaches gradient rules (kept in one table) to their ops; a rule for an unknown op is a bug. */
export function registerGradients(table: Readonly<Record<string, GradRule | 'zero'>>): void {
  for (const [op, grad] of Object.entries(table)) {
    const d = REGISTRY.get(op);
    if (!d) throw new Error(`gradient for unregistered op ${op}`);
    REGISTRY.set(op, { ...d, grad });
  }
}

export const findOp = (op: string): OpDef | undefined => REGISTRY.get(op);

export function getOp(op: string, where: string): OpDef {
  const d = REGISTRY.get(op);
  if (!d) throw new CleaveError(`${where}: op ${op} is not supported`);
  return d;
}

export const allOps = (): OpDef[] => [...REGISTRY.values()];

/**
 * Fills defaults, then checks every attribute as checkAttrs does: unknown names, missing required
 * ones, ONNX types and ranges, each error naming the node.
 */
export function normalizeAttrs(def: OpDef, given: Attrs, where: string): Attrs {
  const out: Attrs = {};
  for (const [k, v] of Object.entries(given)) {
    if (v === undefined) continue;
    if (!specOf(def, k)) throw new CleaveError(`${where}: ${def.op} has no attribute '${k}'`);
    out[k] = v;
  }
  for (const [k, spec] of Object.entries(def.attrs)) {
    if (out[k] === undefined && spec.default !== undefined) out[k] = spec.default;
  }
  checkAttrs(def, out, where);
  return out;
}

/**
 * Checks attributes that are already normalized (a plan's nodes, read back from JSON: tensors as
 * Tensor objects, ints as numbers): every name is the op's (or one of its lifted inputs'), every
 * required one is present, and each value has its ONNX type and lies in its declared range. An
 * absent attribute that has a default passes: kernels read the default then. Throws a one-line
 * CleaveError naming `where`, the attribute, what was expected and what was found.
 */
export function checkAttrs(def: OpDef, attrs: Attrs, where: string): void {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined) continue;
    const spec = specOf(def, k);
    if (!spec) throw new CleaveError(`${where}: ${def.op} has no attribute '${k}'`);
    const lifted = !def.attrs[k];
    const problem = attrProblem(spec, v);
    if (problem !== undefined) {
      throw new CleaveError(`${where}: ${lifted ? 'input' : 'attribute'} '${k}' must be ${problem}, got ${describeValue(v)}`);
    }
  }
  for (const [k, spec] of Object.entries(def.attrs)) {
    if (attrs[k] === undefined && spec.default === undefined && !spec.optional) throw new CleaveError(`${where}: ${def.op} needs the attribute '${k}'`);
  }
  const problem = def.validate?.(attrs);
  if (problem !== undefined) throw new CleaveError(`${where}: ${problem}`);
}

/** The spec an attribute name has on an op: its own, or the one its lifted input implies. */
function specOf(def: OpDef, name: string): AttrSpec | undefined {
  const own = def.attrs[name];
  if (own) return own;
  const l = def.lifted?.find((x) => x.attr === name);
  if (!l) return undefined;
  const { input: _input, attr: _attr, type, sinceInput: _since, like: _like, ...constraints } = l;
  return type === 'bool' ? { type: 'int', optional: true, oneOf: [0, 1] } : { type, optional: true, ...constraints };
}

// Element type codes a 'dtype' attribute may hold: the ONNX codes of the types cleave computes in.
const DTYPE_CODES = new Map<number, DType>((ALL_DTYPES).map((d) => [dtypeToOnnx(d), d]));

const isTensor = (v: unknown): v is Tensor => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const t = v as Partial<Tensor>;
  if (typeof t.dtype !== 'string' || !(ALL_DTYPES as string[]).includes(t.dtype) || !Array.isArray(t.shape) || !ArrayBuffer.isView(t.data)) return false;
  if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return false;
  return t.shape.reduce((a, b) => a * b, 1) === t.data.length;
};

/** Why `v` does not fit `spec` (what it must be), or undefined when it fits. */
function attrProblem(spec: AttrSpec, v: AttrValue): string | undefined {
  const what = expectation(spec);
  switch (spec.type) {
    case 'int':
      return typeof v === 'number' && Number.isInteger(v) && inRange(spec, v) ? undefined : what;
    case 'dtype':
      return typeof v === 'number' && DTYPE_CODES.has(v) ? undefined : what;
    case 'float':
      return typeof v === 'number' && (Number.isNaN(v) ? spec.min === undefined && spec.max === undefined : inRange(spec, v)) ? undefined : what;
    case 'string':
      return typeof v === 'string' && (!spec.oneOf || spec.oneOf.includes(v)) ? undefined : what;
    case 'ints': {
      if (!Array.isArray(v) || !v.every((x: unknown) => typeof x === 'number' && Number.isInteger(x) && inRange(spec, x))) return what;
      const xs = v as readonly number[];
      if (spec.nonzero && xs.includes(0)) return what;
      if (spec.distinct && new Set(xs).size !== xs.length) return what;
      return undefined;
    }
    case 'floats':
      return Array.isArray(v) && v.every((x: unknown) => typeof x === 'number' && (Number.isNaN(x) || inRange(spec, x))) ? undefined : what;
    case 'strings':
      return Array.isArray(v) && v.every((x: unknown) => typeof x === 'string') ? undefined : what;
    case 'tensor':
      return isTensor(v) ? undefined : what;
  }
}

const inRange = (spec: AttrConstraints, x: number): boolean =>
  (spec.min === undefined || x >= spec.min) && (spec.max === undefined || x <= spec.max) && (!spec.oneOf || spec.oneOf.includes(x));

/** What a spec asks for, in words: "positive integers", "0 or 1", "one of 'mean', 'sum'". */
function expectation(spec: AttrSpec): string {
  const list = (xs: readonly (number | string)[]): string => {
    const q = xs.map((x) => (typeof x === 'string' ? `'${x}'` : String(x)));
    return q.length === 2 ? `${q[0]} or ${q[1]}` : `one of ${q.join(', ')}`;
  };
  const bounded = (noun: 'integer' | 'number', plural: boolean): string => {
    const { min, max } = spec;
    const n = plural ? `${noun}s` : noun;
    const phrase = min === 1 && max === undefined && noun === 'integer' ? `positive ${n}`
      : min === 0 && max === undefined ? `non-negative ${n}`
        : min !== undefined && max !== undefined ? `${n} in [${min}, ${max}]`
          : min !== undefined ? `${n} ≥ ${min}`
            : max !== undefined ? `${n} ≤ ${max}` : n;
    return plural ? phrase : `${/^[aeiou]/.test(phrase) ? 'an' : 'a'} ${phrase}`;
  };
  switch (spec.type) {
    case 'int': return spec.oneOf ? list(spec.oneOf) : bounded('integer', false);
    case 'dtype': return `an element type code cleave supports (${[...DTYPE_CODES].map(([c, d]) => `${c} ${d}`).join(', ')})`;
    case 'float': return bounded('number', false);
    case 'string': return spec.oneOf ? list(spec.oneOf) : 'a string';
    case 'ints': {
      if (spec.oneOf) return `a list of integers, each ${list(spec.oneOf)}`;
      const base = spec.nonzero ? 'non-zero integers' : bounded('integer', true);
      return spec.distinct ? `${base} without repeats` : spec.min === undefined && spec.max === undefined && !spec.nonzero ? 'a list of integers' : base;
    }
    case 'floats': return spec.min === undefined && spec.max === undefined ? 'a list of numbers' : bounded('number', true);
    case 'strings': return 'a list of strings';
    case 'tensor': return 'a tensor';
  }
}

/** A value as an error message shows it: short, whatever its type. */
export function describeValue(v: unknown): string {
  if (typeof v === 'string') return `'${v.length > 40 ? `${v.slice(0, 40)}…` : v}'`;
  if (typeof v === 'number') return String(v);
  if (Array.isArray(v)) {
    const items = v.slice(0, 8).map((x: unknown) => (typeof x === 'object' && x !== null ? describeValue(x) : typeof x === 'string' ? `'${x}'` : String(x)));
    return `[${items.join(', ')}${v.length > 8 ? `, … (${v.length} values)` : ''}]`;
  }
  if (isTensor(v)) return `a ${v.dtype} tensor of shape [${v.shape.join(', ')}]`;
  if (v === null) return 'null';
  if (typeof v === 'object') return 'an object that is not a tensor';
  return typeof v;
}
