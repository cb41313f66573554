import { CleaveError } from '../../../core/errors.js';
import { type DType, dtypeToOnnx, isFloat } from '../../../core/ir/dtype.js';
import type { AttrValue, Value } from '../../../core/ir/graph.js';
import { type Shape, formatShape } from '../../../core/ir/shape.js';
import type { Tensor } from '../../../core/ir/tensor.js';
import type { Init } from '../../../core/ir/builder.js';
import { type Tracer, activeTracer } from './tracer.js';

/** What an op takes: a tensor of the trace, a parameter or state of the model, or a plain number. */
export type TensorLike = Operand | number;

/**
 * What forward code computes with. Every method records one or a few registry ops in the running
 * trace (nothing is computed), with PyTorch's names where they mean the same thing.
 */
export abstract class Operand {
  /** This operand as a value of the running trace. */
  abstract sym(): SymTensor;
  abstract get shape(): Shape;
  abstract get dtype(): DType;

  get rank(): number {
    return this.shape.length;
  }

  add(other: TensorLike): SymTensor { return binary('Add', this, other); }
  sub(other: TensorLike): SymTensor { return binary('Sub', this, other); }
  mul(other: TensorLike): SymTensor { return binary('Mul', this, other); }
  div(other: TensorLike): SymTensor { return binary('Div', this, other); }
  pow(other: TensorLike): SymTensor { return binary('Pow', this, other); }
  matmul(other: Operand): SymTensor { return op('MatMul', [this, other]); }

  neg(): SymTensor { return op('Neg', [this]); }
  abs(): SymTensor { return op('Abs', [this]); }
  exp(): SymTensor { return op('Exp', [this]); }
  log(): SymTensor { return op('Log', [this]); }
  sqrt(): SymTensor { return op('Sqrt', [this]); }
  erf(): SymTensor { return op('Erf', [this]); }
  relu(): SymTensor { return op('Relu', [this]); }
  sigmoid(): SymTensor { return op('Sigmoid', [this]); }
  tanh(): SymTensor { return op('Tanh', [this]); }
  /** GELU, exact (erf) or with GPT-2's tanh approximation. */
  gelu(approximate: 'none' | 'tanh' = 'none'): SymTensor {
    return op('Gelu', [this], approximate === 'none' ? {} : { approximate });
  }
  softmax(axis = -1): SymTensor { return op('Softmax', [this], { axis }); }
  logSoftmax(axis = -1): SymTensor { return op('LogSoftmax', [this], { axis }); }

  /** ONNX Reshape: a 0 copies that dimension of the input, one -1 takes what is left. */
  reshape(...shape: number[]): SymTensor { return op('Reshape', [this], { shape }); }
  /** Reorders every axis (PyTorch's `permute`, ONNX's Transpose). */
  permute(...perm: number[]): SymTensor { return op('Transpose', [this], { perm }); }
  /** Swaps two axes (PyTorch's `transpose`). */
  transpose(dim0: number, dim1: number): SymTensor {
    const r = this.rank;
    const perm = Array.from({ length: r }, (_, i) => i);
    const [a, b] = [dim0 < 0 ? dim0 + r : dim0, dim1 < 0 ? dim1 + r : dim1];
    if (!(a >= 0 && a < r && b >= 0 && b < r)) throw new CleaveError(`transpose(${dim0}, ${dim1}): a tensor of shape ${formatShape(this.shape)} has no such axes`);
    [perm[a], perm[b]] = [perm[b]!, perm[a]!];
    return this.permute(...perm);
  }
  /** ONNX Flatten: `[d0·…·d(axis−1), d(axis)·…]` (for axis 1, PyTorch's `flatten(1)`). */
  flatten(axis = 1): SymTensor { return op('Flatten', [this], { axis }); }
  unsqueeze(...axes: number[]): SymTensor { return op('Unsqueeze', [this], { axes }); }
  squeeze(...axes: number[]): SymTensor { return op('Squeeze', [this], axes.length ? { axes } : {}); }
  /** Elements `start` to `end` (exclusive) along `axis`. */
  slice(axis: number, start: number, end: number): SymTensor {
    return op('Slice', [this], { starts: [start], ends: [end], axes: [axis] });
  }
  split(sizes: readonly number[], axis = -1): SymTensor[] {
    return activeTracer('split').op('Split', [this.sym()], { axis, split: [...sizes] }, sizes.length);
  }
  /** Rows of this tensor picked by integer `indices` (an embedding lookup for axis 0). */
  gather(indices: Operand, axis = 0): SymTensor { return op('Gather', [this, indices], { axis }); }
  mean(axes: readonly number[], keepdim = false): SymTensor { return op('ReduceMean', [this], { axes: [...axes], keepdims: keepdim ? 1 : 0 }); }
  sum(axes: readonly number[], keepdim = false): SymTensor { return op('ReduceSum', [this], { axes: [...axes], keepdims: keepdim ? 1 : 0 }); }
  cast(dtype: DType): SymTensor { return op('Cast', [this], { to: dtypeToOnnx(dtype) }); }
}

