import { dtypeToOnnx } from '../../src/core/ir/dtype.js';
import type { Graph, Node, Value } from '../../src/core/ir/graph.js';
import { type Dim, shapesEqual } from '../../src/core/ir/shape.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { fusedAttrsOfOnnx, lseDtype } from '../../src/core/ops/attention.js';
import { getOp } from '../../src/core/ops/index.js';
import { MASKED, feedsSoftmax, valuesBehind } from './buffers.js';
import { ConstEval } from './const_eval.js';
import { type Emitter, type Rule, type RuleCounts, any, applyRules, bound, dropUnread, emitterBefore, op, scalar } from './rewrite.js';

// Attention fusion as rule tables. The decomposed attention of a transformer block becomes one
// FusedAttention over the [B, T, D] q, k, v it started from, so the T × T scores, their softmax
// and the head transposes are neither computed as tensors nor stashed for the backward pass.
//
// Exporters spell attention many ways. The CANONICAL rows rewrite each spelling, exactly, towards
// one form; the ATTENTION row then reads that form around a Softmax:
//
//   Q [B,H,T,Dh] ─┐
//   Kᵀ [B,H,Dh,T] ─MatMul─(scale)─(mask)─Softmax─(NaN guard)─MatMul─(head merge)  ⇒  FusedAttention
//   V [B,H,T,Dh] ──────────────────────────────────────────────┘
//
// where Q, K and V are head splits of [B, T, D] rows (those go with the pattern) or any head-major
// values (rotary embeddings applied after the split, K/V heads repeated for grouped-query
// attention), which are moved into rows by a copy. The scale is any product of constant factors
// on the scores (or pulled out of q and k); the mask is a constant (or constant-computed) Where or
// added tensor, causal or all-keep, its masked value very negative. ONNX Attention nodes are
// rewritten too. What stays unfused is reported with the reason, per Softmax.

function soleUser(g: Graph, v: Value | null | undefined): Node | null {
  return v && v.users.length === 1 && !g.outputs.includes(v) ? v.users[0]! : null;
}

function producedBy(v: Value | null | undefined, o: string): Node | null {
  return v?.kind === 'node' && v.producer?.op === o ? v.producer : null;
}

const permOf = (n: Node): readonly number[] | undefined => n.attrs['perm'] as readonly number[] | undefined;
const permIs = (n: Node, perm: readonly number[]): boolean => {
  const p = permOf(n);
  return !!p && p.length === perm.length && p.every((x, i) => x === perm[i]);
};
const isStatic = (d: Dim | undefined): d is number => typeof d === 'number';

// --- canonical rows ---------------------------------------------------------------------------

const scaledBy = (name: string, s: string): ReturnType<typeof op> => op('Mul', [any(name), scalar(s)], { commute: true });

