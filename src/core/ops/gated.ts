// GatedUnit: y = act(gate) · up elementwise, the gate of SwiGLU and GeGLU MLPs (Llama's
// silu(x·W_gate) · x·W_up, Gemma's GELU-tanh one) in one pass instead of Sigmoid, Mul, Mul (or
// Gelu, Mul). Its gradient GatedUnitGrad gives both input gradients from one read of dy, gate and
// up. Both are cleave's own ops (domain 'cleave'): never read from or written to ONNX.
import { CleaveError } from '../errors.js';
import type { Attrs, ValueType } from '../ir/graph.js';
import { type Dim, formatShape } from '../ir/shape.js';
import { type Tensor, roundToDtype, tensor } from '../ir/tensor.js';
import { erf, geluTanh, geluTanhGrad } from './math.js';
import type { AttrSpec, Cost, OpContext, OpDef } from './registry.js';
import { elems, input, moved, requireFloat, sameDtype } from './util.js';

/** The gate activations, in the order of their device codes (0 silu, 1 gelu_tanh, 2 gelu). */
export const GATED_ACTIVATIONS = ['silu', 'gelu_tanh', 'gelu'] as const;
export type GatedActivation = (typeof GATED_ACTIVATIONS)[number];

const gatedAttrs: Record<string, AttrSpec> = {
  activation: { type: 'string', default: 'silu', oneOf: [...GATED_ACTIVATIONS] },
};

/** The node's activation (a plan node may leave the default out). */
export const activationOf = (attrs: Attrs): GatedActivation => (attrs['activation'] as GatedActivation | undefined) ?? 'silu';

/** The device code of the node's activation: 0 silu, 1 gelu_tanh, 2 gelu. */
export function activationCode(attrs: Attrs): number {
  const a = activationOf(attrs);
  const code = GATED_ACTIVATIONS.indexOf(a);
  if (code < 0) throw new CleaveError(`GatedUnit: unknown activation '${String(a)}' (one of ${GATED_ACTIVATIONS.map((x) => `'${x}'`).join(', ')})`);
  return code;
}

const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

/** act(x), in float64. */
export function gateActivation(a: GatedActivation): (x: number) => number {
  switch (a) {
    case 'silu': return (x) => x * sigmoid(x);
    case 'gelu_tanh': return geluTanh;
    case 'gelu': return (x) => 0.5 * x * (1 + erf(x / Math.SQRT2));
  }
}

/** act′(x), in float64. */
export function gateActivationGrad(a: GatedActivation): (x: number) => number {
  switch (a) {
    // d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x))).
    case 'silu': return (x) => { const s = sigmoid(x); return s * (1 + x * (1 - s)); };
    case 'gelu_tanh': return geluTanhGrad;
    case 'gelu': return (x) => 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);
  }
}

/** FLOPs an element of the forward takes (the activation, then the product), and of the backward. */
const FORWARD_FLOPS: Record<GatedActivation, number> = { silu: 6, gelu_tanh: 14, gelu: 14 };
const BACKWARD_FLOPS: Record<GatedActivation, number> = { silu: 11, gelu_tanh: 26, gelu: 24 };

const at = (ctx: OpContext): string => `node '${ctx.node}'`;

/**
 * Checks that inputs `idx` of `op` (named `names`) have one float type and one shape, and gives
 * that type, a symbolic dim taking the static size another input has there.
 */
function sameShapes(ctx: OpContext, op: string, idx: readonly number[], names: readonly string[]): ValueType {
  const dtype = sameDtype(ctx, idx);
  requireFloat(ctx, dtype);
  const shapes = idx.map((i) => input(ctx, i).shape);
  const first = shapes[0]!;
  const shape: Dim[] = [...first];
  shapes.forEach((s, j) => {
    const mismatch = s.length !== first.length || s.some((d, a) => typeof d === 'number' && typeof first[a] === 'number' && d !== first[a]);
    if (mismatch) {
      throw new CleaveError(`${at(ctx)}: ${op} needs ${names.slice(0, -1).join(', ')} and ${names[names.length - 1]} of one shape; ${names[0]} is ${formatShape(first)} but ${names[j]} is ${formatShape(s)}`);
    }
    s.forEach((d, a) => { if (typeof d === 'number') shape[a] = d; });
  });
  return { dtype, shape };
}

function gatedCpu(gate: Tensor, up: Tensor, attrs: Attrs): Tensor {
  const f = gateActivation(activationOf(attrs));
  const y = tensor(gate.dtype, gate.shape);
  for (let i = 0; i < y.data.length; i++) y.data[i] = f(gate.data[i]!) * up.data[i]!;
  return roundToDtype(y);
}

function gatedGradCpu(dy: Tensor, gate: Tensor, up: Tensor, attrs: Attrs): [Tensor, Tensor] {
  const a = activationOf(attrs);
  const f = gateActivation(a), df = gateActivationGrad(a);
  const dgate = tensor(gate.dtype, gate.shape), dup = tensor(up.dtype, up.shape);
  for (let i = 0; i < dgate.data.length; i++) {
    const g = dy.data[i]!, x = gate.data[i]!;
    dup.data[i] = g * f(x);
    dgate.data[i] = g * up.data[i]! * df(x);
  }
  return [roundToDtype(dgate), roundToDtype(dup)];
}

const gatedUnit: OpDef = {
  op: 'GatedUnit', since: 13, domain: 'cleave', category: 'activation', arity: [2, 2], attrs: gatedAttrs,
  infer: (ctx) => [sameShapes(ctx, 'GatedUnit', [0, 1], ['gate', 'up'])],
  cost: (ctx, outs): Cost => ({ flops: FORWARD_FLOPS[activationOf(ctx.attrs)] * elems(outs[0]!), bytes: moved(ctx, outs) }),
  cuda: (dev, [gate, up], [y], attrs) => dev.gatedUnit(gate!, up!, y!, activationCode(attrs)),
  cpu: ([gate, up], attrs) => [gatedCpu(gate!, up!, attrs)],
  // dup = dy·act(gate), dgate = dy·up·act′(gate), both from one GatedUnitGrad node. Second
  // derivatives are not supported: GatedUnitGrad has no rule, so autodiff names it.
  grad: (ctx) => {
    const { b, inputs: [gate, up], attrs, gradOutputs: [dy], needsGrad } = ctx;
    if (!dy) return [null, null];
    const [dgate, dup] = b.ops('GatedUnitGrad', [dy, gate!, up!], attrs, 2);
    return [needsGrad[0] ? dgate! : null, needsGrad[1] ? dup! : null];
  },
};

const gatedUnitGrad: OpDef = {
  op: 'GatedUnitGrad', since: 13, domain: 'cleave', category: 'activation', arity: [3, 3], outputs: [2, 2], attrs: gatedAttrs,
  infer(ctx) {
    const t = sameShapes(ctx, 'GatedUnitGrad', [0, 1, 2], ['dy', 'gate', 'up']);
    return [t, t];
  },
  cost: (ctx, outs): Cost => ({ flops: BACKWARD_FLOPS[activationOf(ctx.attrs)] * elems(outs[0]!), bytes: moved(ctx, outs) }),
  cuda: (dev, [dy, gate, up], [dgate, dup], attrs) => dev.gatedUnitGrad(dy!, gate!, up!, dgate!, dup!, activationCode(attrs)),
  cpu: ([dy, gate, up], attrs) => gatedGradCpu(dy!, gate!, up!, attrs),
};

export const GATED_OPS: OpDef[] = [gatedUnit, gatedUnitGrad];
