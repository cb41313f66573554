import { CleaveError } from '../errors.js';
import { type DType, isFloat } from '../ir/dtype.js';
import type { Attrs } from '../ir/graph.js';
import { broadcast, stridesOf } from '../ir/shape.js';
import type { Tensor } from '../ir/tensor.js';
import { erf, geluTanh } from './math.js';
import type { BinaryOp, CompareOp, LogicOp, UnaryOp } from './native_codes.js';
import type { AttrSpec, CudaDevice, CudaKernel, DeviceTensor, OpCategory, OpContext, OpDef } from './registry.js';
import { broadcastMap, fixInt, float, input, perOutput, requireFloat, sameDtype, str } from './util.js';

type Scalar = (x: number) => number;

interface UnaryRule {
  /** Scalar function, given the node's attributes. */
  readonly f: (a: Attrs) => Scalar;
  /** The same function in the CUDA unary kernel (native_codes.ts names its ops). */
  readonly cuda?: (a: Attrs) => { code: UnaryOp; alpha?: number; beta?: number };
  /** A CUDA kernel of its own, for ops outside the float unary kernel (bool results or inputs). */
  readonly device?: CudaKernel;
  readonly flops: number;
  readonly accepts: 'float' | 'numeric' | 'bool' | 'any';
  readonly out?: 'bool';
  readonly attrs?: Record<string, AttrSpec>;
  readonly since?: number;
  readonly category?: OpCategory;
}