export const CANONICAL: readonly Rule[] = [
  {
    // A scalar computed from constants alone (an unoptimized export's Sqrt(0.25) scale on q
    // and k) is that constant: the rows below read scales and masks as constants.
    name: 'constant computation',
    pattern: any('c', {
      test: (v) => {
        const n = v.producer;
        return !!n && n.outputs.length === 1 && n.inputs.length > 0 && n.inputs.every((x) => !x || x.kind === 'const') && v.shape.every(isStatic) && v.shape.reduce<number>((a, d) => a * (d as number), 1) === 1;
      },
    }),
    rewrite(m, g) {
      const n = m.root, def = getOp(n.op, `node '${n.name}'`), out = n.outputs[0]!;
      if (def.noFold || !def.cpu) return null;
      const [t] = def.cpu(n.inputs.map((x) => x?.data ?? null), n.attrs, 1);
      return t ? g.addConst(g.uniqueName(`${out.name}__const`), t) : null;
    },
  },
  {
    // Transpose(Transpose(x, p), r) = Transpose(x, p∘r); the identity permutation is x itself.
    name: 'transpose of a transpose',
    pattern: op('Transpose', [op('Transpose', [any('x')])]),
    rewrite(m, _g, at) {
      const outer = m.root, inner = m.nodes[1]!, x = bound(m, 'x');
      const p = permOf(inner), r = permOf(outer);
      if (!p || !r || p.length !== r.length) return null;
      const perm = r.map((i) => p[i]!);
      if (perm.every((x, i) => x === i)) return x;
      return at.value('Transpose', [x], { perm }, { dtype: x.dtype, shape: outer.outputs[0]!.shape });
    },
  },
  {
    // Reshape(Reshape(x)) is one Reshape of x: where the outer one copies no dimension of its input
    // (a 0 in its shape reads the inner one's, not x's). Reshapes are views, but the pair hides
    // what is around it from the other rows (a head merge, a product on flattened rows).
    name: 'reshape of a reshape',
    pattern: op('Reshape', [op('Reshape', [any('x')])]),
    rewrite(m, _g, at) {
      const x = bound(m, 'x'), out = m.root.outputs[0]!;
      const shape = m.root.attrs['shape'] as readonly number[] | undefined;
      const target = out.shape.every(isStatic) ? out.shape : shape && (m.root.attrs['allowzero'] === 1 || !shape.includes(0)) ? shape : null;
      if (!target) return null;
      return at.value('Reshape', [x], { shape: [...target], ...(target.includes(0) ? { allowzero: 1 } : {}) }, { dtype: x.dtype, shape: out.shape });
    },
  },
  {
    name: 'cast to its own type',
    pattern: op('Cast', [any('x')]),
    rewrite: (m) => (bound(m, 'x').dtype === m.root.outputs[0]!.dtype ? bound(m, 'x') : null),
  },
  {
    name: 'cast to its own type',
    pattern: op('CastLike', [any('x'), any()]),
    rewrite: (m) => (bound(m, 'x').dtype === m.root.outputs[0]!.dtype ? bound(m, 'x') : null),
  },
  {
    // PyTorch's SDPA decomposition transposes K through [B·H, T, Dh] rows: Reshape, Transpose of the
    // last two axes, Reshape back to [B, H, Dh, T]. That is x's heads with the last two axes swapped.
    name: 'kᵀ through [B·H, T, Dh]',
    pattern: op('Reshape', [op('Transpose', [op('Reshape', [any('x')])])]),
    rewrite(m, _g, at) {
      const x = bound(m, 'x'), mid = m.nodes[2]!.outputs[0]!, tr = m.nodes[1]!, out = m.root.outputs[0]!;
      const [N, T, Dh] = mid.shape, [B, H, Dh2, T2] = out.shape;
      if (mid.shape.length !== 3 || out.shape.length !== 4 || !permIs(tr, [0, 2, 1])) return null;
      if (![N, T, Dh, B, H].every(isStatic) || Dh2 !== Dh || T2 !== T || (B as number) * (H as number) !== N) return null;
      // x may be [B, H, T, Dh] or more axes of the same rows (grouped-query heads [B, Hkv, r, T, Dh]).
      const xs = x.shape;
      if (xs.length < 3 || xs[xs.length - 1] !== Dh || xs[xs.length - 2] !== T || !xs.every(isStatic)) return null;
      const heads = xs.length === 4 && xs[0] === B && xs[1] === H ? x : at.value('Reshape', [x], { shape: [B as number, H as number, T as number, Dh as number] }, { dtype: x.dtype, shape: [B, H, T, Dh] });
      return at.value('Transpose', [heads], { perm: [0, 1, 3, 2] }, { dtype: x.dtype, shape: out.shape });
    },
  },
  {
    // The scale split as √scale on q and on k (PyTorch's SDPA decomposition), or on one of them:
    // taken out of the product onto the scores, where the attention row reads it.
    name: 'scale out of the scores product',
    pattern: op('MatMul', [any('a'), any('b')], {
      test: (v, m) => feedsSoftmax(v, 4) && [bound(m, 'a'), bound(m, 'b')].some((x) => x.producer?.op === 'Mul' && x.users.length === 1),
    }),
    rewrite(m, g, at) {
      let factor = 1;
      const side = (x: Value): Value => {
        const n = producedBy(x, 'Mul');
        if (!n || soleUser(g, x) !== m.root) return x;
        const [p, q] = n.inputs;
        const c = p?.kind === 'const' && p.data?.data.length === 1 ? p : q?.kind === 'const' && q.data?.data.length === 1 ? q : null;
        const rest = c === p ? q : p;
        if (!c || !rest || !shapesEqual(rest.shape, x.shape) || rest.dtype !== x.dtype) return x;
        factor *= c.data!.data[0]!;
        return rest;
      };
      const a = side(bound(m, 'a')), b = side(bound(m, 'b'));
      if (a === bound(m, 'a') && b === bound(m, 'b')) return null;
      const out = m.root.outputs[0]!;
      const prod = at.value('MatMul', [a, b], {}, { dtype: out.dtype, shape: out.shape });
      const s = g.addConst(g.uniqueName(`${out.name}__scale`), tensor(out.dtype, [], [factor]));
      return at.value('Mul', [prod, s], {}, { dtype: out.dtype, shape: out.shape });
    },
  },
];

// --- the attention row ------------------------------------------------------------------------

/** Where a fused input comes from: [B, T, D] rows a head split read (its nodes go), or head-major values to copy. */
type Operand = { rows: Value; drop: Node[] } | { heads: Value; drop: Node[] };

/** x = Transpose(Reshape(rows [B, T, D] → [B, T, H, Dh]), perm), read only by `reader`. */
function headSplit(g: Graph, x: Value, perm: readonly number[], reader: Node): Operand | null {
  const t = producedBy(x, 'Transpose');
  if (!t || soleUser(g, x) !== reader || !permIs(t, perm)) return null;
  const r = producedBy(t.inputs[0], 'Reshape');
  if (!r || soleUser(g, r.outputs[0]) !== t) return null;
  const base = r.inputs[0]!, split = r.outputs[0]!.shape;
  const [B, T, D] = base.shape;
  if (base.shape.length !== 3 || split.length !== 4 || split[0] !== B || split[1] !== T || !isStatic(D) || !isStatic(split[2]) || !isStatic(split[3]) || split[2] * split[3] !== D) return null;
  return { rows: base, drop: [t, r] };
}

