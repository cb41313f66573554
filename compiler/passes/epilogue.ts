import type { Graph, Node, Value } from '../../src/core/ir/graph.js';
import { int, str } from '../../src/core/ops/util.js';
import { redirectGradOf } from './grad_of.js';

/**
 * Folds into the product before it what a cuBLASLt epilogue does while the GEMM's tile is still in
 * registers: a bias Add along the last axis, then GELU-tanh (forward), and the GELU-tanh gradient
 * applied to a product (backward: dH = (dY·W₂ᵀ) ⊙ GELU′(H)). Each fold saves a full read and write
 * of an activation. Runs after fuseMatMuls on the training graph. Only products that are one GEMM
 * (a matrix B, and A untransposed or a matrix) fold, as the epilogue broadcasts over one row index.
 * Value names are kept: where the backward reads the pre-activation, the fused node writes it as a
 * second output under its old name. Returns how many nodes went.
 */
export function fuseEpilogues(g: Graph): number {
  const before = g.nodes.length;
  const into = new Map<string, string>();
  for (const n of [...g.nodes]) {
    if (!g.nodes.includes(n) || !isPlainGemm(n)) continue;
    const out = n.outputs[0]!;
    const user = soleUser(g, out);
    if (user?.op === 'Add') fuseBias(g, n, user, into);
    else if (user?.op === 'GeluGrad' && user.inputs[0] === out && str(user.attrs, 'approximate') === 'tanh') fuseGeluGrad(g, n, user, into);
  }
  redirectGradOf(g, into);
  return before - g.nodes.length;
}

/** A product without an epilogue whose rows all share one matrix B. */
function isPlainGemm(n: Node): boolean {
  if (n.op !== 'MatMul' && n.op !== 'FusedMatMul') return false;
  if (n.op === 'FusedMatMul' && (str(n.attrs, 'epilogue') ?? '') !== '') return false;
  const [a, b] = n.inputs;
  if (!a || !b || b.shape.length !== 2 || a.shape.length < 2) return false;
  return a.shape.length === 2 || (int(n.attrs, 'transA') ?? 0) === 0;
}

function soleUser(g: Graph, v: Value): Node | undefined {
  return v.users.length === 1 && !g.outputs.includes(v) ? v.users[0] : undefined;
}

const sameShape = (a: readonly unknown[], b: readonly unknown[]) => a.length === b.length && a.every((d, i) => d === b[i]);

const gemmAttrs = (n: Node) => ({ transA: int(n.attrs, 'transA') ?? 0, transB: int(n.attrs, 'transB') ?? 0, alpha: Number(n.attrs['alpha'] ?? 1) });

const spec = (o: Value) => ({ name: o.name, dtype: o.dtype, shape: o.shape });

function fuseBias(g: Graph, mm: Node, add: Node, into: Map<string, string>): void {
  const prod = mm.outputs[0]!;
  const bias = add.inputs[0] === prod ? add.inputs[1] : add.inputs[0];
  const sum = add.outputs[0]!;
  const n = prod.shape[prod.shape.length - 1];
  if (!bias || bias === prod || bias.dtype !== prod.dtype || bias.shape.length !== 1 || bias.shape[0] !== n || !sameShape(sum.shape, prod.shape)) return;
  const inputs = [mm.inputs[0]!, mm.inputs[1]!, bias];
  // The pre-activation stays a value only where something besides the GELU reads it (GeluGrad);
  // the fused node takes the GELU's place, so those readers must come after it.
  const gelus = g.outputs.includes(sum) ? [] : sum.users.filter((u) => u.op === 'Gelu' && str(u.attrs, 'approximate') === 'tanh');
  const gelu = gelus.length === 1 && !sum.users.some((u) => u !== gelus[0] && g.nodes.indexOf(u) < g.nodes.indexOf(gelus[0]!)) ? gelus[0]! : undefined;
  if (!gelu) {
    g.replaceNode(add, { op: 'FusedMatMul', inputs, outputs: [spec(sum)], attrs: { ...gemmAttrs(mm), epilogue: 'bias' }, meta: mm.meta, scope: mm.scope });
    g.removeNode(mm);
    into.set(mm.name, add.name);
    return;
  }
  const keepSum = sum.users.length > 1;
  const name = gelu.name;
  const fused = g.replaceNode(gelu, {
    op: 'FusedMatMul', inputs, attrs: { ...gemmAttrs(mm), epilogue: 'gelu_bias' }, meta: mm.meta, scope: mm.scope,
    outputs: keepSum ? [spec(gelu.outputs[0]!), { ...spec(sum), name: g.uniqueName(`${sum.name}__pre`) }] : [spec(gelu.outputs[0]!)],
  });
  const sumName = sum.name;
  if (keepSum) g.replaceAllUses(sum, fused.outputs[1]!);
  g.removeNode(add);
  g.removeNode(mm);
  if (keepSum) g.renameValue(fused.outputs[1]!, sumName);
  into.set(mm.name, name).set(add.name, name);
}

function fuseGeluGrad(g: Graph, mm: Node, gg: Node, into: Map<string, string>): void {
  const pre = gg.inputs[1]!;
  if (pre.dtype !== mm.outputs[0]!.dtype || !sameShape(pre.shape, mm.outputs[0]!.shape)) return;
  g.replaceNode(gg, {
    op: 'FusedMatMul', inputs: [mm.inputs[0]!, mm.inputs[1]!, pre], outputs: [spec(gg.outputs[0]!)],
    attrs: { ...gemmAttrs(mm), epilogue: 'dgelu' }, meta: mm.meta, scope: mm.scope,
  });
  g.removeNode(mm);
  into.set(mm.name, gg.name);
}
