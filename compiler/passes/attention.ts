import type { Graph, Node, NodeSpec, Value } from '../../src/ir/graph.js';
import { type Dim, type Shape, shapesEqual } from '../../src/ir/shape.js';
import type { Tensor } from '../../src/ir/tensor.js';
import { fusedAttrsOfOnnx, lseDtype } from '../../src/ops/attention.js';
import { getOp } from '../../src/ops/index.js';

// Attention fusion: the decomposed attention of a transformer block becomes one FusedAttention node
// over the [B, T, D] q, k, v it started from, so the T × T scores, their softmax and the head
// transposes are neither computed as tensors nor stashed for the backward pass.
//
//   q ─Reshape[B,T,H,Dh]─Transpose[0,2,1,3]─┐
//   k ─Reshape[B,T,H,Dh]─Transpose[0,2,3,1]─MatMul─(Mul|Div scale)─(Where causal mask)─Softmax─┐
//   v ─Reshape[B,T,H,Dh]─Transpose[0,2,1,3]───────────────────────────────────────────────── MatMul
//        ─Transpose[0,2,1,3]─Reshape[B,T,D]  ⇒  FusedAttention(q, k, v)
//
// The scale and the mask may come in either order, or be absent; the mask is a constant (or
// constant-computed) bool matrix, lower-triangular where scores are kept, and the masked score a
// very negative constant. ONNX Attention nodes are rewritten the same way. A pattern is fused only
// when none of its intermediate values is read elsewhere or is a graph output.

/** Masked scores at or below this sit so far under real ones that their softmax weight underflows to 0 (exp(−1e4) is 0 even in float64). */
const MASKED = -1e4;

/** A value's single reader, when it is an intermediate nothing else reads. */
function soleUser(g: Graph, v: Value | null | undefined): Node | null {
  return v && v.users.length === 1 && !g.outputs.includes(v) ? v.users[0]! : null;
}

function producedBy(v: Value | null | undefined, op: string): Node | null {
  return v?.kind === 'node' && v.producer?.op === op ? v.producer : null;
}

const permIs = (n: Node, perm: readonly number[]): boolean => {
  const p = n.attrs['perm'] as readonly number[] | undefined;
  return !!p && p.length === perm.length && p.every((x, i) => x === perm[i]);
};

/**
 * Values computable from constants alone, by the registry's CPU kernels (the causal mask of a graph
 * built in code is Trilu and Cast of constants until folding runs). Memoized per value, failures too.
 */
class ConstEval {
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

/** Is `keep` (leading dims of size 1) the T × T lower triangle, diagonal included? */
function isCausalKeep(keep: Tensor, T: number): boolean {
  const s = keep.shape;
  if (s.length < 2 || s[s.length - 1] !== T || s[s.length - 2] !== T || s.slice(0, -2).some((d) => d !== 1)) return false;
  for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) if (!!keep.data[i * T + j] !== j <= i) return false;
  return true;
}

const allTrue = (t: Tensor): boolean => t.data.every((x) => x !== 0);

/** One head split: `base` [B, T, H·Dh] reshaped to [B, T, H, Dh] and transposed by `perm`. */
interface Heads { base: Value; H: number; Dh: number; nodes: Node[] }

function headSplit(g: Graph, v: Value | null | undefined, perm: readonly number[], reader: Node): Heads | null {
  const t = producedBy(v, 'Transpose');
  if (!t || soleUser(g, v) !== reader || !permIs(t, perm)) return null;
  const r = producedBy(t.inputs[0], 'Reshape');
  if (!r || soleUser(g, r.outputs[0]) !== t) return null;
  const base = r.inputs[0]!;
  const [B, T, D] = base.shape;
  const [B2, T2, H, Dh] = r.outputs[0]!.shape;
  if (base.shape.length !== 3 || r.outputs[0]!.shape.length !== 4 || B !== B2 || T !== T2) return null;
  if (typeof D !== 'number' || typeof H !== 'number' || typeof Dh !== 'number' || H * Dh !== D) return null;
  return { base, H, Dh, nodes: [t, r] };
}