/** The head merge after attention, read only by each other: y [B, H, T, Dh] transposed [0, 2, 1, 3] and reshaped to `rows` [B, T, H·Dh]. */
function headMerge(g: Graph, y: Value, rows: readonly Dim[]): [Node, Node] | null {
  const t = soleUser(g, y);
  if (t?.op !== 'Transpose' || !permIs(t, [0, 2, 1, 3])) return null;
  const r = soleUser(g, t.outputs[0]);
  return r?.op === 'Reshape' && shapesEqual(r.outputs[0]!.shape, rows) ? [t, r] : null;
}

/** Is `v` K/V heads repeated for grouped-query attention (Unsqueeze, Expand, Reshape)? */
const isRepeatedHeads = (v: Value): boolean => {
  const r = producedBy(v, 'Reshape'), e = producedBy(r?.inputs[0], 'Expand');
  return !!e && !!producedBy(e.inputs[0], 'Unsqueeze');
};

/**
 * The K/V heads [B, Hkv, T, Dh] that `v` [B, Hkv·r, T, Dh] repeats r times each (HF's repeat_kv:
 * Unsqueeze at axis 2, Expand to [B, Hkv, r, T, Dh], Reshape), and the Unsqueeze reading them; or
 * null. The fused kernel reads such heads shared instead of their copies.
 */
function sharedHeads(g: Graph, v: Value): { src: Value; reader: Node; Hkv: number } | null {
  const r = producedBy(v, 'Reshape'), e = producedBy(r?.inputs[0], 'Expand'), u = producedBy(e?.inputs[0], 'Unsqueeze');
  if (!r || !e || !u || soleUser(g, u.outputs[0]) !== e || soleUser(g, e.outputs[0]) !== r) return null;
  const axes = u.attrs['axes'] as readonly number[] | undefined;
  const src = u.inputs[0]!, [B, Hkv, T, Dh] = src.shape, [B2, H, T2, Dh2] = v.shape, ex = e.outputs[0]!.shape;
  if (!axes || axes.length !== 1 || axes[0] !== 2 || src.shape.length !== 4 || v.shape.length !== 4 || ex.length !== 5) return null;
  if (!isStatic(Hkv) || !isStatic(H) || H % Hkv || B2 !== B || T2 !== T || Dh2 !== Dh) return null;
  if (ex[0] !== B || ex[1] !== Hkv || ex[2] !== H / Hkv || ex[3] !== T || ex[4] !== Dh) return null;
  return { src, reader: u, Hkv };
}

/** No mask, or causal (with a sliding window of `window` keys where one is given). */
type MaskKind = { kind: 'none' } | { kind: 'causal'; window?: number };

/** What a keep-pattern [.., Tq, Tk] is: the same for every leading index, and all-keep, causal, or a causal sliding window. */
function classifyKeep(keep: (i: number) => boolean, shape: readonly number[], Tq: number, Tk: number): MaskKind | string {
  const r = shape.length;
  if (r < 2 || shape[r - 1] !== Tk || (shape[r - 2] !== Tq && shape[r - 2] !== 1)) return `a mask of shape [${shape}] for scores of [${Tq}, ${Tk}]`;
  const rows = shape[r - 2]!, per = rows * Tk, slices = shape.slice(0, -2).reduce((a, b) => a * b, 1);
  for (let s = 1; s < slices; s++) for (let i = 0; i < per; i++) if (keep(s * per + i) !== keep(i)) return 'a mask that differs between batch entries or heads (a key-padding mask?): not fused yet';
  let all = true, causal = rows === Tq, window = Infinity, rowEmpty = false;
  for (let i = 0; i < rows; i++) {
    let any = false;
    for (let j = 0; j < Tk; j++) {
      const k = keep(i * Tk + j);
      if (!k) all = false;
      any ||= k;
      if (k !== (j <= i)) causal = false;
    }
    rowEmpty ||= !any;
  }
  if (all) return { kind: 'none' };
  if (causal) return { kind: 'causal' };
  if (rowEmpty) return 'a mask that hides every key of some query';
  // A band below the diagonal, keys i − w < j ≤ i: its width w from the first row that drops a key,
  // then every row checked against it (a band that narrows or widens is no window).
  let band = rows === Tq && Tq === Tk;
  for (let i = 0; i < rows && band; i++) {
    let first = -1;
    for (let j = 0; j < Tk; j++) if (keep(i * Tk + j)) { first = j; break; }
    if (first > 0 && window === Infinity) window = i - first + 1;
    for (let j = 0; j < Tk; j++) if (keep(i * Tk + j) !== (j >= first && j <= i)) band = false;
  }
  if (band && window !== Infinity) {
    for (let i = 0; i < rows && band; i++) for (let j = 0; j < Tk; j++) if (keep(i * Tk + j) !== (j <= i && j > i - window)) band = false;
    if (band) return { kind: 'causal', window };
  }
  return 'a mask that is neither causal nor a sliding window';
}

