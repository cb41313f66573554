// Scaled dot-product attention as single ops. FusedAttention and its gradient are cleave's own
// (domain 'cleave'): compiler/passes/attention.ts rewrites the decomposed pattern (MatMul, scale,
// causal Where, Softmax, MatMul between head reshapes) into FusedAttention, so neither pass keeps a
// T × T matrix alive between forward and backward, only the softmax's log-sum-exp per row. ONNX's
// own Attention (opset 23) is here too, for the subset that maps onto the same kernels.
import { CleaveError } from '../errors.js';
import type { DType } from '../ir/dtype.js';
import type { Attrs, Value, ValueType } from '../ir/graph.js';
import { type Dim, type Shape, formatShape } from '../ir/shape.js';
import { type Tensor, roundToDtype, tensor } from '../ir/tensor.js';
import { type AttrSpec, type Cost, type GradRule, type OpContext, type OpDef, flagAttr } from './registry.js';
import { sumTo } from './gradients.js';
import { input, int, moved, requireDim, requireFloat, requireRank, sameDtype } from './util.js';

const at = (ctx: OpContext): string => `node '${ctx.node}'`;
const num = (d: Dim | undefined): number => (typeof d === 'number' ? d : 1);

/**
 * The log-sum-exp stays float32 whatever the compute dtype (bf16 would lose the row's scale), and
 * becomes float64 only in float64 graphs, where gradient checks want every value exact.
 */
export const lseDtype = (d: DType): DType => (d === 'float64' ? 'float64' : 'float32');

/** The scale a node applies to q·k: its `scale` attribute, else 1/√Dh as ONNX defines. */
const scaleOf = (attrs: Attrs, dh: number): number => (attrs['scale'] as number | undefined) ?? 1 / Math.sqrt(dh);

// --- reference kernels ------------------------------------------------------------------------

/** Where element (b, h, t, 0) of q, k, v and the output lies: [B, T, H·Dh] and [B, H, T, Dh] both fit. */
interface Layout { B: number; H: number; T: number; Dh: number; sB: number; sH: number; sT: number }

/** Heads side by side in each row: [B, T, H·Dh]. */
const packed = (B: number, T: number, H: number, Dh: number): Layout => ({ B, H, T, Dh, sB: T * H * Dh, sH: Dh, sT: H * Dh });
/** Heads as their own axis: [B, H, T, Dh]. */
const headMajor = (B: number, H: number, T: number, Dh: number): Layout => ({ B, H, T, Dh, sB: H * T * Dh, sH: T * Dh, sT: Dh });

/** The first key query i sees: under a causal sliding window of `window` keys, i − window + 1. */
const firstKey = (i: number, window: number): number => (window > 0 ? Math.max(0, i - window + 1) : 0);

/**
 * Softmax(scale · q kᵀ, masked above the diagonal when causal, and below the last `window` keys
 * when a window is given) · v per batch and head, in float64.
 * The masked scores are left out rather than set to a large negative number: both give exactly
 * zero weight, and no row is ever fully masked (the diagonal stays).
 */
