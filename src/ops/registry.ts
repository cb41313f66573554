import { CleaveError } from '../errors.js';
import type { DType } from '../ir/dtype.js';
import type { AttrValue, Attrs, Value, ValueType } from '../ir/graph.js';
import type { Tensor } from '../ir/tensor.js';

/** ONNX attribute types; 'dtype' is an INT holding an element type code (Cast's `to`), which passes may retype. */
export type AttrType = 'int' | 'dtype' | 'float' | 'string' | 'ints' | 'floats' | 'strings' | 'tensor';

/** An attribute: its ONNX type and default. Without a default it is required, unless optional. */
export interface AttrSpec {
  readonly type: AttrType;
  readonly default?: AttrValue;
  readonly optional?: boolean;
}

/**
 * A constant input that the IR holds as an attribute, so passes and kernels see one form whatever
 * the opset (ReduceMean's axes were an attribute until opset 18, an input since). The exporter writes
 * it back as an input from `sinceInput` on, as an attribute before.
 */
export interface LiftedInput {
  readonly input: number;
  readonly attr: string;
  readonly type: 'int' | 'ints' | 'float' | 'bool';
  readonly sinceInput: number;
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
  unary(code: number, x: DeviceTensor, out: DeviceTensor, alpha?: number, beta?: number): void;
  binary(code: number, a: DeviceTensor, b: DeviceTensor, out: DeviceTensor): void;
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
  compare(code: number, a: DeviceTensor, b: DeviceTensor, out: DeviceTensor): void;
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
   */
  attention(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor, heads: number, scale: number, causal: boolean): void;
  /** Its gradient: dq, dk, dv (each [B, T, H·Dh]) from dout, the inputs, out and lse. */
  attentionGrad(dout: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, out: DeviceTensor, lse: DeviceTensor,
    dq: DeviceTensor, dk: DeviceTensor, dv: DeviceTensor, heads: number, scale: number, causal: boolean): void;
  /** Host data into a device tensor of its size, converted to the tensor's dtype (waits for the copy). */
  write(out: DeviceTensor, t: Tensor): void;
  /** Device → host (waits for the queued work). */
  download(t: DeviceTensor): Tensor;
  /** Every element of a float tensor set to `value`. */
  fill(out: DeviceTensor, value: number): void;
  /** out[outBase + Σ k_d·outStrides_d] = x[inBase + Σ k_d·inStrides_d] over each index k of `dims` (any element type). */
  copyRegion(x: DeviceTensor, out: DeviceTensor, dims: readonly number[], inStrides: readonly number[], outStrides: readonly number[], inBase?: number, outBase?: number): void;
  /** Bool tensors: 0 and, 1 or (broadcast), 2 not (b is null). */
  logic(code: number, a: DeviceTensor, b: DeviceTensor | null, out: DeviceTensor): void;
  isNaN(x: DeviceTensor, out: DeviceTensor): void;
  /** out[i] = data[i with its `axis` coordinate replaced by indices[i]] (ONNX GatherElements). */
  gatherElements(data: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, axis: number): void;
  /** out = 0; out[i with its `axis` coordinate replaced by indices[i]] += g[i] (the gradient of GatherElements). */
  scatterElementsAdd(g: DeviceTensor, indices: DeviceTensor, out: DeviceTensor, axis: number): void;
  /** Each matrix of the last two axes with column − row < k (upper) or > k (lower) zeroed. */
  trilu(x: DeviceTensor, out: DeviceTensor, k: number, upper: boolean): void;
  /**
   * Dropout whose element i keeps when draw i+1 of src/util/random.ts's generator, from `state`, is
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
}

/** A sliding window over the spatial dims, as src/ops/conv.ts's windowOf computes it. */
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

/** Fills defaults, rejects unknown attributes and reports missing required ones, naming the node. */
export function normalizeAttrs(def: OpDef, given: Attrs, where: string): Attrs {
  const out: Attrs = {};
  for (const [k, v] of Object.entries(given)) {
    const known = def.attrs[k] ?? def.lifted?.find((l) => l.attr === k);
    if (!known) throw new CleaveError(`${where}: ${def.op} has no attribute '${k}'`);
    out[k] = v;
  }
  for (const [k, spec] of Object.entries(def.attrs)) {
    if (out[k] !== undefined) continue;
    if (spec.default === undefined) {
      if (spec.optional) continue;
      throw new CleaveError(`${where}: ${def.op} needs the attribute '${k}'`);
    }
    out[k] = spec.default;
  }
  return out;
}
