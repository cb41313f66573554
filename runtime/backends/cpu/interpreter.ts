import { CleaveError } from '../../../src/core/errors.js';
import type { Graph, Value } from '../../../src/core/ir/graph.js';
import { formatShape } from '../../../src/core/ir/shape.js';
import type { Tensor } from '../../../src/core/ir/tensor.js';
import { getOp } from '../../../src/core/ops/index.js';

export interface RunOptions {
  /** Also return these values (by name), besides the graph outputs. */
  keep?: readonly string[];
  /** Keep every value (for debugging and gradient tests). */
  keepAll?: boolean;
}

/** Checks a feed against its input: dtype, rank, sizes; symbols bind on first sight and must agree. */
export function checkFeeds(g: Graph, feeds: Readonly<Record<string, Tensor>>): void {
  const bound = new Map<string, number>();
  for (const v of g.inputs) {
    const t = feeds[v.name];
    if (!t) throw new CleaveError(`input '${v.name}' (${v.type}) is not given`);
    if (t.dtype !== v.dtype) throw new CleaveError(`input '${v.name}' must be ${v.dtype}, got ${t.dtype}`);
    const ok = t.shape.length === v.shape.length && v.shape.every((d, i) => {
      if (typeof d === 'number') return d === t.shape[i];
      const b = bound.get(d);
      if (b === undefined) bound.set(d, t.shape[i]!);
      return b === undefined || b === t.shape[i];
    });
    if (!ok) throw new CleaveError(`input '${v.name}' must have shape ${formatShape(v.shape)}, got ${formatShape(t.shape)}`);
  }
  const known = new Set(g.inputs.map((v) => v.name));
  for (const k of Object.keys(feeds)) if (!known.has(k)) throw new CleaveError(`'${k}' is not an input of the model (inputs: ${[...known].join(', ')})`);
}

/**
 * Runs a graph node by node on the registry's CPU kernels. Intermediate tensors are dropped after
 * their last use, so memory follows the live set rather than the whole graph.
 */
export function runGraph(g: Graph, feeds: Readonly<Record<string, Tensor>>, opts: RunOptions = {}): Map<string, Tensor> {
  checkFeeds(g, feeds);
  const env = new Map<Value, Tensor>();
  for (const v of g.inputs) env.set(v, feeds[v.name]!);
  const keep = new Set<Value>(g.outputs);
  for (const name of opts.keep ?? []) {
    const v = g.values.get(name);
    if (!v) throw new CleaveError(`no value named '${name}' in graph '${g.name}'`);
    keep.add(v);
  }
  const lastUse = new Map<Value, number>();
  g.nodes.forEach((n, i) => n.inputs.forEach((v) => v && lastUse.set(v, i)));
  const read = (v: Value): Tensor => {
    const t = env.get(v) ?? v.data;
    if (!t) throw new CleaveError(`value '${v.name}' is read before it is computed`);
    return t;
  };
  g.nodes.forEach((n, i) => {
    const def = getOp(n.op, `node '${n.name}'`);
    if (!def.cpu) throw new CleaveError(`node '${n.name}': op ${n.op} has no CPU kernel`);
    let outs: Tensor[];
    try {
      outs = def.cpu(n.inputs.map((v) => (v ? read(v) : null)), n.attrs, n.outputs.length);
    } catch (e) {
      if (e instanceof CleaveError) throw new CleaveError(`node '${n.name}' (${n.op}): ${e.message}`);
      throw e;
    }
    n.outputs.forEach((o, k) => env.set(o, outs[k]!));
    if (!opts.keepAll) {
      for (const v of n.inputs) if (v && v.kind === 'node' && lastUse.get(v) === i && !keep.has(v)) env.delete(v);
    }
  });
  const result = new Map<string, Tensor>();
  if (opts.keepAll) for (const [v, t] of env) result.set(v.name, t);
  for (const v of keep) result.set(v.name, read(v));
  return result;
}
