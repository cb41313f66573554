// Every gradient rule, one row per op, built from registry ops (tinygrad keeps its gradients the
// same way: one table, a generic walker in compiler/autodiff). A rule returns dLoss/dInput for each
// input, or null where none flows; gradients never flow into indices, shapes or conditions.
import { CleaveError } from '../errors.js';
import { dtypeToOnnx } from '../ir/dtype.js';
import type { Attrs, Value } from '../ir/graph.js';
import { normAxis, staticShape } from '../ir/shape.js';
import { tensor } from '../ir/tensor.js';
import type { GradContext, GradRule, OpEmitter } from './registry.js';
import { padsOf } from './movement.js';
import { reducedAxes } from './reduce.js';

const shapeOf = (v: Value): number[] => staticShape(v.shape, `gradient of '${v.name}'`);

/** Sums a broadcast gradient back to the shape of the operand it came from. */
export function sumTo(b: OpEmitter, g: Value, target: readonly number[]): Value {
  const gs = shapeOf(g);
  if (gs.length === target.length && gs.every((d, i) => d === target[i])) return g;
  const r = gs.length - target.length;
  const axes: number[] = [];
  gs.forEach((d, i) => { if (i < r || (target[i - r] === 1 && d !== 1)) axes.push(i); });
  const s = axes.length ? b.op('ReduceSum', [g], { axes, keepdims: 1 }) : g;
  return b.op('Reshape', [s], { shape: [...target] });
}

const reshapeTo = (b: OpEmitter, v: Value, shape: readonly number[]): Value => {
  const s = shapeOf(v);
  return s.length === shape.length && s.every((d, i) => d === shape[i]) ? v : b.op('Reshape', [v], { shape: [...shape] });
};
const scalarLike = (b: OpEmitter, x: number, like: Value): Value => b.scalar(x, like.dtype);
const zerosOf = (b: OpEmitter, like: Value): Value => b.constant(tensor(like.dtype, shapeOf(like)), 'zeros');
const mul = (b: OpEmitter, x: Value, y: Value): Value => b.op('Mul', [x, y]);
const swapLast = (b: OpEmitter, x: Value): Value => {
  const r = x.shape.length;
  return b.op('Transpose', [x], { perm: [...Array(r).keys()].map((i) => (i === r - 2 ? r - 1 : i === r - 1 ? r - 2 : i)) });
};

/** Unary rules of the form g · f'(x, y). */
const pointwise = (d: (b: OpEmitter, x: Value, y: Value) => Value): GradRule => ({ b, inputs, outputs, gradOutputs }) =>
  [mul(b, gradOutputs[0]!, d(b, inputs[0]!, outputs[0]!))];

const where0 = (b: OpEmitter, cond: Value, g: Value): Value => b.op('Where', [cond, g, scalarLike(b, 0, g)]);

/** Gradient of a reduction, broadcast back over the reduced axes. */
function expandReduced(b: OpEmitter, ctx: GradContext, g: Value): { gx: Value; keepShape: number[] } {
  const x = ctx.inputs[0]!;
  const xs = shapeOf(x);
  const axes = reducedAxes(ctx.node, ctx.attrs, xs.length);
  const keepShape = xs.map((d, i) => (axes.includes(i) ? 1 : d));
  const kept = b.op('Reshape', [g], { shape: keepShape });
  return { gx: b.op('Expand', [kept], { shape: xs }), keepShape };
}

const need = (ctx: GradContext, i: number): boolean => ctx.needsGrad[i] === true;