function whyNotConstant(v: Value, what: string): string {
  // The graph inputs it is computed from (a mask made from `attention_mask`, say), else the parameters.
  const ins = [...valuesBehind(v, 'input')].map((x) => x.name);
  if (ins.length) return `the ${what} is computed from the model input${ins.length > 1 ? 's' : ''} ${ins.map((n) => `'${n}'`).join(', ')} (a key-padding mask?): not fused yet`;
  if (v.kind === 'param') return `the ${what} '${v.name}' is a trained parameter (a learned bias): not fused yet (the fused kernel takes no bias)`;
  const ps = [...valuesBehind(v, 'param')].map((x) => x.name);
  if (ps.length) return `the ${what} is computed from the parameter${ps.length > 1 ? 's' : ''} ${ps.slice(0, 2).map((n) => `'${n}'`).join(', ')} (a relative position bias): not fused yet (the fused kernel takes no bias)`;
  return `the ${what} is not a constant`;
}

interface Found {
  q: Operand; k: Operand; v: Operand;
  H: number; Dh: number; scale: number; causal: boolean; repeated: boolean;
  /** What is added to the scores (T5's relative bias, ALiBi, an additive padding mask), times `biasScale`, the scale applied after it. */
  bias?: { value: Value; scale: number };
  /** Set by replace: the K/V heads the fused node reads shared (0: K/V as given, repeated or not). */
  sharedKv?: number;
  /** A causal sliding window of this many keys; 0: none. */
  window: number;
  /** Matched nodes, in graph order; the last one's output is what the fused result replaces. */
  nodes: Node[];
  /** The result [B, T, D] (a head merge followed) or [B, H, T, Dh]. */
  result: Value; merged: boolean;
  lead: Node;
}

