import type { Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { lastAxisSlice, rotateEveryTwo, rotateHalf } from './buffers.js';
import { ConstEval } from './const_eval.js';
import { type Rule, any, bound, op } from './rewrite.js';

// Rotary embeddings written out, as HF's Llama, Mistral, Gemma, Qwen2 and GPT-NeoX write them:
//   x · cos + rotate_half(x) · sin        (cos, sin: [.., S, D], each half the same angles)
// becomes one RotaryEmbedding (ONNX opset 23) over x [B, H, S, D] with a [S, D/2] cache and
// constant position ids: one pass over x instead of two slices, a Neg, a Concat, two products and
// a sum; GPT-J's interleaved form (rotate_every_two, the tables repeated per pair) the same with
// interleaved = 1. Another row takes GPT-NeoX's partial form, the rotated first rd features concatenated with
// the rest, into the same node with rotary_embedding_dim rd. The tables must be constants (the
// import keeps the exporter's folded ones constant); positions fed by the model stay as written.

/** [S, D] of a table broadcast over x's leading dims (1s or, equal for each, the batch), or null. */
function rows(t: Tensor, S: number, D: number): Float64Array | null {
  const s = t.shape, r = s.length;
  if (r < 2 || s[r - 1] !== D || s[r - 2] !== S) return null;
  const per = S * D, n = t.data.length / per;
  for (let k = 1; k < n; k++) for (let i = 0; i < per; i++) if (t.data[k * per + i] !== t.data[i]) return null;
  return Float64Array.from(t.data.subarray(0, per));
}

/**
 * The [S, D/2] cache when both halves of each row hold the same angles' values (rotate-half), or
 * each pair of neighbours does (interleaved).
 */
function halfCache(r: Float64Array, S: number, D: number, interleaved = false): Float64Array | null {
  const h = D / 2, out = new Float64Array(S * h);
  for (let s = 0; s < S; s++) for (let j = 0; j < h; j++) {
    const a = r[s * D + (interleaved ? 2 * j : j)]!, b = r[s * D + (interleaved ? 2 * j + 1 : h + j)]!;
    if (Math.abs(a - b) > 1e-6 * Math.max(1, Math.abs(a))) return null;
    out[s * h + j] = a;
  }
  return out;
}

export function rotaryRules(): Rule[] {
  const consts = new ConstEval();
  return [
    ...([[rotateHalf, 0], [rotateEveryTwo, 1]] as const).map(([rotate, interleaved]): Rule => ({
      name: interleaved ? 'interleaved rotary embedding' : 'rotary embedding',
      pattern: op('Add', [op('Mul', [rotate, any('sin', { shared: true })], { commute: true }), op('Mul', [any('x', { shared: true }), any('cos', { shared: true })], { commute: true })], { commute: true }),
      rewrite(m, g, at) {
        const x = bound(m, 'x'), out = m.root.outputs[0]!;
        const [B, , S, D] = x.shape;
        if (x.shape.length !== 4 || typeof B !== 'number' || typeof S !== 'number' || typeof D !== 'number' || D % 2) return null;
        if (out.shape.length !== 4 || out.shape.some((d, i) => d !== x.shape[i])) return null;
        const c = consts.of(bound(m, 'cos')), s = consts.of(bound(m, 'sin'));
        const cr = c && rows(c, S, D), sr = s && rows(s, S, D);
        const cc = cr && halfCache(cr, S, D, interleaved === 1), sc = sr && halfCache(sr, S, D, interleaved === 1);
        if (!cc || !sc) return null;
        const cache = (name: string, d: Float64Array): Value => g.addConst(g.uniqueName(`${out.name}__${name}`), tensor(x.dtype, [S, D / 2], d));
        const pos = g.addConst(g.uniqueName(`${out.name}__positions`), tensor('int64', [B, S], Array.from({ length: B * S }, (_, i) => i % S)));
        return at.value('RotaryEmbedding', [x, cache('cos', cc), cache('sin', sc), pos], { interleaved, num_heads: 0, rotary_embedding_dim: 0 }, { dtype: x.dtype, shape: x.shape });
      },
    })),
    {
      // GPT-NeoX's partial rotary: concat(rope(x[…, :rd]), x[…, rd:]) is one rope of rotary dim rd.
      name: 'partial rotary embedding',
      pattern: op('Concat', [op('RotaryEmbedding', [op('Slice', [any('x', { shared: true })]), any('cos'), any('sin'), any('pos')]), op('Slice', [any('x', { shared: true })], { shared: true })]),
      rewrite(m, _g, at) {
        const x = bound(m, 'x'), out = m.root.outputs[0]!, rope = m.nodes[1]!;
        const ax = m.root.attrs['axis'] as number, D = x.shape[x.shape.length - 1];
        const head = lastAxisSlice(rope.inputs[0]!.producer), tail = lastAxisSlice(m.root.inputs[1]!.producer);
        if ((ax !== -1 && ax !== x.shape.length - 1) || typeof D !== 'number' || !head || !tail) return null;
        const rd = head.end;
        if (head.start !== 0 || tail.start !== rd || tail.end < D || rd >= D || (rope.attrs['rotary_embedding_dim'] ?? 0) !== 0 || rope.attrs['interleaved']) return null;
        return at.value('RotaryEmbedding', [x, bound(m, 'cos'), bound(m, 'sin'), bound(m, 'pos')], { interleaved: 0, num_heads: 0, rotary_embedding_dim: rd }, { dtype: x.dtype, shape: out.shape });
      },
    },
    {
      // HF applies rotary after the head split, to [B, H, S, D]: the same rotation on the rows
      // [B, S, H·D] before the split (ONNX RotaryEmbedding's 3-D form) leaves the split a plain
      // view of rows, which the fused attention reads as they are instead of copying the heads back.
      name: 'rotary before the head split',
      pattern: op('RotaryEmbedding', [op('Transpose', [op('Reshape', [any('rows')])]), any('cos'), any('sin'), any('pos')]),
      rewrite(m, _g, at) {
        const rows = bound(m, 'rows'), tr = m.nodes[1]!, split = m.nodes[2]!.outputs[0]!, out = m.root.outputs[0]!;
        const [B, S, HD] = rows.shape, [B2, S2, H, D] = split.shape;
        const perm = tr.attrs['perm'] as readonly number[] | undefined;
        if (rows.shape.length !== 3 || split.shape.length !== 4 || !perm || perm.join() !== '0,2,1,3' || m.root.attrs['num_heads']) return null;
        if (typeof H !== 'number' || typeof D !== 'number' || B2 !== B || S2 !== S || HD !== H * D) return null;
        const r3 = at.value('RotaryEmbedding', [rows, bound(m, 'cos'), bound(m, 'sin'), bound(m, 'pos')], { ...m.root.attrs, num_heads: H }, { dtype: rows.dtype, shape: rows.shape });
        const heads = at.value('Reshape', [r3], { shape: [0, 0, H, D] }, { dtype: rows.dtype, shape: split.shape });
        return at.value('Transpose', [heads], { perm: [0, 2, 1, 3] }, { dtype: rows.dtype, shape: out.shape });
      },
    },
  ];
}