export const GRADIENTS: Record<string, GradRule | 'zero'> = {
  // --- elementwise ---
  Add: ({ b, inputs: [x, y], gradOutputs: [g] }) => [sumTo(b, g!, shapeOf(x!)), sumTo(b, g!, shapeOf(y!))],
  Sub: ({ b, inputs: [x, y], gradOutputs: [g] }) => [sumTo(b, g!, shapeOf(x!)), sumTo(b, b.op('Neg', [g!]), shapeOf(y!))],
  Mul: (ctx) => {
    const { b, inputs: [x, y], gradOutputs: [g] } = ctx;
    return [need(ctx, 0) ? sumTo(b, mul(b, g!, y!), shapeOf(x!)) : null, need(ctx, 1) ? sumTo(b, mul(b, g!, x!), shapeOf(y!)) : null];
  },
  Div: (ctx) => {
    const { b, inputs: [x, y], outputs: [q], gradOutputs: [g] } = ctx;
    return [
      need(ctx, 0) ? sumTo(b, b.op('Div', [g!, y!]), shapeOf(x!)) : null,
      need(ctx, 1) ? sumTo(b, b.op('Neg', [b.op('Div', [mul(b, g!, q!), y!])]), shapeOf(y!)) : null,
    ];
  },
  Pow: (ctx) => {
    const { b, inputs: [x, e], outputs: [y], gradOutputs: [g] } = ctx;
    const ef = e!.dtype === x!.dtype ? e! : b.op('Cast', [e!], { to: dtypeCode(x!) });
    const dx = need(ctx, 0) ? sumTo(b, mul(b, mul(b, g!, ef), b.op('Pow', [x!, b.op('Sub', [ef, scalarLike(b, 1, ef)])])), shapeOf(x!)) : null;
    const de = need(ctx, 1) ? sumTo(b, mul(b, mul(b, g!, y!), b.op('Log', [x!])), shapeOf(e!)) : null;
    return [dx, de];
  },
  Neg: ({ b, gradOutputs: [g] }) => [b.op('Neg', [g!])],
  Abs: ({ b, inputs: [x], gradOutputs: [g] }) => [b.op('Where', [b.op('Less', [x!, scalarLike(b, 0, x!)]), b.op('Neg', [g!]), g!])],
  Exp: pointwise((_, __, y) => y),
  Log: ({ b, inputs: [x], gradOutputs: [g] }) => [b.op('Div', [g!, x!])],
  Sqrt: ({ b, outputs: [y], gradOutputs: [g] }) => [b.op('Div', [g!, mul(b, y!, scalarLike(b, 2, y!))])],
  Reciprocal: ({ b, outputs: [y], gradOutputs: [g] }) => [b.op('Neg', [mul(b, g!, mul(b, y!, y!))])],
  Floor: 'zero',
  Ceil: 'zero',
  Erf: pointwise((b, x) => mul(b, scalarLike(b, 2 / Math.sqrt(Math.PI), x), b.op('Exp', [b.op('Neg', [mul(b, x, x)])]))),
  Sin: pointwise((b, x) => b.op('Cos', [x])),
  Cos: pointwise((b, x) => b.op('Neg', [b.op('Sin', [x])])),
  Tanh: pointwise((b, _, y) => b.op('Sub', [scalarLike(b, 1, y), mul(b, y, y)])),
  Sigmoid: pointwise((b, _, y) => mul(b, y, b.op('Sub', [scalarLike(b, 1, y), y]))),
  Relu: ({ b, inputs: [x], gradOutputs: [g] }) => [where0(b, b.op('Greater', [x!, scalarLike(b, 0, x!)]), g!)],
  LeakyRelu: ({ b, inputs: [x], attrs, gradOutputs: [g] }) =>
    [b.op('Where', [b.op('Less', [x!, scalarLike(b, 0, x!)]), mul(b, g!, scalarLike(b, attrs['alpha'] as number, g!)), g!])],
  HardSigmoid: ({ b, inputs: [x], attrs, gradOutputs: [g] }) => {
    const alpha = attrs['alpha'] as number, beta = attrs['beta'] as number;
    const z = b.op('Add', [mul(b, x!, scalarLike(b, alpha, x!)), scalarLike(b, beta, x!)]);
    const inside = b.op('And', [b.op('Greater', [z, scalarLike(b, 0, z)]), b.op('Less', [z, scalarLike(b, 1, z)])]);
    return [where0(b, inside, mul(b, g!, scalarLike(b, alpha, g!)))];
  },
  HardSwish: ({ b, inputs: [x], gradOutputs: [g] }) => {
    const mid = mul(b, g!, b.op('Add', [b.op('Div', [x!, scalarLike(b, 3, x!)]), scalarLike(b, 0.5, x!)]));
    const upper = b.op('Where', [b.op('Greater', [x!, scalarLike(b, 3, x!)]), g!, mid]);
    return [where0(b, b.op('Not', [b.op('Less', [x!, scalarLike(b, -3, x!)])]), upper)];
  },
  Gelu: ({ b, inputs: [x], attrs, gradOutputs: [g] }) => [b.op('GeluGrad', [g!, x!], { approximate: attrs['approximate']! })],
  Min: minMax,
  Max: minMax,
  Sum: ({ b, inputs, gradOutputs: [g] }) => inputs.map((x) => sumTo(b, g!, shapeOf(x!))),
  Clip: ({ b, inputs: [x], attrs, gradOutputs: [g] }) => {
    // Passes where min < x < max; an absent bound does not bound.
    const conds: Value[] = [];
    if (attrs['min'] !== undefined) conds.push(b.op('Greater', [x!, scalarLike(b, attrs['min'] as number, x!)]));
    if (attrs['max'] !== undefined) conds.push(b.op('Less', [x!, scalarLike(b, attrs['max'] as number, x!)]));
    if (!conds.length) return [g!];
    return [where0(b, conds.length === 2 ? b.op('And', conds) : conds[0]!, g!)];
  },
  Where: (ctx) => {
    const { b, inputs: [c, x, y], gradOutputs: [g] } = ctx;
    return [
      null,
      need(ctx, 1) ? sumTo(b, where0(b, c!, g!), shapeOf(x!)) : null,
      need(ctx, 2) ? sumTo(b, b.op('Where', [c!, scalarLike(b, 0, g!), g!]), shapeOf(y!)) : null,
    ];
  },
  Cast: ({ b, inputs: [x], gradOutputs: [g] }) => [b.op('Cast', [g!], { to: dtypeCode(x!) })],
  CastLike: ({ b, inputs: [x], gradOutputs: [g] }) => [b.op('Cast', [g!], { to: dtypeCode(x!) }), null],
  Identity: ({ gradOutputs: [g] }) => [g!],
  Dropout: ({ b, attrs, outputs, gradOutputs: [g] }) => {
    if (!attrs['training_mode']) return [g!];
    const mask = outputs[1];
    if (!mask) throw new CleaveError('Dropout in training mode needs its mask output for the gradient');
    const keep = 1 / (1 - ((attrs['ratio'] as number | undefined) ?? 0.5));
    return [mul(b, mul(b, g!, b.op('Cast', [mask], { to: dtypeCode(g!) })), scalarLike(b, keep, g!))];
  },

  // --- linear algebra ---
  MatMul: (ctx) => {
    const { b, inputs: [x, y], gradOutputs: [g] } = ctx;
    const xs = shapeOf(x!), ys = shapeOf(y!);
    // The common case, activations [..., M, K] times a weight [K, N]: the weight gradient is one
    // matrix product over all rows, not a batch of products summed afterwards.
    if (xs.length > 2 && ys.length === 2) {
      const dx = need(ctx, 0) ? b.op('MatMul', [g!, swapLast(b, y!)]) : null;
      const rows = (v: Value, d: number) => b.op('Reshape', [v], { shape: [-1, d] });
      const dy = need(ctx, 1) ? b.op('MatMul', [swapLast(b, rows(x!, ys[0]!)), rows(g!, ys[1]!)]) : null;
      return [dx, dy];
    }
    // Promote 1-D operands (and the gradient) to matrices, as MatMul itself does.
    const x2 = xs.length === 1 ? b.op('Unsqueeze', [x!], { axes: [0] }) : x!;
    const y2 = ys.length === 1 ? b.op('Unsqueeze', [y!], { axes: [1] }) : y!;
    let g2 = g!;
    if (xs.length === 1) g2 = b.op('Unsqueeze', [g2], { axes: [g2.shape.length - (ys.length === 1 ? 0 : 1)] });
    if (ys.length === 1) g2 = b.op('Unsqueeze', [g2], { axes: [g2.shape.length] });
    const dx = need(ctx, 0) ? reshapeTo(b, sumTo(b, b.op('MatMul', [g2, swapLast(b, y2)]), shapeOf(x2)), xs) : null;
    const dy = need(ctx, 1) ? reshapeTo(b, sumTo(b, b.op('MatMul', [swapLast(b, x2), g2]), shapeOf(y2)), ys) : null;
    return [dx, dy];
  },
  Gemm: (ctx) => {
    const { b, inputs: [A, B, Cm], attrs, gradOutputs: [g] } = ctx;
    const ta = attrs['transA'] as number, tb = attrs['transB'] as number;
    const alpha = attrs['alpha'] as number, beta = attrs['beta'] as number;
    const dA = !need(ctx, 0) ? null : ta
      ? b.op('Gemm', [B!, g!], { alpha, transA: tb, transB: 1 })
      : b.op('Gemm', [g!, B!], { alpha, transB: tb ? 0 : 1 });
    const dB = !need(ctx, 1) ? null : tb
      ? b.op('Gemm', [g!, A!], { alpha, transA: 1, transB: ta })
      : b.op('Gemm', [A!, g!], { alpha, transA: ta ? 0 : 1 });
    const dC = Cm && need(ctx, 2) ? sumTo(b, beta === 1 ? g! : mul(b, g!, scalarLike(b, beta, g!)), shapeOf(Cm)) : null;
    return [dA, dB, dC];
  },

  // --- softmax, normalization ---
  Softmax: ({ b, outputs: [y], attrs, gradOutputs: [g] }) => {
    const s = b.op('ReduceSum', [mul(b, g!, y!)], { axes: [attrs['axis'] as number], keepdims: 1 });
    return [mul(b, y!, b.op('Sub', [g!, s]))];
  },
  LogSoftmax: ({ b, outputs: [y], attrs, gradOutputs: [g] }) => {
    const s = b.op('ReduceSum', [g!], { axes: [attrs['axis'] as number], keepdims: 1 });
    return [b.op('Sub', [g!, mul(b, b.op('Exp', [y!]), s)])];
  },
  LayerNormalization: (ctx) => {
    const { b, inputs: [x, scale, bias], attrs, gradOutputs: [g, gm, gi] } = ctx;
    if (gm || gi) throw new CleaveError(`node '${ctx.node}': gradients through LayerNormalization's Mean and InvStdDev outputs are not supported`);
    const a: Attrs = { axis: attrs['axis']!, epsilon: attrs['epsilon']! };
    const dx = need(ctx, 0) ? b.op('LayerNormalizationGradInput', [g!, x!, scale!], a) : null;
    if (!need(ctx, 1) && !need(ctx, 2)) return [dx, null, null];
    const [ds, db] = b.ops('LayerNormalizationGradParams', [g!, x!], a, 2) as [Value, Value];
    return [dx, need(ctx, 1) ? sumTo(b, ds, shapeOf(scale!)) : null, bias && need(ctx, 2) ? sumTo(b, db, shapeOf(bias)) : null];
  },
  RMSNormalization: (ctx) => {
    const { b, inputs: [x, scale], attrs, gradOutputs: [g] } = ctx;
    const a: Attrs = { axis: attrs['axis']!, epsilon: attrs['epsilon']! };
    const dx = need(ctx, 0) ? b.op('RMSNormalizationGradInput', [g!, x!, scale!], a) : null;
    const ds = need(ctx, 1) ? sumTo(b, b.op('RMSNormalizationGradParams', [g!, x!], a), shapeOf(scale!)) : null;
    return [dx, ds];
  },
  InstanceNormalization: (ctx) => groupNormGrad(ctx, shapeOf(ctx.inputs[0]!)[1]!),
  GroupNormalization: (ctx) => groupNormGrad(ctx, ctx.attrs['num_groups'] as number),
  BatchNormalization: (ctx) => {
    const { b, inputs: [x, scale, , mean, variance], attrs, gradOutputs: [g] } = ctx;
    const a: Attrs = { epsilon: attrs['epsilon']!, training_mode: attrs['training_mode']! };
    const dx = need(ctx, 0) ? b.op('BatchNormalizationGradInput', [g!, x!, scale!, mean!, variance!], a) : null;
    if (!need(ctx, 1) && !need(ctx, 2)) return [dx, null, null, null, null];
    const [ds, db] = b.ops('BatchNormalizationGradParams', [g!, x!, mean!, variance!], a, 2) as [Value, Value];
    return [dx, need(ctx, 1) ? ds : null, need(ctx, 2) ? db : null, null, null];
  },

  // --- convolution, pooling ---
  Conv: (ctx) => {
    const { b, inputs: [x, w, bias], attrs, gradOutputs: [g] } = ctx;
    const dx = need(ctx, 0) ? b.op('ConvGradInput', [g!, w!], { ...attrs, shape: shapeOf(x!) }) : null;
    const dw = need(ctx, 1) ? b.op('ConvGradWeight', [g!, x!], { ...attrs, shape: shapeOf(w!) }) : null;
    const spatial = [...Array(g!.shape.length).keys()].filter((i) => i !== 1);
    const db = bias && need(ctx, 2) ? b.op('ReduceSum', [g!], { axes: spatial, keepdims: 0 }) : null;
    return [dx, dw, db];
  },
  MaxPool: ({ b, inputs: [x], attrs, gradOutputs: [g] }) => [b.op('MaxPoolGrad', [g!, x!], attrs)],
  AveragePool: ({ b, inputs: [x], attrs, gradOutputs: [g] }) => [b.op('AveragePoolGrad', [g!], { ...attrs, shape: shapeOf(x!) })],
  GlobalAveragePool: ({ b, inputs: [x], gradOutputs: [g] }) => {
    const xs = shapeOf(x!);
    const area = xs.slice(2).reduce((p, q) => p * q, 1);
    return [b.op('Expand', [b.op('Div', [g!, scalarLike(b, area, g!)])], { shape: xs })];
  },

  // --- movement ---
  Reshape: reshapeBack,
  Flatten: reshapeBack,
  Squeeze: reshapeBack,
  Unsqueeze: reshapeBack,
  Transpose: ({ b, inputs: [x], attrs, gradOutputs: [g] }) => {
    const r = x!.shape.length;
    const perm = (attrs['perm'] as number[] | undefined) ?? [...Array(r).keys()].reverse();
    const inv = new Array<number>(r);
    perm.forEach((p, i) => (inv[p] = i));
    return [b.op('Transpose', [g!], { perm: inv })];
  },
  Concat: ({ b, inputs, attrs, gradOutputs: [g] }) => {
    const axis = normAxis(attrs['axis'] as number, g!.shape.length, 'Concat gradient');
    if (inputs.length === 1) return [g!];
    return b.ops('Split', [g!], { axis, split: inputs.map((v) => shapeOf(v!)[axis]!) }, inputs.length);
  },
  Split: ({ b, attrs, outputs, gradOutputs }) => {
    const parts = outputs.map((o, i) => gradOutputs[i] ?? zerosOf(b, o));
    return [b.op('Concat', parts, { axis: attrs['axis']! })];
  },
  Slice: ({ b, inputs: [x], attrs, gradOutputs: [g] }) => [b.op('SliceGrad', [g!], { ...attrs, shape: shapeOf(x!) })],
  Gather: ({ b, inputs: [x, ind], attrs, gradOutputs: [g] }) => [b.op('GatherGrad', [g!, ind!], { axis: attrs['axis']!, shape: shapeOf(x!) }), null],
  GatherElements: ({ b, inputs: [x, ind], attrs, gradOutputs: [g] }) => [b.op('GatherElementsGrad', [g!, ind!], { axis: attrs['axis']!, shape: shapeOf(x!) }), null],
  Expand: ({ b, inputs: [x], gradOutputs: [g] }) => [sumTo(b, g!, shapeOf(x!))],
  Pad: ({ b, inputs: [x], attrs, node, gradOutputs: [g] }) => {
    const xs = shapeOf(x!);
    const { begin, end } = padsOf({ node, attrs }, xs.length);
    return [b.op('PadGrad', [g!], { mode: attrs['mode']!, pads: [...begin, ...end], shape: xs })];
  },
  CumSum: ({ b, attrs, gradOutputs: [g] }) => [b.op('CumSum', [g!], { axis: attrs['axis']!, exclusive: attrs['exclusive']!, reverse: attrs['reverse'] ? 0 : 1 })],
  // Linear in x: the gradient is the inverse rotation, the same op with −sin. The caches get none.
  RotaryEmbedding: ({ b, inputs: [, cos, sin, pos], attrs, gradOutputs: [g] }) => [b.op('RotaryEmbedding', [g!, cos!, b.op('Neg', [sin!]), pos ?? null], attrs), null, null, null],

  Tile: ({ b, inputs: [x], attrs, gradOutputs: [g] }) => {
    const xs = shapeOf(x!);
    const reps = attrs['repeats'] as number[];
    const split = b.op('Reshape', [g!], { shape: xs.flatMap((d, i) => [reps[i]!, d]) });
    return [b.op('ReduceSum', [split], { axes: xs.map((_, i) => 2 * i), keepdims: 0 })];
  },
  Trilu: ({ b, attrs, gradOutputs: [g] }) => [b.op('Trilu', [g!], attrs)],

  // --- reductions ---
  ReduceSum: (ctx) => [expandReduced(ctx.b, ctx, ctx.gradOutputs[0]!).gx],
  ReduceMean: (ctx) => {
    const { gx, keepShape } = expandReduced(ctx.b, ctx, ctx.gradOutputs[0]!);
    const count = shapeOf(ctx.inputs[0]!).reduce((a, c) => a * c, 1) / keepShape.reduce((a, c) => a * c, 1);
    return [ctx.b.op('Div', [gx, scalarLike(ctx.b, count, gx)])];
  },
  ReduceMax: extremum,
  ReduceMin: extremum,

  // --- loss ---
  SoftmaxCrossEntropyLoss: (ctx) => {
    const { b, inputs: [s, labels, w], attrs, gradOutputs: [g, glp] } = ctx;
    if (glp) throw new CleaveError(`node '${ctx.node}': gradients through SoftmaxCrossEntropyLoss's log_prob output are not supported`);
    const ins = w ? [g!, s!, labels!, w] : [g!, s!, labels!];
    const a: Attrs = { reduction: attrs['reduction']! };
    if (attrs['ignore_index'] !== undefined) a['ignore_index'] = attrs['ignore_index'];
    return [b.op('SoftmaxCrossEntropyLossGrad', ins, a), null, null];
  },
};

