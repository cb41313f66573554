import type { ModelBuilder } from '../../src/core/ir/builder.js';
import type { Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { Rng } from '../../src/core/util/random.js';

/** The T × T causal mask as buildGpt computes it: true on and below the diagonal. */
export function lowerTriangle(T: number): Tensor {
  return tensor('bool', [T, T], Array.from({ length: T * T }, (_, i) => (i % T <= Math.floor(i / T) ? 1 : 0)));
}

/** A causal sliding window as Mistral's mask: true for keys i − window < j ≤ i. */
export function band(T: number, window: number): Tensor {
  return tensor('bool', [T, T], Array.from({ length: T * T }, (_, x) => {
    const i = Math.floor(x / T), j = x % T;
    return j <= i && j > i - window ? 1 : 0;
  }));
}

/**
 * Attention over q, k, v [B, T, D] written op by op as fixtures/models.ts buildGpt writes it: head
 * Reshape and Transpose, MatMul, Mul by the scale, Where against the causal mask, Softmax, MatMul,
 * and the heads merged back. A window > 0 masks with a causal band of that many keys instead.
 */
export function decomposedAttention(b: ModelBuilder, q: Value, k: Value, v: Value, heads: number, causal: boolean, window = 0): Value {
  const [, T, D] = q.shape as [unknown, number, number];
  const hd = D / heads;
  const split = (t: Value, perm: number[]): Value => b.op('Transpose', [b.op('Reshape', [t], { shape: [0, 0, heads, hd] })], { perm });
  let att = b.op('Mul', [b.op('MatMul', [split(q, [0, 2, 1, 3]), split(k, [0, 2, 3, 1])]), b.scalar(1 / Math.sqrt(hd))]);
  if (causal) att = b.op('Where', [b.constant(window > 0 ? band(T, window) : lowerTriangle(T), 'mask'), att, b.scalar(-1e9)]);
  const p = b.op('Softmax', [att], { axis: -1 });
  const y = b.op('Transpose', [b.op('MatMul', [p, split(v, [0, 2, 1, 3])])], { perm: [0, 2, 1, 3] });
  return b.op('Reshape', [y], { shape: [0, 0, D] });
}

/**
 * FusedAttention with a bias on its scores and its gradient as one graph, for kernel checks: inputs
 * q [B, Tq, D], k, v [B, Tk, D], dout [B, Tq, D] and bias `biasShape` ([B or 1, H or 1, Tq, Tk]);
 * outputs y0 (out), y1 (lse), y2..y4 (dq, dk, dv), y5 (dscores). Feeds are normal(0, 1) from `seed`.
 */
export function biasedAttentionCase(b: ModelBuilder, B: number, Tq: number, Tk: number, D: number, H: number, causal: boolean, biasShape: number[], seed: number): Record<string, Tensor> {
  const q = b.input('q', 'float32', [B, Tq, D]), dout = b.input('dout', 'float32', [B, Tq, D]);
  const k = b.input('k', 'float32', [B, Tk, D]), v = b.input('v', 'float32', [B, Tk, D]);
  const bias = b.input('bias', 'float32', biasShape);
  const attrs = { heads: H, scale: 1 / Math.sqrt(D / H), causal: causal ? 1 : 0 };
  const [o, lse] = b.ops('FusedAttention', [q, k, v, bias], attrs, 2) as [Value, Value];
  const grads = b.ops('FusedAttentionGrad', [dout, q, k, v, o, lse, bias], attrs, 4);
  [o, lse, ...grads].forEach((x, i) => b.output(x, `y${i}`));
  const rng = new Rng(seed);
  const feed = (shape: number[]): Tensor => tensor('float32', shape, Array.from({ length: shape.reduce((a, x) => a * x, 1) }, () => rng.normal()));
  return { q: feed([B, Tq, D]), k: feed([B, Tk, D]), v: feed([B, Tk, D]), dout: feed([B, Tq, D]), bias: feed(biasShape) };
}
