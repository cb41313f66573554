import type { Graph } from '../../src/core/ir/graph.js';
import { foldTooLarge } from '../../src/core/ir/materialize.js';
import { getOp } from '../../src/core/ops/index.js';

/**
 * Evaluates every node whose inputs are all constants (and whose op may be folded) on its CPU
 * kernel, replacing it with constants; repeats down the graph. The importer folds as it reads
 * ONNX; this pass does the same for graphs built in code. A node whose outputs would pass
 * MAX_FOLD_BYTES stays a node: in a graph built in code it is what the author wrote, and the
 * runtime computes it when it runs rather than the compiler holding it on the host. Returns how
 * many nodes went.
 */
export function foldConstants(g: Graph): number {
  let folded = 0;
  for (const n of [...g.nodes]) {
    const def = getOp(n.op, `node '${n.name}'`);
    if (def.noFold || !def.cpu || !n.inputs.every((v) => !v || v.kind === 'const')) continue;
    if (foldTooLarge(`node '${n.name}'`, n.outputs.map((o) => o.name), n.outputs)) continue;
    const outs = def.cpu(n.inputs.map((v) => v?.data ?? null), n.attrs, n.outputs.length);
    n.outputs.forEach((o, i) => g.replaceAllUses(o, g.addConst(g.uniqueName(`${o.name}_folded`), outs[i]!)));
    g.removeNode(n);
    folded++;
  }
  g.removeDeadCode();
  return folded;
}