/** The head merge after attention: [B, H, T, Dh] transposed to [B, T, H, Dh] and reshaped to `like`'s [B, T, D]. */
function headMerge(g: Graph, y: Value, like: Shape): Node[] | null {
  const t = soleUser(g, y);
  if (t?.op !== 'Transpose' || !permIs(t, [0, 2, 1, 3])) return null;
  const r = soleUser(g, t.outputs[0]);
  if (r?.op !== 'Reshape' || !shapesEqual(r.outputs[0]!.shape, like)) return null;
  return [t, r];
}

interface Match {
  q: Value; k: Value; v: Value;
  H: number; scale: number; causal: boolean;
  /** The pattern's nodes; the last one's output is what FusedAttention's output replaces. */
  nodes: Node[];
  /** The node whose meta and scope the fused node takes. */
  lead: Node;
  /** The result is [B, H, T, Dh] (an ONNX Attention on 4-D inputs with no head merge after it). */
  headsOut?: boolean;
}

/** The decomposed attention around one Softmax, or null where the graph differs anywhere. */
function matchDecomposed(g: Graph, softmax: Node, consts: ConstEval): Match | null {
  const p = softmax.outputs[0]!;
  const x0 = softmax.inputs[0];
  if (!x0 || x0.shape.length !== 4) return null;
  const axis = softmax.attrs['axis'] as number;
  if (axis !== -1 && axis !== 3) return null;
  const mm2 = soleUser(g, p);
  if (mm2?.op !== 'MatMul' || mm2.inputs[0] !== p) return null;
  const vh = headSplit(g, mm2.inputs[1], [0, 2, 1, 3], mm2);
  if (!vh) return null;
  const merge = headMerge(g, mm2.outputs[0]!, vh.base.shape);
  if (!merge) return null;

  // Between the scores and the softmax: at most one scale and one mask, in either order.
  let x: Value = x0, reader: Node = softmax, scale = 1, maskedAt: number | null = null, causal = false;
  const middle: Node[] = [];
  for (let step = 0; step < 2; step++) {
    const n = x.producer;
    if (!n || x.kind !== 'node' || soleUser(g, x) !== reader) return null;
    if ((n.op === 'Mul' || n.op === 'Div') && middle.every((m) => m.op !== 'Mul' && m.op !== 'Div')) {
      const [a, b] = n.inputs;
      const c = consts.scalar(b), ca = n.op === 'Mul' ? consts.scalar(a) : null;
      const chain = c !== null ? a : ca !== null ? b : null;
      const s = c ?? ca;
      if (!chain || s === null || !(s > 0) || !Number.isFinite(s) || !shapesEqual(chain.shape, x.shape)) return null;
      const factor = n.op === 'Mul' ? s : 1 / s;
      scale *= factor;
      // A mask applied before this scale has its masked value scaled too.
      if (maskedAt !== null) maskedAt *= factor;
      middle.unshift(n);
      x = chain;
    } else if (n.op === 'Where' && maskedAt === null) {
      const [cond, a, b] = n.inputs;
      const ta = consts.scalar(a), tb = consts.scalar(b);
      // Where(keep, scores, −big) or Where(drop, −big, scores).
      const scoresFirst = tb !== null && ta === null;
      const chain = scoresFirst ? a : tb === null && ta !== null ? b : null;
      const masked = scoresFirst ? tb : ta;
      const m = consts.of(cond);
      if (!chain || masked === null || !m || m.dtype !== 'bool' || !shapesEqual(chain.shape, x.shape)) return null;
      const T = x.shape[3];
      if (typeof T !== 'number' || x.shape[2] !== T) return null;
      const keep = scoresFirst ? m : { ...m, data: m.data.map((d) => (d ? 0 : 1)) };
      if (allTrue(keep)) causal = false;
      else if (isCausalKeep(keep, T)) causal = true;
      else return null;
      maskedAt = masked;
      middle.unshift(n);
      x = chain;
    } else break;
    reader = n;
  }
  if (causal && !(maskedAt! <= MASKED)) return null;

  const mm1 = producedBy(x, 'MatMul');
  if (!mm1 || soleUser(g, x) !== reader) return null;
  const qh = headSplit(g, mm1.inputs[0], [0, 2, 1, 3], mm1);
  const kh = headSplit(g, mm1.inputs[1], [0, 2, 3, 1], mm1);
  if (!qh || !kh) return null;
  const { base: q } = qh, { base: k } = kh, { base: v } = vh;
  const same = (a: Heads): boolean => a.H === vh.H && a.Dh === vh.Dh && a.base.dtype === v.dtype && shapesEqual(a.base.shape, v.shape);
  if (!same(qh) || !same(kh)) return null;
  return {
    q, k, v, H: vh.H, scale, causal, lead: mm1,
    nodes: [...qh.nodes.reverse(), ...kh.nodes.reverse(), mm1, ...middle, softmax, ...vh.nodes.reverse(), mm2, ...merge],
  };
}