/** The attention around one Softmax, or why it is not one the fused kernel runs. */
function analyse(g: Graph, sm: Node, consts: ConstEval): Found | string {
  const x0 = sm.inputs[0]!;
  if (x0.shape.length !== 4) return 'scores are not 4-D [batch, heads, queries, keys]';
  const axis = sm.attrs['axis'] as number;
  if (axis !== -1 && axis !== 3) return `softmax over axis ${axis}, not the keys`;
  const nodes: Node[] = [sm];

  // After the softmax: an upcast's cast back, a NaN guard (Where(IsNaN(p), 0, p)), then P·V.
  let p = sm.outputs[0]!;
  const guardIs = p.users.find((u) => u.op === 'IsNaN');
  if (guardIs && p.users.length === 2 && !g.outputs.includes(p)) {
    const w = soleUser(g, guardIs.outputs[0]);
    if (w?.op !== 'Where' || w.inputs[0] !== guardIs.outputs[0] || w.inputs[2] !== p || consts.scalar(w.inputs[1]) !== 0 || !p.users.includes(w)) return 'the softmax result is read by something besides P·V';
    nodes.push(guardIs, w);
    p = w.outputs[0]!;
  }
  let cast = soleUser(g, p);
  if (cast?.op === 'Cast') { nodes.push(cast); p = cast.outputs[0]!; }
  const mm2 = soleUser(g, p);
  if (mm2?.op !== 'MatMul' || mm2.inputs[0] !== p) return 'the softmax result is not multiplied by V alone';
  const v4 = mm2.inputs[1]!;
  nodes.push(mm2);

  // Before it: an upcast, then at most one scale and one mask, in either order.
  let x = x0, reader: Node = sm, scale = 1, maskedAt: number | null = null, mask: MaskKind = { kind: 'none' };
  let bias: Found['bias'];
  cast = producedBy(x, 'Cast');
  if (cast && soleUser(g, x) === sm) { nodes.push(cast); reader = cast; x = cast.inputs[0]!; }
  const T = x.shape[3], Tq = x.shape[2];
  if (!isStatic(T) || !isStatic(Tq)) return 'the number of queries or keys is not static';
  for (let step = 0; step < 4; step++) {
    const n = x.producer;
    if (!n || x.kind !== 'node' || soleUser(g, x) !== reader) break;
    const [a, b] = n.inputs;
    if ((n.op === 'Mul' || n.op === 'Div') && (consts.scalar(b) !== null || (n.op === 'Mul' && consts.scalar(a) !== null))) {
      const c = consts.scalar(b) !== null ? b : a;
      const s = consts.scalar(c)!, chain = c === b ? a! : b!;
      if (!(s > 0) || !Number.isFinite(s)) return `the scores are scaled by ${s}`;
      if (!shapesEqual(chain.shape, x.shape)) return 'the scale broadcasts the scores to another shape';
      const f = n.op === 'Mul' ? s : 1 / s;
      scale *= f;
      nodes.push(n);
      x = chain;
    } else if (n.op === 'Mul' || n.op === 'Div') {
      return whyNotConstant(n.op === 'Div' || consts.of(b) === null ? b! : a!, 'scale');
    } else if (n.op === 'Where' && maskedAt === null) {
      const [cond, wa, wb] = n.inputs;
      const ta = consts.scalar(wa), tb = consts.scalar(wb);
      // Where(keep, scores, −big) or Where(drop, −big, scores).
      const scoresFirst = tb !== null && ta === null;
      const chain = scoresFirst ? wa : tb === null && ta !== null ? wb : null;
      if (!chain) return 'a Where on the scores that is not a mask with a constant masked value';
      const m = consts.of(cond);
      if (!m || m.dtype !== 'bool') return whyNotConstant(cond!, 'mask');
      const kind = classifyKeep((i) => (m.data[i]! !== 0) === scoresFirst, m.shape, Tq, T);
      if (typeof kind === 'string') return kind;
      mask = kind;
      // Walking back from the softmax, `scale` is what the scores were scaled by after this mask:
      // the masked value is scaled by it too (and not by any scale applied before the mask).
      maskedAt = (scoresFirst ? tb! : ta!) * scale;
      nodes.push(n);
      x = chain;
    } else if (n.op === 'Add') {
      const ca = consts.of(a), cb = consts.of(b);
      const m = cb && !ca ? cb : ca && !cb ? ca : null;
      // Which side is the scores: the one a constant is not, else the one the product q·kᵀ (through a scale or cast) made.
      const chain = m ? (m === cb ? a! : b!) : scoresSide(a!, b!, n, consts);
      if (!chain) return 'an Add on the scores of two values neither of which is the scores product alone';
      if (!shapesEqual(chain.shape, x.shape)) return 'the added mask or bias broadcasts the scores to another shape';
      const other = chain === a ? b! : a!;
      // An all-zero mask (an attention_mask of ones, folded) adds nothing.
      if (m && m.data.every((d) => d === 0)) { nodes.push(n); x = chain; reader = n; continue; }
      const maskValued = !!m && m.dtype !== 'bool' && m.data.every((d) => d === 0 || d <= MASKED);
      if (!maskValued) {
        // A bias: added as it is, with the scale applied after it; a constant causal mask folded
        // into it (T5's decoder adds its mask to the position bias once for every layer) is taken out.
        if (bias) return 'two biases added to the scores';
        const peeled = peelMask(other, consts, Tq, T);
        if (peeled && maskedAt === null) {
          mask = peeled.kind;
          maskedAt = peeled.maskedAt * scale;
        }
        bias = { value: peeled?.rest ?? other, scale };
        nodes.push(n);
        x = chain;
        reader = n;
        continue;
      }
      if (maskedAt !== null) return 'two masks on the scores';
      let worst = -Infinity;
      for (const d of m!.data) if (d !== 0) worst = Math.max(worst, d);
      const kind = classifyKeep((i) => m!.data[i] === 0, m!.shape, Tq, T);
      if (typeof kind === 'string') return kind;
      mask = kind;
      maskedAt = (worst === -Infinity ? -Infinity : worst) * scale;
      nodes.push(n);
      x = chain;
    } else break;
    reader = n;
  }
  if (mask.kind !== 'none' && !(maskedAt! <= MASKED)) return `masked scores of ${maskedAt} are not far enough below the others to get zero weight`;

  const mm1 = producedBy(x, 'MatMul');
  if (!mm1 || soleUser(g, x) !== reader) return 'the scores are not a product q·kᵀ read only by the softmax';
  nodes.push(mm1);
  const [q4, kt4] = mm1.inputs as [Value, Value];
  if (q4.shape.length !== 4 || kt4.shape.length !== 4) return 'q and kᵀ are not 4-D [batch, heads, tokens, head size]';
  const [B, H, , Dh] = q4.shape;
  if (!isStatic(H) || !isStatic(Dh)) return 'the head count or head size is not static';

  const operand = (x4: Value, reader: Node): Operand => headSplit(g, x4, [0, 2, 1, 3], reader) ?? { heads: x4, drop: [] };
  // kᵀ: a head split transposed [0, 2, 3, 1], or k's heads with the last two axes swapped.
  let k: Operand | null = headSplit(g, kt4, [0, 2, 3, 1], mm1), k4: Value | null = null;
  if (!k) {
    const t = producedBy(kt4, 'Transpose');
    if (!t || !permIs(t, [0, 1, 3, 2]) || soleUser(g, kt4) !== mm1) return 'kᵀ is not a transpose of k';
    k4 = t.inputs[0]!;
    const o = operand(k4, t);
    k = { ...o, drop: [...o.drop, t] };
  }
  const q = operand(q4, mm1), v = operand(v4, mm2);
  const shapeOf = (o: Operand): readonly Dim[] => ('rows' in o ? [o.rows.shape[0]!, H, o.rows.shape[1]!, Dh] : o.heads.shape);
  const [qs, ks, vs] = [shapeOf(q), shapeOf(k), shapeOf(v)];
  // Self-attention, or cross-attention: k and v alike, with as many batch entries, heads and head dims as q.
  if (!shapesEqual(ks, vs) || qs[0] !== ks[0] || qs[1] !== ks[1] || qs[3] !== ks[3] || qs[2] !== Tq || ks[2] !== T) return `q, k and v heads do not fit one attention: [${qs}], [${ks}], [${vs}]`;
  if (mask.kind === 'causal' && Tq !== T) return `a causal mask on cross-attention (${Tq} queries, ${T} keys): not fused`;
  if (bias) {
    const why = biasProblem(bias.value, [B!, H, Tq, T]);
    if (why) return why;
  }
  const dt = q4.dtype;
  if (kt4.dtype !== dt || v4.dtype !== dt) return 'q, k and v differ in type';

  // After P·V: a head merge into [B, T, D] rows, or the result stays head-major.
  const merge = headMerge(g, mm2.outputs[0]!, [B!, Tq, H * Dh]);
  if (merge) nodes.push(...merge);
  const result = merge ? merge[1].outputs[0]! : mm2.outputs[0]!, merged = !!merge;
  const all = [...nodes, ...q.drop, ...k.drop, ...v.drop];
  all.sort((a, b) => g.nodes.indexOf(a) - g.nodes.indexOf(b));
  return {
    q, k, v, H, Dh, scale, causal: mask.kind === 'causal', window: mask.kind === 'causal' ? mask.window ?? 0 : 0, nodes: all, result, merged, lead: mm1,
    repeated: isRepeatedHeads(v4) || (k4 !== null && isRepeatedHeads(k4)), ...(bias ? { bias } : {}),
  };
}