function attentionForward(q: Tensor, k: Tensor, v: Tensor, L: Layout, scale: number, causal: boolean, mask?: Mask, window = 0, Lk: Layout = L): { out: Float64Array; lse: Float64Array } {
  const { B, H, T, Dh, sB, sH, sT } = L, G = H / Lk.H, Tk = Lk.T;
  const out = new Float64Array(q.data.length), lse = new Float64Array(B * H * T);
  const s = new Float64Array(Tk), acc = new Float64Array(Dh);
  const qd = q.data, kd = k.data, vd = v.data;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = b * sB + h * sH, kbase = b * Lk.sB + Math.floor(h / G) * Lk.sH;
      for (let i = 0; i < T; i++) {
        const n = causal ? i + 1 : Tk, j0 = firstKey(i, window);
        const qi = base + i * sT;
        let mx = -Infinity;
        for (let j = j0; j < n; j++) {
          const kj = kbase + j * Lk.sT;
          let dot = 0;
          for (let d = 0; d < Dh; d++) dot += qd[qi + d]! * kd[kj + d]!;
          s[j] = scale * dot + (mask ? mask(b, h, i, j) : 0);
          if (s[j]! > mx) mx = s[j]!;
        }
        // A bias or mask of −∞ on every key leaves the row without weights: zeros, as the kernels give.
        if (mx === -Infinity) { lse[(b * H + h) * T + i] = -Infinity; out.fill(0, qi, qi + Dh); continue; }
        let sum = 0;
        for (let j = j0; j < n; j++) sum += Math.exp(s[j]! - mx);
        lse[(b * H + h) * T + i] = mx + Math.log(sum);
        acc.fill(0);
        for (let j = j0; j < n; j++) {
          // exp(z)/sum, as the Softmax kernel divides: the fused result matches the unfused graph.
          const p = Math.exp(s[j]! - mx) / sum;
          const vj = kbase + j * Lk.sT;
          for (let d = 0; d < Dh; d++) acc[d]! += p * vd[vj + d]!;
        }
        out.set(acc, qi);
      }
    }
  }
  return { out, lse };
}

/**
 * The exact gradient with P recomputed from lse: dV = Pᵀ dO, dS = P ∘ (dO vᵀ − δ), dQ = scale · dS k,
 * dK = scale · dSᵀ q, where δ per row is rowsum(P ∘ dO vᵀ), taken as dO · O (equal when out and lse
 * come from the forward). That is how a flash-attention backward gets δ without a T × T pass, and
 * this kernel is the definition device kernels are checked against, on any inputs.
 */
function attentionBackward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, L: Layout, scale: number, causal: boolean, window = 0, Lk: Layout = L, bias?: Mask): { dq: Float64Array; dk: Float64Array; dv: Float64Array; dscores: Float64Array | null } {
  const { B, H, T, Dh, sB, sH, sT } = L, G = H / Lk.H, Tk = Lk.T;
  // A key/value head read by G query heads gets the sum of their gradients.
  const dq = new Float64Array(q.data.length), dk = new Float64Array(k.data.length), dv = new Float64Array(v.data.length);
  // With a bias, the gradient of the scores themselves ([B, H, Tq, Tk]): the bias's, before any sum over broadcast axes.
  const dscores = bias ? new Float64Array(B * H * T * Tk) : null;
  const p = new Float64Array(Tk), dp = new Float64Array(Tk);
  const qd = q.data, kd = k.data, vd = v.data, gd = dout.data, od = out.data;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = b * sB + h * sH, kbase = b * Lk.sB + Math.floor(h / G) * Lk.sH;
      for (let i = 0; i < T; i++) {
        const n = causal ? i + 1 : Tk, j0 = firstKey(i, window);
        const qi = base + i * sT;
        const l = lse.data[(b * H + h) * T + i]!;
        if (l === -Infinity) continue;
        let rowDot = 0;
        for (let d = 0; d < Dh; d++) rowDot += gd[qi + d]! * od[qi + d]!;
        for (let j = j0; j < n; j++) {
          const kj = kbase + j * Lk.sT;
          let dot = 0, dpj = 0;
          for (let d = 0; d < Dh; d++) {
            dot += qd[qi + d]! * kd[kj + d]!;
            dpj += gd[qi + d]! * vd[kj + d]!;
          }
          p[j] = Math.exp(scale * dot + (bias ? bias(b, h, i, j) : 0) - l);
          dp[j] = dpj;
        }
        for (let j = j0; j < n; j++) {
          const kj = kbase + j * Lk.sT;
          const dsRaw = p[j]! * (dp[j]! - rowDot), ds = scale * dsRaw;
          if (dscores) dscores[((b * H + h) * T + i) * Tk + j] = dsRaw;
          for (let d = 0; d < Dh; d++) {
            dv[kj + d]! += p[j]! * gd[qi + d]!;
            dq[qi + d]! += ds * kd[kj + d]!;
            dk[kj + d]! += ds * qd[qi + d]!;
          }
        }
      }
    }
  }
  return { dq, dk, dv, dscores };
}

