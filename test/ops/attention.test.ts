import { describe, expect, it } from 'vitest';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { toFloat64 } from '../../compiler/passes/precision.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import type { DType } from '../../src/core/ir/dtype.js';
import type { Attrs, Graph, Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { decomposedAttention } from '../helpers/attention.js';
import { maxRelError } from '../helpers/compare.js';
import { gradCheck } from '../helpers/gradcheck.js';

const B = 2, T = 5, H = 2, D = 8, Dh = D / H;

function randn(shape: number[], rng: Rng, dtype: DType = 'float32'): Tensor {
  return tensor(dtype, shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()));
}

/** The same attention twice, fused and decomposed, over the same q, k, v inputs. */
function pair(causal: boolean): { fused: Graph; ref: Graph; feeds: Record<string, Tensor> } {
  const rng = new Rng(21);
  const feeds = { q: randn([B, T, D], rng), k: randn([B, T, D], rng), v: randn([B, T, D], rng) };
  const make = (fused: boolean): Graph => {
    const b = new ModelBuilder(fused ? 'fused' : 'ref');
    const [q, k, v] = (['q', 'k', 'v'] as const).map((n) => b.input(n, 'float32', [B, T, D])) as [Value, Value, Value];
    if (fused) {
      const [out, lse] = b.ops('FusedAttention', [q, k, v], { heads: H, scale: 1 / Math.sqrt(Dh), causal: causal ? 1 : 0 }, 2);
      b.output(out!, 'out');
      b.output(lse!, 'lse');
    } else b.output(decomposedAttention(b, q, k, v, H, causal), 'out');
    return b.finish();
  };
  return { fused: make(true), ref: make(false), feeds };
}

/** log Σ exp over the last axis, in float64: the reference for lse. */
function logSumExp(s: Tensor): Float64Array {
  const n = s.shape[s.shape.length - 1]!;
  const out = new Float64Array(s.data.length / n);
  for (let r = 0; r < out.length; r++) {
    let mx = -Infinity;
    for (let j = 0; j < n; j++) mx = Math.max(mx, s.data[r * n + j]!);
    let sum = 0;
    for (let j = 0; j < n; j++) sum += Math.exp(s.data[r * n + j]! - mx);
    out[r] = mx + Math.log(sum);
  }
  return out;
}