/** One row per unary op: what it computes, what it costs, what it accepts. */
const UNARY: Record<string, UnaryRule> = {
  Neg: {cuda: () => ({ code: 'neg' }), f: () => (x) => -x, flops: 1, accepts: 'numeric' },
  Abs: {cuda: () => ({ code: 'abs' }), f: () => Math.abs, flops: 1, accepts: 'numeric' },
  Exp: {cuda: () => ({ code: 'exp' }), f: () => Math.exp, flops: 4, accepts: 'float' },
  Log: {cuda: () => ({ code: 'log' }), f: () => Math.log, flops: 4, accepts: 'float' },
  Sqrt: {cuda: () => ({ code: 'sqrt' }), f: () => Math.sqrt, flops: 4, accepts: 'float' },
  Reciprocal: {cuda: () => ({ code: 'reciprocal' }), f: () => (x) => 1 / x, flops: 1, accepts: 'float' },
  Floor: {cuda: () => ({ code: 'floor' }), f: () => Math.floor, flops: 1, accepts: 'float' },
  Ceil: {cuda: () => ({ code: 'ceil' }), f: () => Math.ceil, flops: 1, accepts: 'float' },
  Erf: {cuda: () => ({ code: 'erf' }), f: () => erf, flops: 8, accepts: 'float' },
  Sin: {cuda: () => ({ code: 'sin' }), f: () => Math.sin, flops: 8, accepts: 'float', since: 7 },
  Cos: {cuda: () => ({ code: 'cos' }), f: () => Math.cos, flops: 8, accepts: 'float', since: 7 },
  Tanh: {cuda: () => ({ code: 'tanh' }), f: () => Math.tanh, flops: 6, accepts: 'float', category: 'activation' },
  Sigmoid: {cuda: () => ({ code: 'sigmoid' }), f: () => (x) => 1 / (1 + Math.exp(-x)), flops: 4, accepts: 'float', category: 'activation' },
  Relu: {cuda: () => ({ code: 'relu' }), f: () => (x) => (x > 0 ? x : 0), flops: 1, accepts: 'numeric', category: 'activation' },
  LeakyRelu: {
    cuda: (a) => ({ code: 'leaky_relu', alpha: float(a, 'alpha') }),
    f: (a) => { const al = float(a, 'alpha'); return (x) => (x >= 0 ? x : al * x); },
    flops: 2, accepts: 'float', category: 'activation',
    attrs: { alpha: { type: 'float', default: 0.01 } },
  },
  HardSigmoid: {
    cuda: (a) => ({ code: 'hard_sigmoid', alpha: float(a, 'alpha'), beta: float(a, 'beta') }),
    f: (a) => { const al = float(a, 'alpha'), be = float(a, 'beta'); return (x) => Math.max(0, Math.min(1, al * x + be)); },
    flops: 4, accepts: 'float', category: 'activation',
    attrs: { alpha: { type: 'float', default: 0.2 }, beta: { type: 'float', default: 0.5 } },
  },
  HardSwish: {cuda: () => ({ code: 'hard_swish' }), f: () => (x) => x * Math.max(0, Math.min(1, x / 6 + 0.5)), flops: 5, accepts: 'float', since: 14, category: 'activation' },
  Gelu: {
    cuda: (a) => ({ code: str(a, 'approximate') === 'tanh' ? 'gelu_tanh' : 'gelu' }),
    f: (a) => str(a, 'approximate') === 'tanh'
      ? geluTanh
      : (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
    flops: 12, accepts: 'float', since: 20, category: 'activation',
    attrs: { approximate: { type: 'string', default: 'none', oneOf: ['none', 'tanh'] } },
  },
  Not: { device: (dev, [x], [out]) => dev.logic('not', x!, null, out!), f: () => (x) => (x ? 0 : 1), flops: 1, accepts: 'bool' },
  IsNaN: { device: (dev, [x], [out]) => dev.isNaN(x!, out!), f: () => (x) => (Number.isNaN(x) ? 1 : 0), flops: 1, accepts: 'float', out: 'bool' },
};

interface BinaryRule {
  readonly f: Scalar2;
  /** The op in the CUDA binary kernel. */
  readonly cuda?: BinaryOp;
  /** The op in the CUDA comparison kernel (bool output). */
  readonly compare?: CompareOp;
  /** The op in the CUDA bool logic kernel (bool inputs and output). */
  readonly logic?: LogicOp;
  readonly accepts: 'numeric' | 'bool' | 'any';
  readonly out?: 'bool';
  /** Pow's exponent may have its own type. */
  readonly mixed?: boolean;
}
type Scalar2 = (a: number, b: number) => number;

const BINARY: Record<string, BinaryRule> = {
  Add: { cuda: 'add', f: (a, b) => a + b, accepts: 'numeric' },
  Sub: { cuda: 'sub', f: (a, b) => a - b, accepts: 'numeric' },
  Mul: { cuda: 'mul', f: (a, b) => a * b, accepts: 'numeric' },
  Div: { cuda: 'div', f: (a, b) => a / b, accepts: 'numeric' },
  Pow: { cuda: 'pow', f: (a, b) => a ** b, accepts: 'numeric', mixed: true },
  Equal: { compare: 'equal', f: (a, b) => (a === b ? 1 : 0), accepts: 'any', out: 'bool' },
  Less: { compare: 'less', f: (a, b) => (a < b ? 1 : 0), accepts: 'numeric', out: 'bool' },
  LessOrEqual: { compare: 'less_equal', f: (a, b) => (a <= b ? 1 : 0), accepts: 'numeric', out: 'bool' },
  Greater: { compare: 'greater', f: (a, b) => (a > b ? 1 : 0), accepts: 'numeric', out: 'bool' },
  GreaterOrEqual: { compare: 'greater_equal', f: (a, b) => (a >= b ? 1 : 0), accepts: 'numeric', out: 'bool' },
  And: { logic: 'and', f: (a, b) => (a && b ? 1 : 0), accepts: 'bool' },
  Or: { logic: 'or', f: (a, b) => (a || b ? 1 : 0), accepts: 'bool' },
};

/** Variadic ops (1..N inputs) folded pairwise. */
const VARIADIC: Record<string, Scalar2> = {
  Min: (a, b) => Math.min(a, b),
  Max: (a, b) => Math.max(a, b),
  Sum: (a, b) => a + b,
};

/** Min and Max as ops of the CUDA binary kernel, folded left to right as the CPU kernel folds. */
const VARIADIC_CUDA: Record<string, BinaryOp> = { Min: 'min', Max: 'max' };

function foldBinary(code: BinaryOp): CudaKernel {
  return (dev, ins, [out]) => {
    const xs = ins as DeviceTensor[];
    if (xs.length === 1) dev.stridedCopy(xs[0]!, out!, stridesOf(out!.shape));
    else dev.binary(code, xs[0]!, xs[1]!, out!);
    for (const x of xs.slice(2)) dev.binary(code, out!, x, out!);
  };
}

function checkAccepts(ctx: OpContext, d: DType, accepts: 'float' | 'numeric' | 'bool' | 'any'): void {
  if (accepts === 'float') requireFloat(ctx, d);
  if (accepts === 'numeric' && d === 'bool') throw new CleaveError(`node '${ctx.node}': does not take bool inputs`);
  if (accepts === 'bool' && d !== 'bool') throw new CleaveError(`node '${ctx.node}': needs bool inputs, got ${d}`);
}

function unaryDef(op: string, r: UnaryRule): OpDef {
  return {
    op, since: r.since ?? 13, category: r.category ?? 'elementwise', arity: [1, 1], attrs: r.attrs ?? {},
    infer(ctx) {
      const x = input(ctx, 0);
      checkAccepts(ctx, x.dtype, r.accepts);
      return [{ dtype: r.out ?? x.dtype, shape: x.shape }];
    },
    cost: perOutput(r.flops),
    ...(r.cuda ? { cuda: (dev: CudaDevice, [x], [out], a: Attrs) => { const c = r.cuda!(a); dev.unary(c.code, x!, out!, c.alpha, c.beta); } } : {}),
    ...(r.device ? { cuda: r.device } : {}),
    cpu([x], attrs) {
      const t = x as Tensor;
      const f = r.f(attrs);
      const dt = r.out ?? t.dtype;
      return [broadcastMap([t], dt, isFloat(dt) ? f : (v) => fixInt(dt, f(v)))];
    },
  };
}

function binaryDef(op: string, r: BinaryRule): OpDef {
  return {
    op, since: 13, category: 'elementwise', arity: [2, 2], attrs: {},
    infer(ctx) {
      const d = r.mixed ? input(ctx, 0).dtype : sameDtype(ctx, [0, 1]);
      checkAccepts(ctx, d, r.accepts);
      return [{ dtype: r.out ?? d, shape: broadcast([input(ctx, 0).shape, input(ctx, 1).shape], `node '${ctx.node}'`) }];
    },
    cost: perOutput(1),
    ...(r.cuda !== undefined ? { cuda: (dev: CudaDevice, [a, b], [out]) => dev.binary(r.cuda!, a!, b!, out!) } : {}),
    ...(r.compare !== undefined ? { cuda: (dev: CudaDevice, [a, b], [out]) => dev.compare(r.compare!, a!, b!, out!) } : {}),
    ...(r.logic !== undefined ? { cuda: (dev: CudaDevice, [a, b], [out]) => dev.logic(r.logic!, a!, b!, out!) } : {}),
    cpu([a, b]) {
      const dt = r.out ?? a!.dtype;
      const f = r.f;
      return [broadcastMap([a!, b!], dt, isFloat(dt) ? f : (x, y) => fixInt(dt, f(x, y)))];
    },
  };
}

function variadicDef(op: string, f: Scalar2): OpDef {
  return {
    op, since: 13, category: 'elementwise', arity: [1, 64], attrs: {},
    infer(ctx) {
      const idx = ctx.inputs.map((_, i) => i);
      const d = sameDtype(ctx, idx);
      checkAccepts(ctx, d, 'numeric');
      return [{ dtype: d, shape: broadcast(idx.map((i) => input(ctx, i).shape), `node '${ctx.node}'`) }];
    },
    cost: (ctx, outs) => perOutput(Math.max(1, ctx.inputs.length - 1))(ctx, outs),
    ...(op === 'Sum' ? { cuda: (dev: CudaDevice, ins: readonly (DeviceTensor | null)[], [out]: readonly DeviceTensor[]) => dev.sum(ins as DeviceTensor[], out!) } : {}),
    ...(VARIADIC_CUDA[op] !== undefined ? { cuda: foldBinary(VARIADIC_CUDA[op]) } : {}),
    cpu(inputs) {
      const ts = inputs as Tensor[];
      return [broadcastMap(ts, ts[0]!.dtype, (...xs) => xs.reduce(f))];
    },
  };
}

const where: OpDef = {
  op: 'Where', since: 13, category: 'elementwise', arity: [3, 3], attrs: {},
  infer(ctx) {
    if (input(ctx, 0).dtype !== 'bool') throw new CleaveError(`node '${ctx.node}': condition must be bool, got ${input(ctx, 0).dtype}`);
    const d = sameDtype(ctx, [1, 2]);
    return [{ dtype: d, shape: broadcast([0, 1, 2].map((i) => input(ctx, i).shape), `node '${ctx.node}'`) }];
  },
  cost: perOutput(1),
  cuda: (dev, [c, x, y], [out]) => dev.where(c!, x!, y!, out!),
  cpu([c, x, y]) {
    return [broadcastMap([c!, x!, y!], x!.dtype, (cv, xv, yv) => (cv ? xv : yv))];
  },
};

/** Clip's bounds: absent ones do not bound (−∞, +∞). */
export const clipBounds = (a: Attrs): [number, number] => [(a['min'] as number | undefined) ?? -Infinity, (a['max'] as number | undefined) ?? Infinity];

/**
 * Clip: min and max were attributes until opset 11, optional inputs since (lifted). x < min gives
 * min, then above max gives max, so min > max gives max everywhere (ONNX) and NaN stays NaN.
 */
const clip: OpDef = {
  op: 'Clip', since: 13, category: 'elementwise', arity: [1, 1], attrs: {},
  lifted: [
    { input: 1, attr: 'min', type: 'float', sinceInput: 11, like: 0 },
    { input: 2, attr: 'max', type: 'float', sinceInput: 11, like: 0 },
  ],
  infer(ctx) {
    const x = input(ctx, 0);
    checkAccepts(ctx, x.dtype, 'numeric');
    return [x];
  },
  cost: perOutput(2),
  cuda(dev, [x], [out], attrs) {
    const [lo, hi] = clipBounds(attrs);
    dev.unary('clip', x!, out!, lo, hi);
  },
  cpu([x], attrs) {
    const [lo, hi] = clipBounds(attrs);
    const t = x!;
    return [broadcastMap([t], t.dtype, (v) => { const y = v < lo ? lo : v; return fixInt(t.dtype, y > hi ? hi : y); })];
  },
};

export const ELEMENTWISE_OPS: OpDef[] = [
  ...Object.entries(UNARY).map(([op, r]) => unaryDef(op, r)),
  ...Object.entries(BINARY).map(([op, r]) => binaryDef(op, r)),
  ...Object.entries(VARIADIC).map(([op, f]) => variadicDef(op, f)),
  where, clip,
];