const asTensor = (like: Tensor, data: Float64Array): Tensor => roundToDtype(tensor(like.dtype, like.shape, data));

/** What an attention mask adds to score (b, h, i, j): 0 or −∞ for a bool mask (true keeps), the value for a float one. */
type Mask = (b: number, h: number, i: number, j: number) => number;

/** ONNX Attention's attn_mask, broadcast to [B, H, T, T] from its trailing dims. */
function maskOf(m: Tensor): Mask {
  const s = [...Array(4 - m.shape.length).fill(1), ...m.shape] as number[];
  const st = [s[1]! * s[2]! * s[3]!, s[2]! * s[3]!, s[3]!, 1];
  const at = (b: number, h: number, i: number, j: number): number => (s[0] === 1 ? 0 : b * st[0]!) + (s[1] === 1 ? 0 : h * st[1]!) + (s[2] === 1 ? 0 : i * st[2]!) + (s[3] === 1 ? 0 : j);
  return m.dtype === 'bool' ? (b, h, i, j) => (m.data[at(b, h, i, j)] ? 0 : -Infinity) : (b, h, i, j) => m.data[at(b, h, i, j)]!;
}

// --- FusedAttention and its gradient ------------------------------------------------------------

const fusedAttrs: Record<string, AttrSpec> = {
  heads: { type: 'int' },
  scale: { type: 'float', optional: true },
  causal: { type: 'int', default: 0 },
  // A causal sliding window (Mistral's): each query sees its last `window` keys; 0 is none.
  window: { type: 'int', default: 0 },
  // Grouped-query attention: k and v hold kv_heads heads, each read by heads / kv_heads query heads; 0 is heads.
  kv_heads: { type: 'int', default: 0 },
};

/** heads and causal in the words the shape check uses (a row size of 0 heads would loop without end). */
function checkFusedAttrs(attrs: Attrs): string | undefined {
  const H = attrs['heads'] as number;
  if (!(H >= 1)) return `heads ${H} does not divide the row size of q (heads must be a positive integer)`;
  const causal = attrs['causal'] ?? 0;
  if (causal !== 0 && causal !== 1) return `causal must be 0 or 1, got ${String(causal)}`;
  const kv = attrs['kv_heads'] ?? 0;
  if (!Number.isInteger(kv) || (kv as number) < 0 || ((kv as number) > 0 && H % (kv as number))) return `kv_heads ${String(kv)} must divide heads ${H} (0: as many as heads)`;
  return windowProblem(attrs['window'] ?? 0, causal);
}

function windowProblem(window: unknown, causal: unknown): string | undefined {
  if (!Number.isInteger(window) || (window as number) < 0) return `window must be a whole number of keys (0: none), got ${String(window)}`;
  if ((window as number) > 0 && causal !== 1) return `a sliding window (${String(window)} keys) needs causal = 1`;
  return undefined;
}

interface Geometry { dtype: DType; shape: Shape; kvShape: Shape; B: Dim; T: Dim; Tk: Dim; D: number; H: number; Hkv: number; Dh: number; bias: boolean }

/**
 * Checks that inputs `qIdx` are [B, Tq, H·Dh] and inputs `kvIdx` [B, Tk, Hkv·Dh] (Hkv = kv_heads, or
 * H; Tk = Tq unless cross-attention), all of one float type, the bias at `biasIdx` where one is
 * given, and the attributes; names the node.
 */