describe.each([['causal', true], ['non-causal', false]] as const)('FusedAttention (%s)', (_, causal) => {
  it('computes what the decomposed graph computes, and the log-sum-exp of its scaled, masked scores', () => {
    const { fused, ref, feeds } = pair(causal);
    const softmax = ref.nodes.find((n) => n.op === 'Softmax')!;
    const r = runGraph(ref, feeds, { keep: [softmax.inputs[0]!.name] });
    const f = runGraph(fused, feeds);
    expect(maxRelError(f.get('out')!, r.get('out')!)).toBeLessThanOrEqual(1e-6);
    const lse = f.get('lse')!;
    expect(lse.dtype).toBe('float32');
    expect(lse.shape).toEqual([B, H, T]);
    const want = tensor('float64', [B, H, T], logSumExp(r.get(softmax.inputs[0]!.name)!));
    expect(maxRelError(lse, want)).toBeLessThanOrEqual(1e-6);
    // Causal: the first row sees only itself, so its log-sum-exp is its own scaled score.
    if (causal) {
      const q0 = Array.from(feeds.q.data.slice(0, Dh)), k0 = Array.from(feeds.k.data.slice(0, Dh));
      expect(lse.data[0]).toBeCloseTo(q0.reduce((a, x, i) => a + x * k0[i]!, 0) / Math.sqrt(Dh), 5);
    }
  });

  it('has gradients that match central finite differences', () => {
    const rng = new Rng(5);
    const b = new ModelBuilder('grad');
    const [q, k, v] = ['q', 'k', 'v'].map((n) => b.graph.addParam(n, randn([B, T, D], rng))) as [Value, Value, Value];
    const [out] = b.ops('FusedAttention', [q, k, v], { heads: H, scale: 0.7, causal: causal ? 1 : 0 }, 2);
    b.output(b.op('ReduceSum', [b.op('Mul', [out!, b.constant(randn([B, T, D], rng), 'R')])], { keepdims: 0 }), 'loss');
    const r = gradCheck(b.finish(), {}, { samples: 40 });
    expect(r.checked).toBe(120);
    expect(r.f64).toBeLessThanOrEqual(1e-6);
    expect(r.f32).toBeLessThanOrEqual(1e-3);
  });

  it('has the gradients autodiff gives the decomposed graph (float64 ≤ 1e-10, float32 ≤ 1e-5)', () => {
    const rng = new Rng(9);
    const data = { q: randn([B, T, D], rng), k: randn([B, T, D], rng), v: randn([B, T, D], rng) };
    const R = randn([B, T, D], rng);
    const make = (fused: boolean): Graph => {
      const b = new ModelBuilder(fused ? 'fused' : 'ref');
      const [q, k, v] = (['q', 'k', 'v'] as const).map((n) => b.graph.addParam(n, data[n])) as [Value, Value, Value];
      const out = fused
        ? b.ops('FusedAttention', [q, k, v], { heads: H, scale: 1 / Math.sqrt(Dh), causal: causal ? 1 : 0 }, 2)[0]!
        : decomposedAttention(b, q, k, v, H, causal);
      b.output(b.op('ReduceSum', [b.op('Mul', [out, b.constant(R, 'R')])], { keepdims: 0 }), 'loss');
      return b.finish();
    };
    const spec = { loss: { kind: 'output' as const } };
    for (const [dtype, tol] of [['float32', 1e-5], ['float64', 1e-10]] as const) {
      const [tf, tr] = [make(true), make(false)].map((g) => buildTrainingGraph(dtype === 'float64' ? toFloat64(g) : g, spec));
      const grads = tf!.graph.nodes.filter((n) => n.op === 'FusedAttentionGrad');
      expect(grads.length).toBe(1);
      const rf = runGraph(tf!.graph, {}), rr = runGraph(tr!.graph, {});
      for (const p of ['q', 'k', 'v']) {
        const a = rf.get(tf!.grads.get(p)!.name)!, e = rr.get(tr!.grads.get(p)!.name)!;
        expect(a.dtype).toBe(dtype);
        expect(maxRelError(a, e), `d${p} ${dtype}`).toBeLessThanOrEqual(tol);
      }
    }
  });
});

