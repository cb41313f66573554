import { CleaveError } from '../../../core/errors.js';

/** Checks that each named size is a positive integer; the error names the layer and its arguments. */
export function positive(layer: string, sizes: Record<string, number>): void {
  for (const [k, v] of Object.entries(sizes)) {
    if (!Number.isInteger(v) || v < 1) throw new CleaveError(`${layer}: ${k} must be a positive integer, got ${v}`);
  }
}

/** Requires `rank` dimensions of the input (one of them, given several). */
export function requireRank(layer: string, shape: readonly unknown[], ...ranks: number[]): void {
  if (!ranks.includes(shape.length)) throw new CleaveError(`${layer}: expects an input of rank ${ranks.join(' or ')}, got shape [${shape.join(', ')}]`);
}