/** Adds a node at `pos` of the node list (before what reads its outputs), keeping the order topological. */
function insertAt(g: Graph, pos: number, spec: NodeSpec): Node {
  const node = g.addNode(spec);
  // addNode appends; Graph has no insert, and replaceNode moves nodes the same way.
  g.nodes.splice(g.nodes.indexOf(node), 1);
  g.nodes.splice(pos, 0, node);
  return node;
}

/** Drops what only fed removed nodes: constants and constant-computing nodes (a shared mask, once its last reader goes). */
function dropIfUnused(g: Graph, v: Value | null): void {
  if (!v || v.users.length || g.outputs.includes(v)) return;
  if (v.kind === 'const') {
    // Graph has no removeValue; removeDeadCode forgets unread constants the same way.
    g.values.delete(v.name);
  } else if (v.kind === 'node' && v.producer && g.nodes.includes(v.producer) && v.producer.outputs.every((o) => !o.users.length && !g.outputs.includes(o))) {
    const n = v.producer;
    const ins = [...n.inputs];
    g.removeNode(n);
    for (const x of ins) dropIfUnused(g, x);
  }
}

/**
 * Puts one FusedAttention node in place of a match: it stands where the match's last node stood
 * (after its inputs, before its result's readers), its output takes the result's name, and the
 * matched nodes go with whatever only they read (scale and mask constants).
 */
function replaceWithFused(g: Graph, m: Match): void {
  const last = m.nodes[m.nodes.length - 1]!;
  const result = last.outputs[0]!;
  const name = result.name;
  const { scope, meta } = m.lead;
  const [B, T, D] = m.q.shape as [Dim, Dim, number];
  let pos = g.nodes.indexOf(last);
  const fused = insertAt(g, pos++, {
    op: 'FusedAttention', name: `${scope}FusedAttention`, scope, meta: { ...meta },
    inputs: [m.q, m.k, m.v],
    attrs: { heads: m.H, scale: m.scale, causal: m.causal ? 1 : 0 },
    outputs: [
      { name: g.uniqueName(`${name}__fused`), dtype: m.q.dtype, shape: m.q.shape },
      { name: g.uniqueName(`${scope}FusedAttention_lse`), dtype: lseDtype(m.q.dtype), shape: [B, m.H, T] },
    ],
  });
  let out = fused.outputs[0]!;
  if (m.headsOut) {
    // The result was [B, H, T, Dh]: split the fused rows back into heads for its readers.
    const Dh = D / m.H;
    const r = insertAt(g, pos++, {
      op: 'Reshape', name: `${scope}Reshape`, scope, meta: { ...meta }, inputs: [out], attrs: { shape: [0, 0, m.H, Dh] },
      outputs: [{ name: g.uniqueName(`${name}__rows`), dtype: out.dtype, shape: [B, T, m.H, Dh] }],
    });
    const t = insertAt(g, pos++, {
      op: 'Transpose', name: `${scope}Transpose`, scope, meta: { ...meta }, inputs: [r.outputs[0]!], attrs: { perm: [0, 2, 1, 3] },
      outputs: [{ name: g.uniqueName(`${name}__heads`), dtype: out.dtype, shape: result.shape }],
    });
    out = t.outputs[0]!;
  }
  g.replaceAllUses(result, out);
  const inputs = new Set<Value>();
  for (const n of m.nodes) for (const x of n.inputs) if (x) inputs.add(x);
  for (let i = m.nodes.length - 1; i >= 0; i--) g.removeNode(m.nodes[i]!);
  for (const x of inputs) dropIfUnused(g, x);
  g.renameValue(out, name);
}

