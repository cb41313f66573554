import { dtypeFromOnnx, dtypeToOnnx, isFloat } from '../../src/core/ir/dtype.js';
import { cloneGraph } from '../../src/core/ir/clone.js';
import type { Graph } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';


/**
 * The same graph computing in float64: every float value, parameter and constant, and every
 * dtype-valued attribute (Cast's `to`) that names a float type. Gradient checks run on this.
 */
export function toFloat64(g: Graph): Graph {
  return cloneGraph(g, {
    dtype: (d) => (isFloat(d) ? 'float64' : d),
    data: (v) => (isFloat(v.data!.dtype) ? tensor('float64', v.data!.shape, v.data!.data) : v.data!),
    attrs: (op, a) => {
      const def = getOp(op, op);
      const out = { ...a };
      for (const [k, spec] of Object.entries(def.attrs)) {
        if (spec.type === 'dtype' && typeof a[k] === 'number') {
          const d = dtypeFromOnnx(a[k] as number, op);
          out[k] = dtypeToOnnx(isFloat(d) ? 'float64' : d);
        }
        const t = a[k] as Tensor | undefined;
        if (spec.type === 'tensor' && t && isFloat(t.dtype)) out[k] = tensor('float64', t.shape, t.data);
      }
      return out;
    },
  });
}
