import type { DType } from './dtype.js';
import { type Attrs, Graph, type Value } from './graph.js';
import type { Tensor } from './tensor.js';

export interface CloneHooks {
  dtype?: (d: DType) => DType;
  data?: (v: Value) => Tensor;
  attrs?: (op: string, a: Attrs) => Attrs;
}

/** A deep copy of the graph's structure (tensor data shared unless `data` says otherwise). */
export function cloneGraph(g: Graph, hooks: CloneHooks = {}): Graph {
  const dt = hooks.dtype ?? ((d: DType) => d);
  const out = new Graph(g.name, g.opset);
  const map = new Map<Value, Value>();
  for (const v of g.values.values()) {
    if (v.kind === 'node') continue;
    const data = v.data && (hooks.data ? hooks.data(v) : v.data);
    let c: Value;
    if (v.kind === 'input') c = out.addInput(v.name, dt(v.dtype), v.shape);
    else if (v.kind === 'param') c = data ? out.addParam(v.name, data) : out.addLazyParam(v.name, dt(v.dtype), v.shape as number[], v.init!);
    else if (v.kind === 'state') c = out.addState(v.name, data!);
    else c = out.addConst(v.name, data!);
    // Data a hook replaced no longer matches the file's bytes.
    if (v.origin && (!hooks.data || data === v.data) && c.dtype === v.dtype) c.origin = v.origin;
    map.set(v, c);
  }
  // Keep input order as declared, not as the values map happens to hold them.
  out.inputs.sort((a, b) => g.inputs.findIndex((v) => v.name === a.name) - g.inputs.findIndex((v) => v.name === b.name));
  for (const n of g.nodes) {
    const node = out.addNode({
      op: n.op,
      name: n.name,
      scope: n.scope,
      inputs: n.inputs.map((v) => (v ? map.get(v)! : null)),
      attrs: hooks.attrs ? hooks.attrs(n.op, n.attrs) : n.attrs,
      meta: n.meta,
      outputs: n.outputs.map((o) => ({ name: o.name, dtype: dt(o.dtype), shape: o.shape })),
    });
    n.outputs.forEach((o, i) => map.set(o, node.outputs[i]!));
  }
  for (const o of g.outputs) out.addOutput(map.get(o)!);
  return out;
}