/**
 * An ONNX Attention node as FusedAttention. 3-D inputs already have the fused layout. 4-D ones
 * [B, H, T, Dh] take their [B, T, D] sources where head splits made them (else heads are moved into
 * rows by a Transpose and Reshape inserted before), and the output absorbs a following head merge
 * (else it is split back into heads).
 */
function matchOnnx(g: Graph, n: Node): Match {
  const [q0, k0, v0] = n.inputs as [Value, Value, Value];
  if (q0.shape.length === 3) {
    const H = n.attrs['q_num_heads'] as number;
    const a = fusedAttrsOfOnnx(n.attrs, (q0.shape[2] as number) / H, H);
    return { q: q0, k: k0, v: v0, H, scale: a['scale'] as number, causal: a['causal'] === 1, nodes: [n], lead: n };
  }
  const [B, H, T, Dh] = q0.shape as [Dim, number, Dim, number];
  const a = fusedAttrsOfOnnx(n.attrs, Dh, H);
  const nodes: Node[] = [];
  const rows = (x: Value): Value => {
    const hs = headSplit(g, x, [0, 2, 1, 3], n);
    if (hs && hs.H === H && hs.Dh === Dh) {
      nodes.push(...hs.nodes.reverse());
      return hs.base;
    }
    const pos = g.nodes.indexOf(n);
    const t = insertAt(g, pos, {
      op: 'Transpose', name: `${n.scope}Transpose`, scope: n.scope, meta: { ...n.meta }, inputs: [x], attrs: { perm: [0, 2, 1, 3] },
      outputs: [{ name: g.uniqueName(`${x.name}__t`), dtype: x.dtype, shape: [B, T, H, Dh] }],
    });
    const r = insertAt(g, pos + 1, {
      op: 'Reshape', name: `${n.scope}Reshape`, scope: n.scope, meta: { ...n.meta }, inputs: [t.outputs[0]!], attrs: { shape: [0, 0, H * Dh] },
      outputs: [{ name: g.uniqueName(`${x.name}__rows`), dtype: x.dtype, shape: [B, T, H * Dh] }],
    });
    return r.outputs[0]!;
  };
  const [q, k, v] = [rows(q0), rows(k0), rows(v0)];
  nodes.push(n);
  const merge = headMerge(g, n.outputs[0]!, q.shape);
  if (merge) nodes.push(...merge);
  return { q, k, v, H, scale: a['scale'] as number, causal: a['causal'] === 1, nodes, lead: n, headsOut: !merge };
}

/**
 * Fuses every causal (or unmasked) attention of the decomposed form, and every ONNX Attention node,
 * into FusedAttention. Returns how many were fused. Run it before autodiff: the gradient of the
 * fused node is one FusedAttentionGrad.
 */
export function fuseAttention(g: Graph): number {
  const consts = new ConstEval();
  let fused = 0;
  for (const n of [...g.nodes]) {
    if (!g.nodes.includes(n)) continue;
    const m = n.op === 'Softmax' ? matchDecomposed(g, n, consts) : n.op === 'Attention' ? matchOnnx(g, n) : null;
    if (!m) continue;
    replaceWithFused(g, m);
    fused++;
  }
  return fused;
}
