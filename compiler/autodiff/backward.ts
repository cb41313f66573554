import type { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import { isFloat } from '../../src/core/ir/dtype.js';
import type { Graph, Node, Value } from '../../src/core/ir/graph.js';
import { tensor } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';

/** Values that depend on a parameter through floating-point data: the ones gradients reach. */
function differentiable(g: Graph, params: readonly Value[]): Set<Value> {
  const req = new Set<Value>(params);
  for (const n of g.nodes) {
    if (n.inputs.some((v) => v && req.has(v))) for (const o of n.outputs) if (isFloat(o.dtype)) req.add(o);
  }
  return req;
}

export interface Backward {
  /** dLoss/dParam for every parameter a gradient reaches (others are absent: their gradient is 0). */
  grads: Map<Value, Value>;
  /** Gradients of activations that further backward work consumes: what B-work is. */
  activationGrads: Set<Value>;
  /** The constant 1 dLoss/dLoss that starts the backward pass (loss scaling multiplies it). */
  seed: Value;
}

/**
 * Reverse-mode differentiation over the nodes currently in the graph: walks them backwards, asks
 * each op's gradient rule for its inputs' gradients, and sums the contributions of values used more
 * than once (tied weights included). Nodes are tagged `meta.phase = 'backward'` and
 * `meta.gradOf = forward node`.
 */
export function backward(b: ModelBuilder, loss: Value, params: readonly Value[]): Backward {
  const g = b.graph;
  const forward = [...g.nodes];
  const req = differentiable(g, params);
  if (!req.has(loss)) throw new CleaveError(`the loss '${loss.name}' does not depend on any parameter`);
  const parts = new Map<Value, Value[]>();
  const add = (v: Value, d: Value): void => {
    const list = parts.get(v);
    if (list) list.push(d);
    else parts.set(v, [d]);
  };
  const total = (v: Value): Value | null => {
    const list = parts.get(v);
    if (!list?.length) return null;
    if (list.length > 1) parts.set(v, [b.op('Sum', list)]);
    return parts.get(v)![0]!;
  };
  const seed = b.constant(tensor(loss.dtype, [], [1]), 'loss_grad_seed');
  add(loss, seed);
  const activationGrads = new Set<Value>();
  for (let i = forward.length - 1; i >= 0; i--) {
    const n = forward[i]!;
    const needsGrad = n.inputs.map((v) => !!v && req.has(v));
    if (!needsGrad.some(Boolean)) continue;
    const gradOutputs = b.within(`${n.name}_grad/`, { phase: 'backward', gradOf: n.name }, () => n.outputs.map(total));
    if (gradOutputs.every((x) => !x)) continue;
    const def = getOp(n.op, `node '${n.name}'`);
    if (def.grad === 'zero') continue;
    if (!def.grad) throw new CleaveError(`node '${n.name}': op ${n.op} has no gradient rule, and the loss depends on it`);
    for (const d of gradOutputs) if (d) activationGrads.add(d);
    const rule = def.grad;
    const grads = b.within(`${n.name}_grad/`, { phase: 'backward', gradOf: n.name }, () =>
      rule({ b, node: n.name, inputs: n.inputs, outputs: n.outputs, attrs: n.attrs, gradOutputs, needsGrad }));
    n.inputs.forEach((v, k) => {
      const d = grads[k];
      if (v && d && needsGrad[k]) add(v, checkGrad(n, v, d));
    });
  }
  const result = new Map<Value, Value>();
  b.within('/grad/', { phase: 'backward' }, () => {
    for (const p of params) {
      const d = total(p);
      if (d) result.set(p, d);
    }
  });
  return { grads: result, activationGrads, seed };
}

function checkGrad(n: Node, v: Value, d: Value): Value {
  // A symbolic input dim that an op matched against a size (x [N, F] times a weight [4, 3]) leaves
  // the symbol in gradients whose operand has the size: the model is fine once the symbol is bound.
  const symbolic = d.dtype === v.dtype && d.shape.length === v.shape.length
    ? d.shape.flatMap((x, i) => (x !== v.shape[i] && (typeof x === 'string' || typeof v.shape[i] === 'string') ? [[x, v.shape[i]!] as const] : []))
    : [];
  if (symbolic.length && symbolic.length === d.shape.filter((x, i) => x !== v.shape[i]).length) {
    const binds = symbolic.map(([a, b]) => (typeof a === 'string' ? `${a}=${b}` : `${b}=${a}`));
    throw new CleaveError(`node '${n.name}' (${n.op}): the gradient for '${v.name}' ${v.type} comes out as ${d.type}: the symbolic dimension${binds.length > 1 ? 's' : ''} ${symbolic.map(([a, b]) => `'${typeof a === 'string' ? a : b}'`).join(', ')} must be bound to train; import with --dim ${binds.join(' --dim ')} (or give the input a fixed size)`);
  }
  if (d.dtype !== v.dtype || d.shape.length !== v.shape.length || d.shape.some((x, i) => x !== v.shape[i])) {
    throw new Error(`gradient rule of ${n.op} (node '${n.name}') gives ${d.type} for input '${v.name}' of type ${v.type}`);
  }
  return d;
}

/**
 * Splits backward work for zero-bubble schedules: a backward node is B (input-gradient work) when
 * some activation gradient depends on it, W (weight-gradient work) when it only feeds parameter
 * gradients. The tag goes in `meta.phase`.
 */
export function markInputAndWeightWork(g: Graph, activationGrads: ReadonlySet<Value>): void {
  const isB = new Set<Node>();
  const stack = [...activationGrads].map((v) => v.producer).filter((p): p is Node => !!p);
  while (stack.length) {
    const n = stack.pop()!;
    if (isB.has(n) || n.meta['phase'] === undefined || n.meta['phase'] === 'forward' || n.meta['phase'] === 'loss') continue;
    isB.add(n);
    for (const v of n.inputs) if (v?.producer) stack.push(v.producer);
  }
  for (const n of g.nodes) {
    if (typeof n.meta['phase'] === 'string' && n.meta['phase'].startsWith('backward')) n.meta['phase'] = isB.has(n) ? 'backwardB' : 'backwardW';
  }
}