function packedGeometry(ctx: OpContext, qIdx: readonly number[], kvIdx: readonly number[], names: readonly string[], biasIdx: number): Geometry {
  const idx = [...qIdx, ...kvIdx];
  idx.forEach((i) => requireRank(ctx, i, [3]));
  const dtype = sameDtype(ctx, idx);
  requireFloat(ctx, dtype);
  const shape = input(ctx, qIdx[0]!).shape;
  const D = shape[2]!;
  if (typeof D !== 'number') throw new CleaveError(`${at(ctx)}: the row size of ${names[0]} ${formatShape(shape)} must be static`);
  const H = int(ctx.attrs, 'heads');
  if (!Number.isInteger(H) || H < 1 || D % H) throw new CleaveError(`${at(ctx)}: heads ${H} does not divide the row size ${D} of ${names[0]} ${formatShape(shape)}`);
  const kv = int(ctx.attrs, 'kv_heads') ?? 0;
  if (!Number.isInteger(kv) || kv < 0 || (kv > 0 && H % kv)) throw new CleaveError(`${at(ctx)}: kv_heads ${kv} must divide heads ${H} (0: as many as heads)`);
  const Hkv = kv || H, kvShape: Shape = [shape[0]!, input(ctx, kvIdx[0]!).shape[1]!, Hkv * (D / H)];
  // q-like inputs are q's shape; k is [B, Tk, Hkv·Dh] for its own Tk (cross-attention), and v is k's shape.
  idx.forEach((i, j) => {
    if (j === 0) return;
    const s = input(ctx, i).shape, want = j < qIdx.length ? shape : kvShape;
    const ref = j > qIdx.length ? names[qIdx.length] : names[0];
    s.forEach((d, a) => requireDim(ctx, `shapes of ${ref} and ${names[j]}`, want[a]!, d, want, s));
  });
  const causal = int(ctx.attrs, 'causal');
  if (causal !== 0 && causal !== 1) throw new CleaveError(`${at(ctx)}: causal must be 0 or 1, got ${causal}`);
  const [B, T] = shape as [Dim, Dim], Tk = kvShape[1]!;
  if (causal && Tk !== T) throw new CleaveError(`${at(ctx)}: causal attention needs as many keys as queries; k ${formatShape(input(ctx, kvIdx[0]!).shape)} has ${String(Tk)} for ${String(T)} queries`);
  const bias = !!ctx.inputs[biasIdx];
  if (bias) checkBias(ctx, biasIdx, dtype, [B, H, T, Tk]);
  const windowWrong = windowProblem(ctx.attrs['window'] ?? 0, causal);
  if (windowWrong) throw new CleaveError(`${at(ctx)}: ${windowWrong}`);
  const scale = ctx.attrs['scale'];
  if (scale !== undefined && !Number.isFinite(scale as number)) throw new CleaveError(`${at(ctx)}: scale must be a finite number, got ${String(scale)}`);
  return { dtype, shape, kvShape, B, T, Tk, D, H, Hkv, Dh: D / H, bias };
}

/**
 * The additive bias on the scores (T5's relative position bias, ALiBi): [Bb, Hb, Tq, Tk] of q's type,
 * Bb 1 or the batch, Hb 1 or the heads: broadcast over batch or heads, never over queries or keys.
 */
function checkBias(ctx: OpContext, i: number, dtype: DType, want: readonly Dim[]): void {
  const t = input(ctx, i);
  const wrong = (): CleaveError => new CleaveError(`${at(ctx)}: the bias ${t.dtype}${formatShape(t.shape)} must be ${dtype}[batch or 1, heads or 1, ${String(want[2])}, ${String(want[3])}] for scores of ${formatShape(want)}`);
  if (t.dtype !== dtype || t.shape.length !== 4) throw wrong();
  t.shape.forEach((d, a) => {
    if (d === want[a] || (a < 2 && d === 1)) return;
    if (typeof d === 'number' && typeof want[a] === 'number') throw wrong();
  });
}

/** Element strides of a contiguous bias [Bb, Hb, Tq, Tk] over batch and heads: 0 where it broadcasts. */
export function biasStrides(shape: readonly number[]): { bB: number; bH: number } {
  const [Bb, Hb, Tq, Tk] = shape as [number, number, number, number];
  return { bB: Bb === 1 ? 0 : Hb * Tq * Tk, bH: Hb === 1 ? 0 : Tq * Tk };
}