/** Does `x` come from a product of 4-D values through only scales, casts and masks (each with one non-constant input on the way)? */
function reachesProduct(x: Value, consts: ConstEval): boolean {
  let v: Value | null | undefined = x;
  for (let step = 0; step < 6 && v?.kind === 'node'; step++) {
    const n: Node = v.producer!;
    if (n.op === 'MatMul') return n.inputs.every((i) => i?.shape.length === 4);
    if (!['Mul', 'Div', 'Cast', 'Where'].includes(n.op)) return false;
    const open = (n.op === 'Where' ? n.inputs.slice(1) : n.inputs).filter((i) => i && !consts.of(i));
    if (open.length !== 1) return false;
    v = open[0];
  }
  return false;
}

/** Of two non-constant values added on the way to a softmax, the scores: the one read only by the Add that comes from the q·kᵀ product. */
function scoresSide(a: Value, b: Value, add: Node, consts: ConstEval): Value | null {
  const isScores = (x: Value): boolean => x.users.length === 1 && x.users[0] === add && reachesProduct(x, consts);
  const [sa, sb] = [isScores(a), isScores(b)];
  return sa === sb ? null : sa ? a : b;
}

/** A bias that is x + a constant causal (or sliding-window) mask: x and the mask, else null. */
function peelMask(v: Value, consts: ConstEval, Tq: number, Tk: number): { rest: Value; kind: MaskKind; maskedAt: number } | null {
  const n = producedBy(v, 'Add');
  if (!n) return null;
  const [a, b] = n.inputs as [Value, Value];
  const ca = consts.of(a), cb = consts.of(b);
  const m = cb && !ca ? cb : ca && !cb ? ca : null;
  if (!m || m.dtype === 'bool' || !m.data.every((d) => d === 0 || d <= MASKED)) return null;
  const rest = m === cb ? a : b;
  // The sum's shape must be the rest's own (the mask broadcasts into it, not it into the mask), unless
  // the mask only adds batch or head axes the kernel broadcasts over anyway.
  const kind = classifyKeep((i) => m.data[i] === 0, m.shape, Tq, Tk);
  if (typeof kind === 'string' || kind.kind === 'none' || Tq !== Tk) return null;
  let worst = -Infinity;
  for (const d of m.data) if (d !== 0) worst = Math.max(worst, d);
  return { rest, kind, maskedAt: worst };
}

/** Why a value added to the scores [B, H, Tq, Tk] is not a bias the fused kernel takes, or null. */
function biasProblem(v: Value, scores: readonly Dim[]): string | null {
  const s = v.shape;
  if (s.length > 4) return `a bias of ${s.length} dims on 4-D scores`;
  if (v.dtype === 'bool' || !['float32', 'float16', 'bfloat16', 'float64'].includes(v.dtype)) return `a bias of type ${v.dtype} on the scores`;
  const pad = [...Array(4 - s.length).fill(1), ...s] as Dim[];
  for (let a = 0; a < 4; a++) {
    const d = pad[a]!;
    if (d !== 1 && d !== scores[a]) return `a bias of shape [${s}] that does not broadcast to the scores [${scores}]`;
  }
  return null;
}

/** Rows [B, T, H·Dh] of an operand: the head split's source, or a copy of the heads. */
function rowsOf(at: Emitter, o: Operand, H: number, Dh: number): Value {
  if ('rows' in o) return o.rows;
  const x = o.heads, [B, , T] = x.shape;
  const t = at.value('Transpose', [x], { perm: [0, 2, 1, 3] }, { dtype: x.dtype, shape: [B!, T!, H, Dh], name: `${x.name}__t` });
  return at.value('Reshape', [t], { shape: [0, 0, H * Dh] }, { dtype: x.dtype, shape: [B!, T!, H * Dh], name: `${x.name}__rows` });
}

/**
 * The bias as the fused kernel reads it, [B or 1, H or 1, Tq, Tk] of q's type: scaled by what the
 * scores were scaled by after it, cast, given leading axes, and expanded over queries or keys where
 * it broadcasts over them (a key-padding mask [B, 1, 1, Tk]).
 */
