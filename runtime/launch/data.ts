import { dtypeFromOnnx } from '../../src/ir/dtype.js';
import { Value } from '../../src/ir/graph.js';
import { type Tensor, tensor } from '../../src/ir/tensor.js';
import type { Plan } from '../../src/plan/types.js';
import type { DataSpec } from '../data/sources.js';

/** The plan's inputs (and labels), as the data sources want them described. */
export function dataSpec(plan: Plan): DataSpec {
  const asValue = (i: number) => {
    const v = plan.values[i]!;
    return new Value(v.name, dtypeFromOnnx(v.dtype, v.name), v.shape, 'input');
  };
  const inputs = plan.values.map((v, i) => [v, i] as const).filter(([v, i]) => v.kind === 'input' && i !== plan.model.labelsValue).map(([, i]) => asValue(i));
  const labels = plan.model.labelsValue >= 0 ? asValue(plan.model.labelsValue) : undefined;
  const lossKind = (JSON.parse(plan.model.loss) as { kind: 'output' | 'cross-entropy' | 'mse' }).kind;
  return { inputs, labels, lossKind };
}

/** Rows [from, from + n) of every tensor in a batch. */
export function rows(batch: Record<string, Tensor>, from: number, n: number): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(batch)) {
    const row = t.data.length / t.shape[0]!;
    out[k] = tensor(t.dtype, [n, ...t.shape.slice(1)], t.data.subarray(from * row, (from + n) * row));
  }
  return out;
}

