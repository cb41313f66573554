import type { Value } from '../../src/core/ir/graph.js';
import type { Tensor } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';

/**
 * Values computable from constants alone, by the registry's CPU kernels (the causal mask of a graph
 * built in code is Trilu and Cast of constants until folding runs). Memoized per value, failures too.
 */
export class ConstEval {
  private readonly memo = new Map<Value, Tensor | null>();

  of(v: Value | null | undefined): Tensor | null {
    if (!v) return null;
    if (v.kind === 'const') return v.data ?? null;
    if (v.kind !== 'node' || !v.producer) return null;
    const known = this.memo.get(v);
    if (known !== undefined) return known;
    const n = v.producer;
    const def = getOp(n.op, `node '${n.name}'`);
    this.memo.set(v, null);
    if (def.noFold || !def.cpu) return null;
    const ins: (Tensor | null)[] = [];
    for (const x of n.inputs) {
      const t = x ? this.of(x) : null;
      if (x && !t) return null;
      ins.push(t);
    }
    let outs: Tensor[];
    try {
      outs = def.cpu(ins, n.attrs, n.outputs.length);
    } catch {
      // Not a constant this pass can use; whatever is wrong is reported where the graph runs.
      return null;
    }
    n.outputs.forEach((o, i) => this.memo.set(o, outs[i] ?? null));
    return this.memo.get(v) ?? null;
  }

  scalar(v: Value | null | undefined): number | null {
    const t = this.of(v);
    return t && t.data.length === 1 ? t.data[0]! : null;
  }
}