describe('FusedAttention with a sliding window (Mistral)', () => {
  const Tw = 9, W = 3;
  const data = (seed: number): Record<'q' | 'k' | 'v', Tensor> => {
    const rng = new Rng(seed);
    return { q: randn([B, Tw, D], rng), k: randn([B, Tw, D], rng), v: randn([B, Tw, D], rng) };
  };
  const make = (fused: boolean, window: number, asParams: Record<'q' | 'k' | 'v', Tensor> | null, R?: Tensor): Graph => {
    const b = new ModelBuilder(fused ? 'fused' : 'ref');
    const [q, k, v] = (['q', 'k', 'v'] as const).map((n) => (asParams ? b.graph.addParam(n, asParams[n]) : b.input(n, 'float32', [B, Tw, D]))) as [Value, Value, Value];
    const out = fused ? b.ops('FusedAttention', [q, k, v], { heads: H, scale: 1 / Math.sqrt(Dh), causal: 1, window }, 2)[0]! : decomposedAttention(b, q, k, v, H, true, window);
    if (R) b.output(b.op('ReduceSum', [b.op('Mul', [out, b.constant(R, 'R')])], { keepdims: 0 }), 'loss');
    else b.output(out, 'out');
    return b.finish();
  };

  it('computes what the band-masked decomposed graph computes, and differs from plain causal', () => {
    const feeds = data(31);
    const f = runGraph(make(true, W, null), feeds).get('out')!;
    expect(maxRelError(f, runGraph(make(false, W, null), feeds).get('out')!)).toBeLessThanOrEqual(1e-6);
    expect(maxRelError(f, runGraph(make(false, 0, null), feeds).get('out')!)).toBeGreaterThan(1e-2);
    // A window as long as the sequence is plain causal attention.
    expect(maxRelError(runGraph(make(true, Tw, null), feeds).get('out')!, runGraph(make(false, 0, null), feeds).get('out')!)).toBeLessThanOrEqual(1e-6);
  });

  it('has gradients that match finite differences and autodiff of the decomposed graph', () => {
    const p = data(32), R = randn([B, Tw, D], new Rng(33));
    const r = gradCheck(make(true, W, p, R), {}, { samples: 30 });
    expect(r.f64).toBeLessThanOrEqual(1e-6);
    const spec = { loss: { kind: 'output' as const } };
    const [tf, tr] = [make(true, W, p, R), make(false, W, p, R)].map((g) => buildTrainingGraph(toFloat64(g), spec));
    const rf = runGraph(tf!.graph, {}), rr = runGraph(tr!.graph, {});
    for (const n of ['q', 'k', 'v']) expect(maxRelError(rf.get(tf!.grads.get(n)!.name)!, rr.get(tr!.grads.get(n)!.name)!), `d${n}`).toBeLessThanOrEqual(1e-10);
  });

  it('refuses a window without causal, and a negative or fractional one, naming the node', () => {
    for (const [attrs, msg] of [[{ causal: 0, window: 4 }, /a sliding window \(4 keys\) needs causal = 1/], [{ causal: 1, window: -1 }, /window must be a whole number of keys/], [{ causal: 1, window: 1.5 }, /node '\/FusedAttention': attribute 'window'/]] as const) {
      const b = new ModelBuilder('bad');
      const [q, k, v] = ['q', 'k', 'v'].map((n) => b.input(n, 'float32', [B, Tw, D])) as [Value, Value, Value];
      expect(() => b.ops('FusedAttention', [q, k, v], { heads: H, ...attrs }, 2)).toThrow(msg);
    }
  });
});

