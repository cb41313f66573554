import type { Tensor } from '../../src/core/ir/tensor.js';

/**
 * Normwise relative error max|a − b| / max|b|: element-wise ratios blow up where the reference is
 * near zero, so errors are measured against the tensor's scale. NaNs must match.
 */
export function maxRelError(a: Tensor, b: Tensor): number {
  if (a.shape.join() !== b.shape.join()) throw new Error(`shape ${a.shape} vs ${b.shape}`);
  let diff = 0, scale = 0;
  for (let i = 0; i < a.data.length; i++) {
    const x = a.data[i]!, y = b.data[i]!;
    if (Number.isNaN(x) || Number.isNaN(y)) {
      if (Number.isNaN(x) !== Number.isNaN(y)) return Infinity;
      continue;
    }
    if (x !== y) diff = Math.max(diff, Math.abs(x - y));
    scale = Math.max(scale, Math.abs(y));
  }
  return diff === 0 ? 0 : diff / (scale || 1);
}