/** The share of the T × T scores computed: all, the lower triangle when causal, a band under a window. */
function scoreShare(T: number, attrs: Attrs): number {
  const w = int(attrs, 'window') ?? 0;
  if (!int(attrs, 'causal')) return 1;
  if (!(w > 0) || w >= T) return 0.5;
  // Σᵢ min(i + 1, w) keys over T² scores.
  return (w * (w + 1) / 2 + (T - w) * w) / (T * T);
}

/** FLOPs of the two T × T products of attention (forward: q kᵀ and P v), over the scores computed. */
const attentionFlops = (g: Geometry, attrs: Attrs, products: number): number =>
  2 * products * num(g.B) * num(g.T) * num(g.Tk) * g.D * scoreShare(num(g.T), attrs);

const layoutOf = (x: Tensor, heads: number): Layout => packed(x.shape[0]!, x.shape[1]!, heads, x.shape[2]! / heads);

/** The key/value heads of a fused attention: kv_heads, or as many as the query heads. */
const kvHeads = (attrs: Attrs): number => (int(attrs, 'kv_heads') || int(attrs, 'heads'));

const fusedAttention: OpDef = {
  // Inputs q, k, v and an optional bias added to the scale · q kᵀ scores (see checkBias).
  op: 'FusedAttention', since: 13, domain: 'cleave', category: 'linalg', arity: [3, 4], outputs: [2, 2], attrs: fusedAttrs, validate: checkFusedAttrs, keepDtype: [1],
  infer(ctx) {
    const g = packedGeometry(ctx, [0], [1, 2], ['q', 'k', 'v'], 3);
    return [{ dtype: g.dtype, shape: g.shape }, { dtype: lseDtype(g.dtype), shape: [g.B, g.H, g.T] }];
  },
  cost: (ctx, outs): Cost => ({ flops: attentionFlops(packedGeometry(ctx, [0], [1, 2], ['q', 'k', 'v'], 3), ctx.attrs, 2), bytes: moved(ctx, outs) }),
  cuda(dev, [q, k, v, bias], [out, lse], attrs) {
    const H = int(attrs, 'heads');
    dev.attention(q!, k!, v!, out!, lse!, H, kvHeads(attrs), scaleOf(attrs, q!.shape[2]! / H), int(attrs, 'causal') === 1, int(attrs, 'window') ?? 0, bias ?? null);
  },
  cpu([q, k, v, bias], attrs) {
    const L = layoutOf(q!, int(attrs, 'heads')), Lk = layoutOf(k!, kvHeads(attrs));
    const { out, lse } = attentionForward(q!, k!, v!, L, scaleOf(attrs, L.Dh), int(attrs, 'causal') === 1, bias ? maskOf(bias) : undefined, int(attrs, 'window') ?? 0, Lk);
    return [asTensor(q!, out), roundToDtype(tensor(lseDtype(q!.dtype), [L.B, L.H, L.T], lse))];
  },
  // Second derivatives are not supported: FusedAttentionGrad has no rule, so autodiff names it.
  grad: (ctx) => {
    const { b, inputs: [q, k, v, bias], outputs: [out, lse], attrs, gradOutputs: [g, glse] } = ctx;
    if (glse) throw new CleaveError(`node '${ctx.node}': gradients through FusedAttention's lse output are not supported`);
    const [dq, dk, dv, ds] = b.ops('FusedAttentionGrad', [g!, q!, k!, v!, out!, lse!, ...(bias ? [bias] : [])], attrs, bias ? 4 : 3);
    // The bias's gradient is the scores' (dS before the scale), summed over the axes it broadcasts.
    const dbias = bias && ctx.needsGrad[3] ? sumTo(b, ds!, bias.shape as number[]) : null;
    return [ctx.needsGrad[0] ? dq! : null, ctx.needsGrad[1] ? dk! : null, ctx.needsGrad[2] ? dv! : null, ...(bias ? [dbias] : [])];
  },
};