describe('FusedAttention with grouped-query K/V heads (kv_heads)', () => {
  const Hq = 4, Hkv = 2, G = Hq / Hkv, Tg = 6, Dk = Hkv * Dh, Dq = Hq * Dh;
  /** k/v [B, T, Hkv·Dh] with each head repeated for its G query heads: [B, T, Hq·Dh]. */
  const repeat = (t: Tensor): Tensor => {
    const out = tensor('float32', [B, Tg, Dq]);
    for (let bt = 0; bt < B * Tg; bt++) for (let h = 0; h < Hq; h++) for (let d = 0; d < Dh; d++) out.data[bt * Dq + h * Dh + d] = t.data[bt * Dk + Math.floor(h / G) * Dh + d]!;
    return out;
  };
  const data = (seed: number): Record<'q' | 'k' | 'v', Tensor> => {
    const rng = new Rng(seed);
    return { q: randn([B, Tg, Dq], rng), k: randn([B, Tg, Dk], rng), v: randn([B, Tg, Dk], rng) };
  };
  const lossGraph = (p: Record<'q' | 'k' | 'v', Tensor>, R: Tensor, shared: boolean): Graph => {
    const b = new ModelBuilder(shared ? 'gqa' : 'repeated');
    const q = b.graph.addParam('q', p.q);
    const [k, v] = (['k', 'v'] as const).map((n) => b.graph.addParam(n, shared ? p[n] : repeat(p[n])));
    const out = shared
      ? b.ops('FusedAttention', [q, k!, v!], { heads: Hq, kv_heads: Hkv, scale: 0.6, causal: 1 }, 2)[0]!
      : decomposedAttention(b, q, k!, v!, Hq, true);
    b.output(b.op('ReduceSum', [b.op('Mul', [out, b.constant(R, 'R')])], { keepdims: 0 }), 'loss');
    return b.finish();
  };

  it('computes what attention over repeated K/V computes, and dK, dV are the sums over each group', () => {
    const p = data(41), R = randn([B, Tg, Dq], new Rng(42));
    // The reference: the written-out attention over the repeated copies, scaled by 1/√Dh, so use that scale.
    const ref = lossGraph(p, R, false);
    const shared = lossGraph(p, R, true);
    shared.nodes.find((n) => n.op === 'FusedAttention')!.attrs['scale'] = 1 / Math.sqrt(Dh);
    const spec = { loss: { kind: 'output' as const } };
    const [ts, tr] = [shared, ref].map((g) => buildTrainingGraph(toFloat64(g), spec));
    const rs = runGraph(ts!.graph, {}), rr = runGraph(tr!.graph, {});
    expect(maxRelError(rs.get(ts!.loss.name)!, rr.get(tr!.loss.name)!)).toBeLessThanOrEqual(1e-12);
    expect(maxRelError(rs.get(ts!.grads.get('q')!.name)!, rr.get(tr!.grads.get('q')!.name)!)).toBeLessThanOrEqual(1e-10);
    for (const n of ['k', 'v']) {
      const full = rr.get(tr!.grads.get(n)!.name)!, got = rs.get(ts!.grads.get(n)!.name)!;
      expect(got.shape).toEqual([B, Tg, Dk]);
      const want = tensor('float64', [B, Tg, Dk]);
      for (let bt = 0; bt < B * Tg; bt++) for (let h = 0; h < Hq; h++) for (let d = 0; d < Dh; d++) want.data[bt * Dk + Math.floor(h / G) * Dh + d]! += full.data[bt * Dq + h * Dh + d]!;
      expect(maxRelError(got, want), `d${n}`).toBeLessThanOrEqual(1e-10);
    }
  });

  it('has gradients that match finite differences', () => {
    const r = gradCheck(lossGraph(data(43), randn([B, Tg, Dq], new Rng(44)), true), {}, { samples: 30 });
    expect(r.f64).toBeLessThanOrEqual(1e-6);
  });

  it('refuses kv_heads that do not divide heads, and k, v of the wrong row size, naming the node', () => {
    const b = new ModelBuilder('bad');
    const q = b.input('q', 'float32', [B, Tg, Dq]), k = b.input('k', 'float32', [B, Tg, Dk]), v = b.input('v', 'float32', [B, Tg, Dk]);
    expect(() => b.ops('FusedAttention', [q, k, v], { heads: Hq, kv_heads: 3 }, 2)).toThrow(/node '\/FusedAttention': kv_heads 3 must divide heads 4/);
    expect(() => b.ops('FusedAttention', [q, k, v], { heads: Hq }, 2)).toThrow(/shapes of q and k do not match: \[2, 6, 16\] and \[2, 6, 8\]/);
    expect(() => b.ops('FusedAttention', [q, q, v], { heads: Hq, kv_heads: Hkv }, 2)).toThrow(/shapes of q and k do not match: \[2, 6, 8\] and \[2, 6, 16\]/);
  });
});

it('FusedAttentionGrad on its own: dv is Pᵀ·dout, δ is dout·out', () => {
  // One head, T = 2, causal: row 0 attends only to key 0, so dv₀ gets all of dout₀ plus P₁₀·dout₁.
  const rng = new Rng(3);
  const q = randn([1, 2, 3], rng), k = randn([1, 2, 3], rng), v = randn([1, 2, 3], rng), dout = randn([1, 2, 3], rng);
  const attrs = { heads: 1, scale: 0.5, causal: 1 };
  const [out, lse] = getOp('FusedAttention', 't').cpu!([q, k, v], attrs, 2);
  const grad = getOp('FusedAttentionGrad', 't').cpu!;
  const [dq, , dv] = grad([dout, q, k, v, out!, lse!], attrs, 3);
  // δ = dout · out per row, as a flash backward takes it: out is read, and only dq, dk depend on it.
  const [dq0, , dv0] = grad([dout, q, k, v, tensor('float32', [1, 2, 3]), lse!], attrs, 3);
  expect(maxRelError(dv0!, dv!)).toBe(0);
  expect(maxRelError(dq0!, dq!)).toBeGreaterThan(1e-3);
  const s = (i: number, j: number): number => 0.5 * [0, 1, 2].reduce((a, d) => a + q.data[i * 3 + d]! * k.data[j * 3 + d]!, 0);
  const p10 = Math.exp(s(1, 0)) / (Math.exp(s(1, 0)) + Math.exp(s(1, 1)));
  for (let d = 0; d < 3; d++) {
    expect(dv!.data[d]).toBeCloseTo(dout.data[d]! + p10 * dout.data[3 + d]!, 6);
    expect(dv!.data[3 + d]).toBeCloseTo((1 - p10) * dout.data[3 + d]!, 6);
  }
});