/**
 * Group (and instance) normalization's gradient from registry ops, over x as [N, G, C/G, S]:
 * dx through LayerNorm's input gradient on rows of one group (scale folded into g first), the
 * parameters from x̂ (LayerNorm recomputed without scale) summed per channel or per group.
 */
function groupNormGrad(ctx: GradContext, G: number): (Value | null)[] {
  const { b, inputs: [x, scale, bias], attrs, gradOutputs: [g] } = ctx;
  const xs = shapeOf(x!);
  const [N, C] = xs as [number, number];
  const S = xs.slice(2).reduce((p, q) => p * q, 1);
  const cg = C / G;
  const perChannel = shapeOf(scale!)[0] === C;
  const four = [N, G, cg, S], rows = [N * G, cg * S];
  const pshape = perChannel ? [G, cg, 1] : [G, 1, 1];
  const a: Attrs = { axis: -1, epsilon: attrs['epsilon']! };
  const ones = b.constant(tensor(x!.dtype, [1], [1]), 'ones');
  const g4 = reshapeTo(b, g!, four);
  const xr = reshapeTo(b, x!, rows);
  let dx: Value | null = null;
  if (need(ctx, 0)) {
    const gs = mul(b, g4, reshapeTo(b, scale!, pshape));
    dx = reshapeTo(b, b.op('LayerNormalizationGradInput', [reshapeTo(b, gs, rows), xr, ones], a), xs);
  }
  const sumAxes = perChannel ? [0, 3] : [0, 2, 3];
  const perParam = (v: Value, p: Value): Value => reshapeTo(b, b.op('ReduceSum', [v], { axes: sumAxes, keepdims: 0 }), shapeOf(p));
  let ds: Value | null = null;
  if (need(ctx, 1)) {
    const xhat = reshapeTo(b, b.op('LayerNormalization', [xr, ones], { axis: -1, epsilon: attrs['epsilon']! }), four);
    ds = perParam(mul(b, g4, xhat), scale!);
  }
  const db = need(ctx, 2) ? perParam(g4, bias!) : null;
  return [dx, ds, db];
}

function reshapeBack({ b, inputs: [x], gradOutputs: [g] }: GradContext): (Value | null)[] {
  return [reshapeTo(b, g!, shapeOf(x!))];
}

function minMax({ b, inputs, outputs: [y], gradOutputs: [g] }: GradContext): (Value | null)[] {
  return inputs.map((x) => sumTo(b, where0(b, b.op('Equal', [x!, y!]), g!), shapeOf(x!)));
}

function extremum(ctx: GradContext): (Value | null)[] {
  const { b, inputs: [x], outputs: [y], gradOutputs: [g] } = ctx;
  const { gx } = expandReduced(b, ctx, g!);
  const { gx: yx } = expandReduced(b, ctx, y!);
  return [where0(b, b.op('Equal', [x!, yx]), gx)];
}

const dtypeCode = (v: Value): number => dtypeToOnnx(v.dtype);
