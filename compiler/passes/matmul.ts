import type { Graph, Node, Value } from '../../src/core/ir/graph.js';
import { int, str } from '../../src/core/ops/util.js';
import { redirectGradOf } from './grad_of.js';

/**
 * Folds into one FusedMatMul what a GEMM does for free: a Transpose that swaps an operand's last two
 * axes (autodiff writes one per matrix-product gradient: dX = dY·Wᵀ, dW = Xᵀ·dY) and a Mul or Div of
 * the product by a scalar constant (attention's 1/√d). Each fold removes a full read and write of
 * a tensor. Runs on the training graph after autodiff: FusedMatMul has no gradient of its own.
 * Value names and node metadata (phase, partition) are kept, and backward nodes that named a
 * folded forward node as what they differentiate (`meta.gradOf`, which the partitioner groups by)
 * name the fused node instead. Constants in `keep` (the backward seed, which loss scaling changes
 * at run time) are never folded. Returns how many nodes went.
 */
export function fuseMatMuls(g: Graph, keep: ReadonlySet<Value> = new Set()): number {
  const before = g.nodes.length;
  /** Folded node name → the name of the node that does its work now. */
  const into = new Map<string, string>();
  // Over a snapshot: a fold replaces the product (visited) or its scaling Mul/Div, never another product.
  for (const n of [...g.nodes]) {
    if (n.op !== 'MatMul' && n.op !== 'FusedMatMul') continue;
    const fused = n.op === 'FusedMatMul';
    const flags = { transA: fused ? int(n.attrs, 'transA') ?? 0 : 0, transB: fused ? int(n.attrs, 'transB') ?? 0 : 0 };
    let alpha = fused ? Number(n.attrs['alpha'] ?? 1) : 1;
    const inputs = [n.inputs[0]!, n.inputs[1]!];
    const folded: string[] = [];
    // Each operand through every swap before it: autodiff's Wᵀ of a tied weight that was a Transpose already.
    ([0, 1] as const).forEach((i) => {
      for (let t = swapOfLast(g, inputs[i]!); t; t = swapOfLast(g, inputs[i]!)) {
        folded.push(inputs[i]!.producer!.name);
        inputs[i] = t;
        flags[i === 0 ? 'transA' : 'transB'] ^= 1;
      }
    });
    // The product scaled by a scalar, where nothing else reads the unscaled product.
    const out = n.outputs[0]!;
    const user = out.users.length === 1 && !g.outputs.includes(out) ? out.users[0]! : undefined;
    const factor = user ? scalarFactor(user, out, keep) : undefined;
    if (!folded.length && factor === undefined) continue;
    const spec = (o: Value) => ({ name: o.name, dtype: o.dtype, shape: o.shape });
    if (factor !== undefined) {
      alpha *= factor;
      // The scaling node's output becomes the product's; the product's node goes.
      into.set(n.name, user!.name);
      for (const t of folded) into.set(t, user!.name);
      g.replaceNode(user!, { op: 'FusedMatMul', inputs, outputs: [spec(user!.outputs[0]!)], attrs: { ...flags, alpha }, meta: n.meta, scope: n.scope });
      g.removeNode(n);
    } else {
      for (const t of folded) into.set(t, n.name);
      g.replaceNode(n, { op: 'FusedMatMul', inputs, outputs: [spec(out)], attrs: { ...flags, alpha }, meta: n.meta, scope: n.scope });
    }
  }
  // (A·B)ᵀ = Bᵀ·Aᵀ: a product read only by a swap of its last two axes (a tied weight's gradient,
  // dW = (xᵀ·dY)ᵀ) is the product of the swapped operands, which the GEMM reads transposed for free.
  for (const t of [...g.nodes]) {
    const x = t.op === 'Transpose' && swapsLastTwo(t) ? t.inputs[0]! : undefined;
    const mm = x?.producer;
    if (!x || !mm || mm.op !== 'FusedMatMul' || str(mm.attrs, 'epilogue') || x.users.length !== 1 || g.outputs.includes(x)) continue;
    const [a, b] = mm.inputs as [Value, Value];
    if (a.shape.length !== 2 || b.shape.length !== 2) continue;
    const out = t.outputs[0]!;
    const attrs = { transA: 1 - (int(mm.attrs, 'transB') ?? 0), transB: 1 - (int(mm.attrs, 'transA') ?? 0), alpha: Number(mm.attrs['alpha'] ?? 1) };
    g.replaceNode(t, { op: 'FusedMatMul', inputs: [b, a], outputs: [{ name: out.name, dtype: out.dtype, shape: out.shape }], attrs, meta: mm.meta, scope: mm.scope });
    g.removeNode(mm);
    into.set(mm.name, t.name);
  }
  g.removeDeadCode();
  redirectGradOf(g, into);
  return before - g.nodes.length;
}

/** Does Transpose node `t` swap only the last two axes? */
function swapsLastTwo(t: Node): boolean {
  const perm = t.attrs['perm'] as readonly number[] | undefined;
  const r = t.outputs[0]!.shape.length;
  return !!perm && r >= 2 && perm.length === r && perm.every((p, i) => (i === r - 2 ? p === r - 1 : i === r - 1 ? p === r - 2 : p === i));
}

/** x when v = Transpose(x) swaps only the last two axes, else undefined. */
function swapOfLast(g: Graph, v: Value): Value | undefined {
  const t = v.producer;
  if (!t || t.op !== 'Transpose' || g.outputs.includes(v) || !swapsLastTwo(t)) return undefined;
  return t.inputs[0]!;
}

/** The constant scalar f when `n` computes `v · f`, `f · v` or `v / f`. */
function scalarFactor(n: Node, v: Value, keep: ReadonlySet<Value>): number | undefined {
  if (n.op !== 'Mul' && n.op !== 'Div') return undefined;
  const [a, b] = n.inputs;
  const other = a === v ? b : n.op === 'Mul' && b === v ? a : undefined;
  if (!other || keep.has(other) || other.kind !== 'const' || !other.data || other.data.data.length !== 1) return undefined;
  // A broadcast to a larger shape or another dtype is not a plain scaling.
  const o = n.outputs[0]!;
  if (o.dtype !== v.dtype || o.shape.length !== v.shape.length || o.shape.some((d, i) => d !== v.shape[i])) return undefined;
  const f = Number(other.data.data[0]);
  return n.op === 'Mul' ? f : f === 0 ? undefined : 1 / f;
}