describe('ONNX Attention', () => {
  const rng = new Rng(13);
  const feeds = { q: randn([B, T, D], rng), k: randn([B, T, D], rng), v: randn([B, T, D], rng) };
  const toHeads = (t: Tensor): Tensor => {
    const out = tensor(t.dtype, [B, H, T, Dh]);
    for (let b = 0; b < B; b++) for (let t2 = 0; t2 < T; t2++) for (let h = 0; h < H; h++) for (let d = 0; d < Dh; d++) {
      out.data[((b * H + h) * T + t2) * Dh + d] = t.data[(b * T + t2) * D + h * Dh + d]!;
    }
    return out;
  };

  it.each([[1], [0]])('matches the decomposed graph in 3-D and 4-D layouts (is_causal %i)', (causal) => {
    const { ref } = pair(causal === 1);
    const want = runGraph(ref, feeds).get('out')!;
    const def = getOp('Attention', 't');
    const a3 = def.cpu!([feeds.q, feeds.k, feeds.v], { is_causal: causal, q_num_heads: H, kv_num_heads: H }, 1)[0]!;
    expect(maxRelError(a3, want)).toBeLessThanOrEqual(1e-6);
    const a4 = def.cpu!([toHeads(feeds.q), toHeads(feeds.k), toHeads(feeds.v)], { is_causal: causal }, 1)[0]!;
    expect(maxRelError(a4, toHeads(want))).toBeLessThanOrEqual(1e-6);
    // An explicit scale replaces 1/√Dh.
    const scaled = def.cpu!([feeds.q, feeds.k, feeds.v], { is_causal: causal, q_num_heads: H, kv_num_heads: H, scale: 2 / Math.sqrt(Dh) }, 1)[0]!;
    const doubled = { ...feeds.q, data: feeds.q.data.map((x) => 2 * x) };
    expect(maxRelError(scaled, def.cpu!([doubled, feeds.k, feeds.v], { is_causal: causal, q_num_heads: H, kv_num_heads: H }, 1)[0]!)).toBeLessThanOrEqual(1e-6);
  });

  it.each([['3-D', [B, T, D], { q_num_heads: H, kv_num_heads: H }], ['4-D', [B, H, T, Dh], {}]] as const)('%s: gradients match finite differences', (_, shape, heads) => {
    const r2 = new Rng(17);
    const b = new ModelBuilder('grad', { opset: 23 });
    const [q, k, v] = ['q', 'k', 'v'].map((n) => b.graph.addParam(n, randn([...shape], r2))) as [Value, Value, Value];
    const y = b.op('Attention', [q, k, v], { ...heads, is_causal: 1 });
    b.output(b.op('ReduceSum', [b.op('Mul', [y, b.constant(randn([...shape], r2), 'R')])], { keepdims: 0 }), 'loss');
    const r = gradCheck(b.finish(), {}, { samples: 24 });
    expect(r.f64).toBeLessThanOrEqual(1e-6);
    expect(r.f32).toBeLessThanOrEqual(1e-3);
  });
});