function biasInput(g: Graph, at: Emitter, v: Value, scale: number, dtype: Value['dtype'], scores: readonly [number, number, number, number]): Value {
  let x = v;
  if (scale !== 1) x = at.value('Mul', [x, g.addConst(g.uniqueName(`${v.name}__scale`), tensor(x.dtype, [], [scale]))], {}, { dtype: x.dtype, shape: x.shape });
  if (x.dtype !== dtype) x = at.value('Cast', [x], { to: dtypeToOnnx(dtype) }, { dtype, shape: x.shape });
  const s4 = [...Array(4 - x.shape.length).fill(1), ...x.shape] as number[];
  if (x.shape.length !== 4) x = at.value('Reshape', [x], { shape: s4 }, { dtype, shape: s4 });
  if (s4[2] !== scores[2] || s4[3] !== scores[3]) {
    const full = [s4[0]!, s4[1]!, scores[2], scores[3]];
    x = at.value('Expand', [x], { shape: full }, { dtype, shape: full });
  }
  return x;
}

/** Puts FusedAttention where the match's last node stood; the matched nodes and what only they read go. */
function replace(g: Graph, f: Found, scaleOverride?: number): void {
  const last = f.nodes[f.nodes.length - 1]!;
  const at = emitterBefore(g, last);
  const { scope, meta } = f.lead;
  // Grouped-query K/V: the heads before their repetition, read shared by the kernel (kv_heads).
  const sk = 'heads' in f.k ? sharedHeads(g, f.k.heads) : null, sv = 'heads' in f.v ? sharedHeads(g, f.v.heads) : null;
  const shared = sk && sv && sk.Hkv === sv.Hkv ? sk.Hkv : 0;
  const kvOperand = (x: { src: Value; reader: Node }): Operand => headSplit(g, x.src, [0, 2, 1, 3], x.reader) ?? { heads: x.src, drop: [] };
  const q = rowsOf(at, f.q, f.H, f.Dh);
  const [k, v] = shared ? [rowsOf(at, kvOperand(sk!), shared, f.Dh), rowsOf(at, kvOperand(sv!), shared, f.Dh)] : [rowsOf(at, f.k, f.H, f.Dh), rowsOf(at, f.v, f.H, f.Dh)];
  f.sharedKv = shared;
  const [B, T] = q.shape as [Dim, Dim];
  const name = f.result.name;
  const bias = f.bias ? biasInput(g, at, f.bias.value, f.bias.scale, q.dtype, [B as number, f.H, T as number, k.shape[1] as number]) : null;
  const fused = at.emit({
    op: 'FusedAttention', name: `${scope}FusedAttention`, scope, meta: { ...meta },
    inputs: bias ? [q, k, v, bias] : [q, k, v],
    attrs: { heads: f.H, scale: scaleOverride ?? f.scale, causal: f.causal ? 1 : 0, ...(f.window ? { window: f.window } : {}), ...(shared ? { kv_heads: shared } : {}) },
    outputs: [
      { name: g.uniqueName(`${name}__fused`), dtype: q.dtype, shape: q.shape },
      { name: g.uniqueName(`${scope}FusedAttention_lse`), dtype: lseDtype(q.dtype), shape: [B, f.H, T] },
    ],
  });
  let out = fused.outputs[0]!;
  if (!f.merged) {
    const r = at.value('Reshape', [out], { shape: [0, 0, f.H, f.Dh] }, { dtype: out.dtype, shape: [B, T, f.H, f.Dh], name: `${name}__rows` });
    out = at.value('Transpose', [r], { perm: [0, 2, 1, 3] }, { dtype: out.dtype, shape: f.result.shape, name: `${name}__heads` });
  }
  g.replaceAllUses(f.result, out);
  for (let i = f.nodes.length - 1; i >= 0; i--) dropUnread(g, f.nodes[i]!);
  if (!g.values.has(name)) g.renameValue(out, name);
}

/**
 * An ONNX Attention node as FusedAttention. 3-D inputs already have the fused layout. 4-D ones
 * [B, H, T, Dh] take their [B, T, D] sources where head splits made them (else heads are copied into
 * rows), and the output absorbs a following head merge (else it is split back into heads).
 */
