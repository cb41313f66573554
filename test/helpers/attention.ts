import type { ModelBuilder } from '../../src/api/builder.js';
import type { Value } from '../../src/ir/graph.js';
import { type Tensor, tensor } from '../../src/ir/tensor.js';

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