describe('Attention with attn_mask', () => {
  const B = 2, H = 2, T = 4, Dh = 4;
  const r = new Rng(5);
  const [q, k, v] = [0, 1, 2].map(() => randn([B, H, T, Dh], r));
  const def = getOp('Attention', 't');
  const run = (mask: Tensor | null, attrs: Attrs = {}): Tensor => def.cpu!([q, k, v, mask], attrs, 1)[0]!;
  const tri = tensor('bool', [T, T], Array.from({ length: T * T }, (_, i) => (i % T <= Math.floor(i / T) ? 1 : 0)));

  it('a bool mask keeps where true: a causal one equals is_causal, an all-true one equals none', () => {
    expect(maxRelError(run(tri), run(null, { is_causal: 1 }))).toBeLessThanOrEqual(1e-12);
    expect(maxRelError(run(tensor('bool', [1, 1, T, T], new Array(T * T).fill(1))), run(null))).toBeLessThanOrEqual(1e-12);
  });

  it('a float mask is added to the scores, broadcast from its trailing dims', () => {
    const add = randn([H, 1, T], r);
    const got = run(add);
    // The same through the decomposed graph: softmax(q·kᵀ/√Dh + mask)·v.
    const b = new ModelBuilder('d', { opset: 23 });
    const [qv, kv, vv] = ['q', 'k', 'v'].map((n) => b.input(n, 'float32', [B, H, T, Dh])) as [Value, Value, Value];
    const s = b.op('Add', [b.op('Mul', [b.op('MatMul', [qv, b.op('Transpose', [kv], { perm: [0, 1, 3, 2] })]), b.scalar(1 / Math.sqrt(Dh))]), b.constant(add, 'm')]);
    b.output(b.op('MatMul', [b.op('Softmax', [s], { axis: -1 }), vv]), 'y');
    const want = runGraph(b.finish(), { q, k, v }).get('y')!;
    expect(maxRelError(got, want)).toBeLessThanOrEqual(1e-6);
  });

  it('training through an unfused masked Attention is refused, naming the node', () => {
    const b = new ModelBuilder('g', { opset: 23 });
    const [qp, kp, vp] = ['q', 'k', 'v'].map((n) => b.graph.addParam(n, randn([B, H, T, Dh], r))) as [Value, Value, Value];
    const y = b.op('Attention', [qp, kp, vp, b.input('m', 'bool', [T, T])]);
    b.output(b.op('ReduceSum', [y], { keepdims: 0 }), 'loss');
    expect(() => buildTrainingGraph(b.finish(), { loss: { kind: 'output' } })).toThrow(/node '\/Attention': training through Attention with an attn_mask needs the mask to be a constant/);
  });
});

type Row = [string, string, [number[], DType?][], Attrs, RegExp, number];

const f32 = (...s: number[]): [number[]] => [s];
const lse = (...s: number[]): [number[], DType] => [s, 'float32'];
const HA = { heads: 2 };