function onnxFound(g: Graph, n: Node, consts: ConstEval): Found | 'packed' | string {
  const [q0, k0, v0, maskV] = n.inputs as [Value, Value, Value, Value | null | undefined];
  // attn_mask: a constant causal or all-keep mask folds into the fused node's causal flag.
  let causalMask = false, window = 0, bias: Value | null = null;
  const m = maskV ? consts.of(maskV) : null;
  // A float attn_mask that is not a constant of masked values alone is added to the scores: the fused node's bias.
  if (maskV && maskV.dtype !== 'bool' && (!m || m.data.some((d) => d !== 0 && !(d <= MASKED)))) bias = maskV;
  else if (maskV) {
    if (!m) return whyNotConstant(maskV, 'attn_mask');
    const T = q0.shape[q0.shape.length === 4 ? 2 : 1];
    if (!isStatic(T)) return 'the number of queries is not static';
    const kind = classifyKeep((i) => (m.dtype === 'bool' ? m.data[i] !== 0 : m.data[i] === 0), m.shape, T, T);
    if (typeof kind === 'string') return kind;
    causalMask = kind.kind === 'causal';
    window = kind.kind === 'causal' ? kind.window ?? 0 : 0;
  }
  if (q0.shape.length === 3) return causalMask || bias ? `a 3-D Attention with a ${bias ? 'float' : 'causal'} attn_mask: not fused yet` : 'packed';
  const [B, H, T, Dh] = q0.shape as [Dim, number, Dim, number];
  const biasWrong = bias ? biasProblem(bias, [B, H, T, T]) : null;
  if (biasWrong) return biasWrong;
  const nodes: Node[] = [n];
  const merge = headMerge(g, n.outputs[0]!, [B, T, H * Dh]);
  if (merge) nodes.push(...merge);
  const result = merge ? merge[1].outputs[0]! : n.outputs[0]!, merged = !!merge;
  const operand = (x: Value): Operand => headSplit(g, x, [0, 2, 1, 3], n) ?? { heads: x, drop: [] };
  const [q, k, v] = [operand(q0), operand(k0), operand(v0)];
  const all = [...nodes, ...q.drop, ...k.drop, ...v.drop].sort((a, b) => g.nodes.indexOf(a) - g.nodes.indexOf(b));
  const a = fusedAttrsOfOnnx(n.attrs, Dh, H);
  return {
    q, k, v, H, Dh, scale: a['scale'] as number, causal: a['causal'] === 1 || causalMask, window, nodes: all, result, merged, lead: n,
    repeated: isRepeatedHeads(k0) || isRepeatedHeads(v0), ...(bias ? { bias: { value: bias, scale: 1 } } : {}),
  };
}

/** What the attention rows did, and each Softmax they left with the reason. */
export interface AttentionReport {
  fused: number;
  rules: RuleCounts;
  unfused: { node: string; scope: string; reason: string }[];
}

function attentionRules(why: Map<Node, string>, repeated: { copied: number; shared: number }): Rule[] {
  const consts = new ConstEval();
  const count = (f: Found): void => {
    if (f.sharedKv) repeated.shared++;
    else if (f.repeated) repeated.copied++;
  };
  return [
    {
      name: 'attention',
      pattern: op('Softmax', [any('scores')]),
      rewrite(m, g) {
        const f = analyse(g, m.root, consts);
        if (typeof f === 'string') { why.set(m.root, f); return null; }
        replace(g, f);
        count(f);
        return true;
      },
    },
    {
      name: 'ONNX Attention',
      pattern: op('Attention', undefined, { test: (v) => v.producer!.inputs.filter(Boolean).length <= 4 && v.producer!.outputs.length === 1 }),
      rewrite(m, g, at) {
        const f = onnxFound(g, m.root, consts);
        if (typeof f === 'string' && f !== 'packed') { why.set(m.root, f); return null; }
        if (f !== 'packed') { replace(g, f); count(f); return true; }
        const n = m.root, [q, k, v] = n.inputs as [Value, Value, Value];
        const H = n.attrs['q_num_heads'] as number;
        const a = fusedAttrsOfOnnx(n.attrs, (q.shape[2] as number) / H, H);
        const [B, T] = q.shape as [Dim, Dim];
        const out = n.outputs[0]!;
        const fused = at.emit({
          op: 'FusedAttention', name: `${n.scope}FusedAttention`, inputs: [q, k, v], attrs: a,
          outputs: [{ name: g.uniqueName(`${out.name}__fused`), dtype: q.dtype, shape: q.shape }, { name: g.uniqueName(`${n.scope}FusedAttention_lse`), dtype: lseDtype(q.dtype), shape: [B, H, T] }],
        });
        return fused.outputs[0]!;
      },
    },
  ];
}

/**
 * Rewrites every attention the rows know into FusedAttention: the canonical rows first, then the
 * attention rows, each table to its fixed point. Run it before autodiff: the gradient of the fused
 * node is one FusedAttentionGrad.
 */
export function attentionFusion(g: Graph): AttentionReport {
  const rules = applyRules(g, CANONICAL);
  const why = new Map<Node, string>(), repeated = { copied: 0, shared: 0 };
  for (const [k, v] of applyRules(g, attentionRules(why, repeated))) rules.set(k, v);
  // Grouped-query K/V heads are read shared by the kernel; repeated ones it cannot trace are copied.
  if (repeated.shared) rules.set('grouped-query K/V heads read shared', repeated.shared);
  if (repeated.copied) rules.set('attention with repeated K/V heads (copied)', repeated.copied);
  g.removeDeadCode();
  const unfused = g.nodes.filter((n) => (n.op === 'Softmax' || n.op === 'Attention') && why.has(n)).map((n) => ({ node: n.name, scope: n.scope, reason: why.get(n)! }));
  const fused = (rules.get('attention') ?? 0) + (rules.get('ONNX Attention') ?? 0);
  return { fused, rules, unfused };
}

/** How many attentions `attentionFusion` fused. */
export const fuseAttention = (g: Graph): number => attentionFusion(g).fused;