const fusedAttentionGrad: OpDef = {
  // Inputs dout, q, k, v, out, lse and the forward's bias where it had one; then a fourth output,
  // dscores [B, H, Tq, Tk], the gradient of the biased scores.
  op: 'FusedAttentionGrad', since: 13, domain: 'cleave', category: 'linalg', arity: [6, 7], outputs: [3, 4], attrs: fusedAttrs, validate: checkFusedAttrs,
  infer(ctx) {
    const g = packedGeometry(ctx, [1, 0, 4], [2, 3], ['q', 'dout', 'out', 'k', 'v'], 6);
    if (ctx.numOutputs !== (g.bias ? 4 : 3)) throw new CleaveError(`${at(ctx)}: FusedAttentionGrad has ${g.bias ? 'a bias, so 4 outputs (dq, dk, dv, dscores)' : 'no bias, so 3 outputs (dq, dk, dv)'}, not ${ctx.numOutputs}`);
    const lse = input(ctx, 5);
    const want: Shape = [g.B, g.H, g.T];
    if (lse.dtype !== lseDtype(g.dtype) || lse.shape.length !== 3) {
      throw new CleaveError(`${at(ctx)}: lse must be ${lseDtype(g.dtype)}${formatShape(want)} (batch, heads, rows), got ${lse.dtype}${formatShape(lse.shape)}`);
    }
    lse.shape.forEach((d, a) => requireDim(ctx, 'shapes of lse and [batch, heads, rows] of q', d, want[a]!, lse.shape, want));
    const t: ValueType = { dtype: g.dtype, shape: g.shape }, kv: ValueType = { dtype: g.dtype, shape: g.kvShape };
    return g.bias ? [t, kv, kv, { dtype: g.dtype, shape: [g.B, g.H, g.T, g.Tk] }] : [t, kv, kv];
  },
  // Recomputing S, then dV, dP, dQ and dK: five T × T products.
  cost: (ctx, outs): Cost => ({ flops: attentionFlops(packedGeometry(ctx, [1, 0, 4], [2, 3], ['q', 'dout', 'out', 'k', 'v'], 6), ctx.attrs, 5), bytes: moved(ctx, outs) }),
  cuda(dev, [dout, q, k, v, out, lse, bias], [dq, dk, dv, ds], attrs) {
    const H = int(attrs, 'heads');
    dev.attentionGrad(dout!, q!, k!, v!, out!, lse!, dq!, dk!, dv!, H, kvHeads(attrs), scaleOf(attrs, q!.shape[2]! / H), int(attrs, 'causal') === 1, int(attrs, 'window') ?? 0, bias ?? null, ds ?? null);
  },
  cpu([dout, q, k, v, out, lse, bias], attrs) {
    const L = layoutOf(q!, int(attrs, 'heads')), Lk = layoutOf(k!, kvHeads(attrs));
    const { dq, dk, dv, dscores } = attentionBackward(dout!, q!, k!, v!, out!, lse!, L, scaleOf(attrs, L.Dh), int(attrs, 'causal') === 1, int(attrs, 'window') ?? 0, Lk, bias ? maskOf(bias) : undefined);
    const grads = [asTensor(q!, dq), asTensor(k!, dk), asTensor(v!, dv)];
    return dscores ? [...grads, roundToDtype(tensor(q!.dtype, [L.B, L.H, L.T, Lk.T], dscores))] : grads;
  },
};

// --- ONNX Attention (opset 23), the subset cleave runs --------------------------------------------

/**
 * How an Attention node's inputs lay out its heads, after checking it stays inside what cleave
 * supports: self-attention with one head count for q and kv (no grouped-query), an optional
 * attn_mask (bool or additive), no KV cache, no softcap, output Y only.
 */
interface OnnxGeometry { dtype: DType; shape: Shape; rank: 3 | 4; H: number; Dh: number }