/** Every shape and attribute mistake is a CleaveError naming the node and what is wrong. */
const ERRORS: Row[] = [
  ['rank', 'FusedAttention', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4)], HA, /node '\/FusedAttention': input 2 has shape \[2, 4\]; expected rank 3/, 2],
  ['rank 4', 'FusedAttention', [f32(2, 2, 4, 4), f32(2, 2, 4, 4), f32(2, 2, 4, 4)], HA, /node '\/FusedAttention': input 0 has shape \[2, 2, 4, 4\]; expected rank 3/, 2],
  ['mismatched k', 'FusedAttention', [f32(2, 4, 8), f32(2, 5, 6), f32(2, 5, 6)], HA, /node '\/FusedAttention': shapes of q and k do not match: \[2, 5, 8\] and \[2, 5, 6\]/, 2],
  ['k of another batch', 'FusedAttention', [f32(2, 4, 8), f32(3, 4, 8), f32(3, 4, 8)], HA, /shapes of q and k do not match: \[2, 4, 8\] and \[3, 4, 8\]/, 2],
  ['mismatched v', 'FusedAttention', [f32(2, 4, 8), f32(2, 4, 8), f32(3, 4, 8)], HA, /shapes of k and v do not match: \[2, 4, 8\] and \[3, 4, 8\]/, 2],
  ['v of another length than k', 'FusedAttention', [f32(2, 4, 8), f32(2, 5, 8), f32(2, 4, 8)], HA, /shapes of k and v do not match: \[2, 5, 8\] and \[2, 4, 8\]/, 2],
  ['heads not dividing', 'FusedAttention', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8)], { heads: 3 }, /node '\/FusedAttention': heads 3 does not divide the row size 8 of q \[2, 4, 8\]/, 2],
  ['zero heads', 'FusedAttention', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8)], { heads: 0 }, /heads 0 does not divide/, 2],
  ['missing heads', 'FusedAttention', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8)], {}, /node '\/FusedAttention': FusedAttention needs the attribute 'heads'/, 2],
  ['int dtype', 'FusedAttention', [[[2, 4, 8], 'int64'], [[2, 4, 8], 'int64'], [[2, 4, 8], 'int64']], HA, /node '\/FusedAttention': needs a floating-point input, got int64/, 2],
  ['mixed dtypes', 'FusedAttention', [f32(2, 4, 8), [[2, 4, 8], 'float64'], f32(2, 4, 8)], HA, /node '\/FusedAttention': inputs have different element types \(float32 vs float64 vs float32\)/, 2],
  ['causal 2', 'FusedAttention', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8)], { heads: 2, causal: 2 }, /node '\/FusedAttention': causal must be 0 or 1, got 2/, 2],
  ['symbolic row size', 'FusedAttention', [[[2, 4, 'D' as unknown as number]], [[2, 4, 'D' as unknown as number]], [[2, 4, 'D' as unknown as number]]], HA, /the row size of q \[2, 4, D\] must be static/, 2],
  ['lse shape', 'FusedAttentionGrad', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), lse(2, 4, 4)], HA, /node '\/FusedAttentionGrad': shapes of lse and \[batch, heads, rows\] of q do not match: \[2, 4, 4\] and \[2, 2, 4\]/, 3],
  ['lse rank', 'FusedAttentionGrad', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), lse(2, 8)], HA, /lse must be float32\[2, 2, 4\] \(batch, heads, rows\), got float32\[2, 8\]/, 3],
  ['lse dtype', 'FusedAttentionGrad', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), [[2, 2, 4], 'bfloat16']], HA, /lse must be float32\[2, 2, 4\] \(batch, heads, rows\), got bfloat16\[2, 2, 4\]/, 3],
  ['dout shape', 'FusedAttentionGrad', [f32(2, 3, 8), f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), lse(2, 2, 4)], HA, /shapes of q and dout do not match: \[2, 4, 8\] and \[2, 3, 8\]/, 3],
  ['out shape', 'FusedAttentionGrad', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 6), lse(2, 2, 4)], HA, /shapes of q and out do not match: \[2, 4, 8\] and \[2, 4, 6\]/, 3],
  ['Attention mask type', 'Attention', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), [[4, 4], 'int64']], { q_num_heads: 2, kv_num_heads: 2 }, /node '\/Attention': attn_mask must be bool or float32 \(Q's type\), got int64/, 1],
  ['Attention mask shape', 'Attention', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), [[4, 5], 'bool']], { q_num_heads: 2, kv_num_heads: 2 }, /attn_mask \[4, 5\] does not broadcast to \[2, 2, 4, 4\]/, 1],
  ['Attention mask rank', 'Attention', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8), [[4], 'bool']], { q_num_heads: 2, kv_num_heads: 2 }, /attn_mask \[4\] must have 2 to 4 dims/, 1],
  ['Attention KV cache', 'Attention', [f32(2, 2, 4, 4), f32(2, 2, 4, 4), f32(2, 2, 4, 4), [[4, 4], 'bool'], f32(2, 2, 4, 4)], {}, /Attention's past_key is not supported/, 1],
  ['Attention GQA', 'Attention', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8)], { q_num_heads: 4, kv_num_heads: 2 }, /q_num_heads 4 and kv_num_heads 2 differ \(grouped-query attention is not supported\)/, 1],
  ['Attention 3-D heads', 'Attention', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8)], {}, /node '\/Attention': 3-D Attention needs q_num_heads and kv_num_heads/, 1],
  ['Attention 3-D heads not dividing', 'Attention', [f32(2, 4, 8), f32(2, 4, 8), f32(2, 4, 8)], { q_num_heads: 3, kv_num_heads: 3 }, /q_num_heads 3 does not divide the hidden size 8/, 1],
  ['Attention cross', 'Attention', [f32(2, 4, 8), f32(2, 6, 8), f32(2, 6, 8)], { q_num_heads: 2, kv_num_heads: 2 }, /shapes of Q and K \(cleave runs self-attention with equal head sizes\) do not match/, 1],
  ['Attention rank', 'Attention', [f32(4, 8), f32(4, 8), f32(4, 8)], {}, /node '\/Attention': input 0 has shape \[4, 8\]; expected rank 3 or 4/, 1],
  ['Attention 4-D heads', 'Attention', [f32(2, 2, 4, 4), f32(2, 2, 4, 4), f32(2, 2, 4, 4)], { q_num_heads: 4 }, /q_num_heads 4 does not match Q \[2, 2, 4, 4\]/, 1],
  ['Attention softcap', 'Attention', [f32(2, 2, 4, 4), f32(2, 2, 4, 4), f32(2, 2, 4, 4)], { softcap: 30 }, /Attention's softcap is not supported/, 1],
  ['Attention outputs', 'Attention', [f32(2, 2, 4, 4), f32(2, 2, 4, 4), f32(2, 2, 4, 4)], {}, /present_key, present_value and qk_matmul_output outputs are not supported/, 3],
  ['Attention int', 'Attention', [[[2, 2, 4, 4], 'int32'], [[2, 2, 4, 4], 'int32'], [[2, 2, 4, 4], 'int32']], {}, /needs a floating-point input, got int32/, 1],
];

