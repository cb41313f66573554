import { dtypeBytes } from './dtype.js';
import type { Graph, Value } from './graph.js';
import { numel } from './shape.js';

export interface TensorStats {
  count: number;
  bytes: number;
}

export function tensorStats(values: readonly Value[]): TensorStats {
  let count = 0, bytes = 0;
  for (const v of values) {
    const n = numel(v.shape, 1);
    count += n;
    bytes += n * dtypeBytes(v.dtype);
  }
  return { count, bytes };
}

/** Trainable parameters: what SMP and PyTorch count as the model's size. */
export const parameterStats = (g: Graph): TensorStats => tensorStats(g.params());