function onnxGeometry(ctx: OpContext): OnnxGeometry {
  const unsupported = ['past_key', 'past_value'];
  ctx.inputs.forEach((v, i) => {
    if (i >= 4 && v) throw new CleaveError(`${at(ctx)}: Attention's ${unsupported[i - 4] ?? `input ${i}`} is not supported (cleave runs self-attention without a KV cache)`);
  });
  if (ctx.numOutputs > 1) throw new CleaveError(`${at(ctx)}: Attention's present_key, present_value and qk_matmul_output outputs are not supported`);
  if (((ctx.attrs['softcap'] as number | undefined) ?? 0) !== 0) throw new CleaveError(`${at(ctx)}: Attention's softcap is not supported`);
  const causal = int(ctx.attrs, 'is_causal');
  if (causal !== 0 && causal !== 1) throw new CleaveError(`${at(ctx)}: is_causal must be 0 or 1, got ${causal}`);
  const shape = requireRank(ctx, 0, [3, 4]);
  const rank = shape.length as 3 | 4;
  [1, 2].forEach((i) => requireRank(ctx, i, [rank]));
  const dtype = sameDtype(ctx, [0, 1, 2]);
  requireFloat(ctx, dtype);
  for (const i of [1, 2]) {
    const s = input(ctx, i).shape;
    s.forEach((d, a) => requireDim(ctx, `shapes of Q and ${i === 1 ? 'K' : 'V'} (cleave runs self-attention with equal head sizes)`, shape[a]!, d, shape, s));
  }
  const qh = ctx.attrs['q_num_heads'] as number | undefined, kvh = ctx.attrs['kv_num_heads'] as number | undefined;
  if (qh !== undefined && kvh !== undefined && qh !== kvh) throw new CleaveError(`${at(ctx)}: q_num_heads ${qh} and kv_num_heads ${kvh} differ (grouped-query attention is not supported)`);
  const heads = qh ?? kvh;
  const last = shape[rank - 1]!;
  if (typeof last !== 'number') throw new CleaveError(`${at(ctx)}: the last dimension of Q ${formatShape(shape)} must be static`);
  if (rank === 4) {
    const H = shape[1]!;
    if (typeof H !== 'number') throw new CleaveError(`${at(ctx)}: the head count of Q ${formatShape(shape)} must be static`);
    if (heads !== undefined && heads !== H) throw new CleaveError(`${at(ctx)}: q_num_heads ${heads} does not match Q ${formatShape(shape)}`);
    checkMask(ctx, dtype, [shape[0]!, H, shape[2]!, shape[2]!]);
    return { dtype, shape, rank, H, Dh: last };
  }
  if (qh === undefined || kvh === undefined) throw new CleaveError(`${at(ctx)}: 3-D Attention needs q_num_heads and kv_num_heads`);
  if (!Number.isInteger(qh) || qh < 1 || last % qh) throw new CleaveError(`${at(ctx)}: q_num_heads ${qh} does not divide the hidden size ${last} of Q ${formatShape(shape)}`);
  checkMask(ctx, dtype, [shape[0]!, qh, shape[1]!, shape[1]!]);
  return { dtype, shape, rank, H: qh, Dh: last / qh };
}

/** attn_mask (input 3), where given: bool, or Q's float type, broadcastable to [B, H, T, T]. */
function checkMask(ctx: OpContext, dtype: DType, want: readonly Dim[]): void {
  const m = ctx.inputs[3];
  if (!m) return;
  if (m.dtype !== 'bool' && m.dtype !== dtype) throw new CleaveError(`${at(ctx)}: attn_mask must be bool or ${dtype} (Q's type), got ${m.dtype}`);
  const s = m.shape;
  if (s.length < 2 || s.length > 4) throw new CleaveError(`${at(ctx)}: attn_mask ${formatShape(s)} must have 2 to 4 dims, broadcastable to ${formatShape(want)}`);
  s.forEach((d, a) => {
    const w = want[want.length - s.length + a]!;
    if (d !== 1 && typeof d === 'number' && typeof w === 'number' && d !== w) throw new CleaveError(`${at(ctx)}: attn_mask ${formatShape(s)} does not broadcast to ${formatShape(want)} (batch, heads, queries, keys)`);
  });
}