it.each(ERRORS)('%s: %s is refused', (_, op, inputs, attrs, message, outputs) => {
  const b = new ModelBuilder('bad');
  const vs = inputs.map(([shape, dtype], i) => b.input(`x${i}`, dtype ?? 'float32', shape));
  expect(() => b.ops(op, vs, attrs, outputs)).toThrow(CleaveError);
  expect(() => b.ops(op, vs, attrs, outputs)).toThrow(message);
});

it('FusedAttention without lse-gradient support says so, naming the node', () => {
  const b = new ModelBuilder('lse');
  const [q, k, v] = ['q', 'k', 'v'].map((n) => b.graph.addParam(n, tensor('float32', [1, 2, 4]))) as [Value, Value, Value];
  const [, l] = b.ops('FusedAttention', [q, k, v], { heads: 2 }, 2);
  b.output(b.op('ReduceSum', [l!], { keepdims: 0 }), 'loss');
  expect(() => buildTrainingGraph(b.finish(), { loss: { kind: 'output' } })).toThrow(/node '\/FusedAttention': gradients through FusedAttention's lse output are not supported/);
});

it('costs 4·B·H·T²·Dh FLOPs forward (halved when causal) and 2.5 times that backward', () => {
  const ctx = (op: string, n: number, causal: number) => ({
    node: 'c', numOutputs: 2, consts: [], attrs: { heads: 2, causal },
    inputs: Array.from({ length: n }, (_, i) => (op === 'FusedAttentionGrad' && i === 5 ? { dtype: 'float32' as const, shape: [3, 2, 16] } : { dtype: 'float32' as const, shape: ['N', 16, 8] })),
  });
  const fwd = getOp('FusedAttention', 't'), bwd = getOp('FusedAttentionGrad', 't');
  const outs = fwd.infer(ctx('FusedAttention', 3, 0));
  expect(outs[1]).toEqual({ dtype: 'float32', shape: ['N', 2, 16] });
  // Symbolic batch counts as 1: per-sample cost, as every op's.
  expect(fwd.cost(ctx('FusedAttention', 3, 0), outs).flops).toBe(4 * 2 * 16 * 16 * 4);
  expect(fwd.cost(ctx('FusedAttention', 3, 1), outs).flops).toBe(2 * 2 * 16 * 16 * 4);
  expect(fwd.cost(ctx('FusedAttention', 3, 0), outs).bytes).toBe((3 * 16 * 8 + 16 * 8 + 2 * 16) * 4);
  expect(bwd.cost({ ...ctx('FusedAttentionGrad', 6, 1), inputs: ctx('FusedAttentionGrad', 6, 1).inputs.map((t, i) => (i === 5 ? { ...t, shape: ['N', 2, 16] } : t)) }, []).flops).toBe(5 * 2 * 16 * 16 * 4);
});