/** A tensor of a running trace: an IR value with a shape and dtype known now. */
export class SymTensor extends Operand {
  constructor(readonly value: Value, private readonly tracer: Tracer) {
    super();
  }
  sym(): SymTensor {
    if (activeTracer('tensor') !== this.tracer) throw new CleaveError(`tensor '${this.value.name}' belongs to another trace; tensors do not outlive the trace that made them`);
    return this;
  }
  get shape(): Shape { return this.value.shape; }
  get dtype(): DType { return this.value.dtype; }
}

/**
 * A trainable tensor of a module. It gets its name from where it sits in the module tree
 * (`h.0.attn.c_attn.weight`) and its data when first used in a trace: loaded data if there is any,
 * else drawn from `init` by the trace's seeded generator.
 */
export class Parameter extends Operand {
  readonly dims: readonly number[];
  data?: Tensor;

  constructor(shape: readonly number[], readonly init: Init = 'zeros') {
    super();
    if (!shape.every((d) => Number.isInteger(d) && d > 0)) throw new CleaveError(`Parameter of shape ${formatShape(shape)}: dimensions must be positive integers`);
    this.dims = [...shape];
  }
  sym(): SymTensor { return activeTracer('parameter').parameter(this); }
  get shape(): Shape { return this.dims; }
  get dtype(): DType { return this.data?.dtype ?? 'float32'; }
}

/** Data a module carries but does not train (BatchNorm's running statistics): the IR's state. */
export class State extends Operand {
  constructor(public data: Tensor) {
    super();
  }
  sym(): SymTensor { return activeTracer('state').state(this); }
  get shape(): Shape { return this.data.shape; }
  get dtype(): DType { return this.data.dtype; }
}

/**
 * Records any registry op on the running trace: the escape hatch for ops without a method here.
 * Numbers become scalar constants of the first tensor input's dtype.
 */
export function op(type: string, inputs: readonly (TensorLike | null)[], attrs: Record<string, AttrValue> = {}): SymTensor {
  return opN(type, inputs, attrs, 1)[0]!;
}

/** As `op`, for ops with several outputs. */
export function opN(type: string, inputs: readonly (TensorLike | null)[], attrs: Record<string, AttrValue>, outputs: number): SymTensor[] {
  const t = activeTracer(type);
  const first = inputs.find((x): x is Operand => x instanceof Operand);
  const dtype = first?.dtype ?? 'float32';
  const syms = inputs.map((x) => (x === null ? null : typeof x === 'number' ? t.scalar(x, dtype) : x.sym()));
  return t.op(type, syms, attrs, outputs);
}

function binary(type: string, a: Operand, b: TensorLike): SymTensor {
  if (typeof b === 'number' && !isFloat(a.dtype) && !Number.isInteger(b)) throw new CleaveError(`${type}: ${b} is not an integer, and the tensor is ${a.dtype}`);
  return op(type, [a, b]);
}

/** A constant tensor in the running trace (a mask, a table). */
export function constant(data: Tensor, name = 'const'): SymTensor {
  return activeTracer('constant').constant(data, name);
}

/** `cond ? a : b` elementwise (ONNX Where, PyTorch's `torch.where`). */
export function where(cond: Operand, a: TensorLike, b: TensorLike): SymTensor {
  const ref = a instanceof Operand ? a : b instanceof Operand ? b : undefined;
  const t = activeTracer('where');
  const dtype = ref?.dtype ?? 'float32';
  const s = (x: TensorLike) => (typeof x === 'number' ? t.scalar(x, dtype) : x.sym());
  return t.op('Where', [cond.sym(), s(a), s(b)], {}, 1)[0]!;
}

/** Joins tensors along `axis`. */
export function concat(tensors: readonly Operand[], axis: number): SymTensor {
  return op('Concat', tensors, { axis });
}
