import type { Value } from '../../src/core/ir/graph.js';
import { tensor } from '../../src/core/ir/tensor.js';
import { type Emitter, type Rule, any, bound, op } from './rewrite.js';

// Products as exporters write them, made into the one spelling the training passes fold into
// cuBLASLt GEMMs (compiler/passes/matmul.ts, epilogue.ts): MatMul, then a bias Add.
//
// - ONNX Gemm (torch.onnx writes `addmm`, and HF GPT-2's Conv1D, as Gemm on [B·T, D] rows) is
//   MatMul of its (transposed) operands, scaled by alpha, plus beta·C.
// - A product on rows flattened out of [B, T, D] and reshaped back, `Reshape(MatMul(Reshape(x),
//   W) + b)`, is the product on x itself: the flattening hides the bias and the activation after
//   it from the epilogue fold, and a batched MatMul of x by a matrix is the same one GEMM.

const isStatic = (d: unknown): d is number => typeof d === 'number';
const num = (attrs: Record<string, unknown>, k: string, d: number): number => (typeof attrs[k] === 'number' ? (attrs[k] as number) : d);

function scaled(at: Emitter, g: Parameters<Rule['rewrite']>[1], v: Value, by: number): Value {
  if (by === 1) return v;
  const s = g.addConst(g.uniqueName(`${v.name}__scale`), tensor(v.dtype, [], [by]));
  return at.value('Mul', [v, s], {}, { dtype: v.dtype, shape: v.shape });
}

const transposed = (at: Emitter, v: Value, t: boolean): Value =>
  t ? at.value('Transpose', [v], { perm: [1, 0] }, { dtype: v.dtype, shape: [v.shape[1]!, v.shape[0]!] }) : v;

/** b is one value per output column ([N], or 1s before it): it broadcasts the same over any rows. */
const isRowBias = (b: Value, N: number, rank: number): boolean => b.shape.length >= 1 && b.shape.length <= rank && b.shape[b.shape.length - 1] === N && b.shape.slice(0, -1).every((d) => d === 1);

/** Reshape(MatMul(Reshape(x), W) [+ b]) as MatMul(x, W) [+ b], where the reshapes only flatten and restore x's leading axes. */
function throughRows(withBias: boolean): Rule {
  const mm = op('MatMul', [op('Reshape', [any('x')], { shared: true }), any('w')]);
  return {
    name: 'product on flattened rows',
    pattern: op('Reshape', [withBias ? op('Add', [mm, any('b')], { commute: true }) : mm]),
    rewrite(m, _g, at) {
      const x = bound(m, 'x'), w = bound(m, 'w'), out = m.root.outputs[0]!;
      const rows = (withBias ? m.nodes[2]! : m.nodes[1]!).inputs[0]!;
      if (w.shape.length !== 2 || rows.shape.length !== 2 || x.shape.length < 3 || ![...x.shape, ...w.shape, ...out.shape].every(isStatic)) return null;
      const K = x.shape[x.shape.length - 1] as number, N = w.shape[1] as number;
      const lead = x.shape.slice(0, -1) as number[];
      if (rows.shape[1] !== K || w.shape[0] !== K || rows.shape[0] !== lead.reduce((a, b) => a * b, 1)) return null;
      if (out.shape.length !== x.shape.length || out.shape.some((d, i) => d !== (i < lead.length ? lead[i] : N))) return null;
      const b = withBias ? bound(m, 'b') : null;
      if (b && (!isRowBias(b, N, out.shape.length) || b.dtype !== out.dtype)) return null;
      const prod = at.value('MatMul', [x, w], {}, { dtype: out.dtype, shape: out.shape });
      return b ? at.value('Add', [prod, b], {}, { dtype: out.dtype, shape: out.shape }) : prod;
    },
  };
}

export const GEMM_ROWS: readonly Rule[] = [
  {
    name: 'Gemm as MatMul and Add',
    pattern: op('Gemm', undefined),
    rewrite(m, g, at) {
      const n = m.root, out = n.outputs[0]!;
      const [a, b, c] = n.inputs;
      if (!a || !b || a.shape.length !== 2 || b.shape.length !== 2) return null;
      const prod = at.value('MatMul', [transposed(at, a, num(n.attrs, 'transA', 0) === 1), transposed(at, b, num(n.attrs, 'transB', 0) === 1)], {}, { dtype: out.dtype, shape: out.shape });
      const p = scaled(at, g, prod, num(n.attrs, 'alpha', 1));
      if (!c) return p;
      return at.value('Add', [p, scaled(at, g, c, num(n.attrs, 'beta', 1))], {}, { dtype: out.dtype, shape: out.shape });
    },
  },
  throughRows(true),
  throughRows(false),
];