/** The FusedAttention attributes an Attention node means. */
export function fusedAttrsOfOnnx(attrs: Attrs, dh: number, heads: number): Attrs {
  return { heads, scale: scaleOf(attrs, dh), causal: int(attrs, 'is_causal') };
}

/**
 * Attention has no lse output, so its gradient reruns the fused forward for it (as a flash-attention
 * backward would) and hands both to FusedAttentionGrad; 4-D heads are moved into rows and back. The
 * fusion pass turns Attention into FusedAttention before autodiff, so this serves unfused graphs.
 */
const onnxAttentionGrad: GradRule = (ctx) => {
  const { b, inputs: [q, k, v, mask], attrs, gradOutputs: [g] } = ctx;
  // A constant causal or all-keep mask is fused away before autodiff; any other has no fused kernel.
  if (mask) throw new CleaveError(`node '${ctx.node}': training through Attention with an attn_mask needs the mask to be a constant that is causal or keeps every key (then the fusion pass takes it); this one is not`);
  const shape = q!.shape;
  const rank = shape.length;
  const H = rank === 4 ? (shape[1] as number) : int(attrs, 'q_num_heads');
  const Dh = rank === 4 ? (shape[3] as number) : (shape[2] as number) / H;
  const toRows = (x: Value): Value => (rank === 3 ? x : b.op('Reshape', [b.op('Transpose', [x], { perm: [0, 2, 1, 3] })], { shape: [0, 0, H * Dh] }));
  const toHeads = (x: Value): Value => (rank === 3 ? x : b.op('Transpose', [b.op('Reshape', [x], { shape: [0, 0, H, Dh] })], { perm: [0, 2, 1, 3] }));
  const a = fusedAttrsOfOnnx(attrs, Dh, H);
  const [q3, k3, v3] = [toRows(q!), toRows(k!), toRows(v!)];
  const [out, lse] = b.ops('FusedAttention', [q3, k3, v3], a, 2);
  const grads = b.ops('FusedAttentionGrad', [toRows(g!), q3, k3, v3, out!, lse!], a, 3);
  return grads.map((d, i) => (ctx.needsGrad[i] ? toHeads(d) : null));
};

const onnxAttention: OpDef = {
  op: 'Attention', since: 23, category: 'linalg', arity: [3, 6], outputs: [1, 4],
  attrs: {
    is_causal: flagAttr(0),
    q_num_heads: { type: 'int', optional: true, min: 1 },
    kv_num_heads: { type: 'int', optional: true, min: 1 },
    qk_matmul_output_mode: { type: 'int', default: 0, oneOf: [0, 1, 2, 3] },
    scale: { type: 'float', optional: true },
    softcap: { type: 'float', default: 0 },
    // A precision hint for the softmax; the kernels compute it in float64 (CPU) or float32 (CUDA) anyway.
    softmax_precision: { type: 'dtype', optional: true },
  },
  infer(ctx) {
    const g = onnxGeometry(ctx);
    return [{ dtype: g.dtype, shape: g.shape }];
  },
  cost(ctx, outs) {
    const g = onnxGeometry(ctx);
    const s = g.shape;
    const T = g.rank === 4 ? s[2] : s[1];
    return { flops: 4 * num(s[0]) * num(T) * num(T) * g.H * g.Dh * (int(ctx.attrs, 'is_causal') ? 0.5 : 1), bytes: moved(ctx, outs) };
  },
  cpu([q, k, v, mask], attrs) {
    const s = q!.shape;
    const L = s.length === 4 ? headMajor(s[0]!, s[1]!, s[2]!, s[3]!) : packed(s[0]!, s[1]!, int(attrs, 'q_num_heads'), s[2]! / int(attrs, 'q_num_heads'));
    const { out } = attentionForward(q!, k!, v!, L, scaleOf(attrs, L.Dh), int(attrs, 'is_causal') === 1, mask ? maskOf(mask) : undefined);
    return [asTensor(q!, out)];
  },
  grad: onnxAttentionGrad,
};

export const ATTENTION_OPS: OpDef[] = [fusedAttention, fusedAttentionGrad, onnxAttention];
