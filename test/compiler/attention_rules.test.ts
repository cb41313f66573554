// The attention rule tables of compiler/passes/attention.ts: each CANONICAL row alone is exact and
// fires on its spelling (and not where it must not), and attentionFusion fuses hand-built exporter
// spellings with the unfused graph's numbers, or reports why a Softmax stays.
import { describe, expect, it } from 'vitest';
import { CANONICAL, type AttentionReport, attentionFusion } from '../../compiler/passes/attention.js';
import { type Rule, applyRules } from '../../compiler/passes/rewrite.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { cloneGraph } from '../../src/core/ir/clone.js';
import type { Graph, Node, Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { validateGraph } from '../../src/core/ir/validate.js';
import { lowerTriangle } from '../helpers/attention.js';
import { maxRelError } from '../helpers/compare.js';
import { randomFeeds } from '../helpers/inputs.js';

const FINFO_MIN = -3.4028234663852886e38;
const ops = (g: Graph): string[] => g.nodes.map((n) => n.op);
const count = (g: Graph, op: string): number => g.nodes.filter((n) => n.op === op).length;
const row = (name: string): Rule => {
  const r = CANONICAL.find((x) => x.name === name);
  if (!r) throw new Error(`no canonical row '${name}'`);
  return r;
};
const TT = row('transpose of a transpose'), CAST = row('cast to its own type'), KT = row('kᵀ through [B·H, T, Dh]'), SCALE = row('scale out of the scores product');

/** The outputs of `after` equal those of `before` on the same feeds (≤ 1e-6 relative), under the same names. */
function sameOutputs(before: Graph, after: Graph, seed = 3): void {
  validateGraph(after);
  const feeds = randomFeeds(before, 2, seed);
  const want = runGraph(before, feeds), got = runGraph(after, feeds);
  expect([...got.keys()]).toEqual([...want.keys()]);
  for (const [k, t] of want) expect(maxRelError(got.get(k)!, t), k).toBeLessThanOrEqual(1e-6);
}

/** Runs one row alone on a copy of `g`: it fires `times` times and the copy computes the same. */
function rowAlone(g: Graph, r: Rule, times: number): Graph {
  const f = cloneGraph(g);
  const counts = applyRules(f, [r]);
  expect(counts.get(r.name) ?? 0, r.name).toBe(times);
  expect([...counts.keys()].filter((k) => k !== r.name)).toEqual([]);
  sameOutputs(g, f);
  return f;
}

describe('CANONICAL', () => {
  it('has its rows, in order (Cast and CastLike each a row of one name)', () => {
    expect(CANONICAL.map((r) => r.name)).toEqual(['constant computation', 'transpose of a transpose', 'reshape of a reshape', 'cast to its own type', 'cast to its own type', 'kᵀ through [B·H, T, Dh]', 'scale out of the scores product']);
  });

  describe('constant computation', () => {
    const CC = row('constant computation');
    it('a scalar computed from constants alone becomes that constant (an unoptimized export\'s Sqrt(0.25) scale)', () => {
      const b = new ModelBuilder('cc');
      const x = b.input('x', 'float32', [2, 3]);
      b.output(b.op('Mul', [x, b.op('Sqrt', [b.scalar(0.25)])]), 'y');
      // More than one element (what the author wrote stays, as foldConstants keeps it), and a node with an input: both stay.
      b.output(b.op('Add', [x, b.op('Neg', [b.op('Relu', [x])])]), 'z');
      b.output(b.op('Exp', [b.constant(tensor('float32', [2], [0.5, 1]), 'pair')]), 'w');
      const g = b.finish();
      const f = rowAlone(g, CC, 1);
      expect(ops(f)).toEqual(['Mul', 'Relu', 'Neg', 'Add', 'Exp']);
      const scale = f.nodes[0]!.inputs[1]!;
      expect([scale.kind, scale.data!.data[0]]).toEqual(['const', 0.5]);
    });
  });

  describe('transpose of a transpose', () => {
    it('becomes one transpose by the composed permutation; three become one', () => {
      const b = new ModelBuilder('tt');
      const x = b.input('x', 'float32', [2, 3, 4, 5]);
      const t1 = b.op('Transpose', [b.op('Transpose', [x], { perm: [1, 0, 2, 3] })], { perm: [0, 2, 1, 3] });
      b.output(b.op('Relu', [t1]), 'y');
      const t3 = b.op('Transpose', [b.op('Transpose', [b.op('Transpose', [x], { perm: [3, 2, 1, 0] })], { perm: [0, 2, 1, 3] })], { perm: [1, 0, 3, 2] });
      b.output(t3, 'z');
      const g = b.finish();
      const f = rowAlone(g, TT, 3);
      expect(ops(f)).toEqual(['Transpose', 'Relu', 'Transpose']);
      const [a, c] = f.nodes.filter((n) => n.op === 'Transpose') as [Node, Node];
      expect(a.attrs['perm']).toEqual([1, 2, 0, 3]);
      expect(a.outputs[0]!.shape).toEqual([3, 4, 2, 5]);
      expect(c.outputs[0]!.name).toBe('z');
      expect(c.outputs[0]!.shape).toEqual(g.outputs[1]!.shape);
    });

    it('the identity permutation disappears', () => {
      const b = new ModelBuilder('id');
      const x = b.input('x', 'float32', [2, 3, 4, 5]);
      const r = b.op('Relu', [x]);
      b.output(b.op('Transpose', [b.op('Transpose', [r], { perm: [0, 2, 3, 1] })], { perm: [0, 3, 1, 2] }), 'y');
      b.output(b.op('Neg', [b.op('Transpose', [b.op('Transpose', [x], { perm: [0, 2, 1, 3] })], { perm: [0, 2, 1, 3] })]), 'z');
      const g = b.finish();
      const f = rowAlone(g, TT, 2);
      expect(ops(f)).toEqual(['Relu', 'Neg']);
      expect(f.outputs.map((o) => o.name)).toEqual(['y', 'z']);
      expect(f.nodes[1]!.inputs[0]).toBe(f.values.get('x'));
    });

    it('does not fire where the inner transpose is read elsewhere too', () => {
      const b = new ModelBuilder('shared');
      const x = b.input('x', 'float32', [2, 3, 4]);
      const inner = b.op('Transpose', [x], { perm: [1, 0, 2] });
      b.output(b.op('Transpose', [inner], { perm: [1, 0, 2] }), 'y');
      b.output(b.op('Neg', [inner]), 'z');
      rowAlone(b.finish(), TT, 0);
    });
  });

  describe('cast to its own type', () => {
    it('goes; a cast to another type stays', () => {
      const b = new ModelBuilder('cast');
      const x = b.input('x', 'float32', [2, 3]);
      const same = b.op('Cast', [b.op('Relu', [x])], { to: 1 });
      const up = b.op('Cast', [same], { to: 11 });
      const down = b.op('Cast', [up], { to: 1 });
      b.output(b.op('Add', [down, b.op('Cast', [x], { to: 1 })]), 'y');
      b.output(b.op('Cast', [x], { to: 1 }), 'z');
      const g = b.finish();
      const f = rowAlone(g, CAST, 3);
      expect(ops(f)).toEqual(['Relu', 'Cast', 'Cast', 'Add', 'Identity']);
      expect(f.nodes.filter((n) => n.op === 'Cast').map((n) => n.outputs[0]!.dtype)).toEqual(['float64', 'float32']);
      // z was Cast(x) of the input: an Identity keeps the output's name.
      expect(f.outputs.map((o) => o.name)).toEqual(['y', 'z']);
    });
  });

  describe('kᵀ through [B·H, T, Dh]', () => {
    const B = 2, H = 4, Hkv = 2, T = 5, Dh = 3;
    /** PyTorch's SDPA decomposition of kᵀ: Reshape to [B·H, T, Dh], Transpose [0, 2, 1], Reshape to [B, H, Dh, T]. */
    const viaRows = (b: ModelBuilder, k: Value, dh2 = Dh, h2 = H): Value =>
      b.op('Reshape', [b.op('Transpose', [b.op('Reshape', [k], { shape: [B * H, T, Dh] })], { perm: [0, 2, 1] })], { shape: [B, h2, dh2, T] });

    it('from k heads [B, H, T, Dh]: one transpose of the last two axes', () => {
      const b = new ModelBuilder('kt');
      const k = b.input('k', 'float32', [B, H, T, Dh]);
      b.output(b.op('Relu', [viaRows(b, k)]), 'y');
      const f = rowAlone(b.finish(), KT, 1);
      expect(ops(f)).toEqual(['Transpose', 'Relu']);
      expect(f.nodes[0]!.attrs['perm']).toEqual([0, 1, 3, 2]);
      expect(f.nodes[0]!.inputs[0]!.name).toBe('k');
      expect(f.nodes[0]!.outputs[0]!.shape).toEqual([B, H, Dh, T]);
    });

    it('from a grouped-query expand [B, Hkv, r, T, Dh]: the heads reshaped, then transposed', () => {
      const b = new ModelBuilder('gqa');
      const k = b.input('k', 'float32', [B, Hkv, T, Dh]);
      const e = b.op('Expand', [b.op('Unsqueeze', [k], { axes: [2] })], { shape: [B, Hkv, H / Hkv, T, Dh] });
      b.output(viaRows(b, e), 'y');
      const f = rowAlone(b.finish(), KT, 1);
      expect(ops(f)).toEqual(['Unsqueeze', 'Expand', 'Reshape', 'Transpose']);
      expect(f.nodes[2]!.outputs[0]!.shape).toEqual([B, H, T, Dh]);
      expect(f.outputs[0]!.name).toBe('y');
    });

    it('does not fire on a reshape that does not give k\'s heads back, or a transpose of other axes', () => {
      const b = new ModelBuilder('not');
      const k = b.input('k', 'float32', [B, H, T, Dh]);
      b.output(viaRows(b, b.op('Relu', [k]), Dh * 2, H / 2), 'y'); // [B, H/2, 2·Dh, T]: the same elements, not kᵀ
      const rows = b.op('Reshape', [b.op('Neg', [k])], { shape: [B * H, T, Dh] });
      b.output(b.op('Reshape', [b.op('Transpose', [rows], { perm: [1, 0, 2] })], { shape: [B, H, T, Dh] }), 'z');
      rowAlone(b.finish(), KT, 0);
    });
  });

  describe('scale out of the scores product', () => {
    const B = 2, H = 2, T = 4, Dh = 4;
    /** softmax((q·a)(kᵀ·c)) · v, with the factors as given (null: none). */
    function scaled(a: number | null, c: number | null, o: { aFirst?: boolean; reader?: 'softmax' | 'relu' | 'masked-softmax' } = {}): Graph {
      const b = new ModelBuilder('scale');
      const q = b.input('q', 'float32', [B, H, T, Dh]), kt = b.input('kt', 'float32', [B, H, Dh, T]), v = b.input('v', 'float32', [B, H, T, Dh]);
      const by = (x: Value, s: number | null): Value => (s === null ? x : o.aFirst ? b.op('Mul', [b.scalar(s), x]) : b.op('Mul', [x, b.scalar(s)]));
      const s = b.op('MatMul', [by(q, a), by(kt, c)]);
      const reader = o.reader ?? 'softmax';
      if (reader === 'relu') b.output(b.op('Relu', [s]), 'y');
      else {
        const m = reader === 'masked-softmax' ? b.op('Where', [b.constant(lowerTriangle(T), 'mask'), s, b.scalar(-1e9)]) : s;
        b.output(b.op('MatMul', [b.op('Softmax', [m], { axis: -1 }), v]), 'y');
      }
      return b.finish();
    }
    const scaleOf = (f: Graph): number => {
      const mul = f.nodes.find((n) => n.op === 'Mul')!;
      expect(mul.inputs[0]!.producer!.op).toBe('MatMul');
      return mul.inputs[1]!.data!.data[0]!;
    };

    it('√scale on q and on kᵀ: one scale on the scores', () => {
      const r = Math.sqrt(1 / Math.sqrt(Dh));
      const f = rowAlone(scaled(r, r), SCALE, 1);
      expect(ops(f)).toEqual(['MatMul', 'Mul', 'Softmax', 'MatMul']);
      expect(scaleOf(f)).toBeCloseTo(0.5, 6);
      expect(f.nodes[0]!.inputs.map((x) => x!.name)).toEqual(['q', 'kt']);
    });

    it('on one side, the constant first, through a mask before the softmax', () => {
      expect(scaleOf(rowAlone(scaled(0.25, null), SCALE, 1))).toBe(0.25);
      expect(scaleOf(rowAlone(scaled(null, 0.5, { aFirst: true }), SCALE, 1))).toBe(0.5);
      expect(scaleOf(rowAlone(scaled(0.5, 0.5, { reader: 'masked-softmax' }), SCALE, 1))).toBe(0.25);
    });

    it('does not fire on a MatMul that does not feed a Softmax, nor without a Mul to pull', () => {
      rowAlone(scaled(0.5, 0.5, { reader: 'relu' }), SCALE, 0);
      rowAlone(scaled(null, null), SCALE, 0);
    });

    it('does not pull a factor that is not a constant scalar, or a scaled operand read elsewhere', () => {
      const b = new ModelBuilder('odd');
      const q = b.input('q', 'float32', [B, H, T, Dh]), kt = b.input('kt', 'float32', [B, H, Dh, T]), v = b.input('v', 'float32', [B, H, T, Dh]);
      const w = b.param('w', [Dh], { normal: 1 });
      const sm = (s: Value): Value => b.op('MatMul', [b.op('Softmax', [s], { axis: -1 }), v]);
      b.output(sm(b.op('MatMul', [b.op('Mul', [q, w]), kt])), 'y1'); // a learned per-feature scale
      b.output(sm(b.op('MatMul', [b.op('Mul', [q, b.constant(tensor('float32', [Dh], [1, 2, 3, 4]), 'vec')]), kt])), 'y2');
      const qs = b.op('Mul', [q, b.scalar(0.5)]);
      b.output(sm(b.op('MatMul', [qs, kt])), 'y3');
      b.output(b.op('Neg', [qs]), 'y4'); // qs read twice
      rowAlone(b.finish(), SCALE, 0);
    });
  });
});

// --- attentionFusion on exporter spellings ------------------------------------------------------

/** Fuses a copy of `g`: `fused` attentions, the copy valid and computing what `g` does. */
function fusion(g: Graph, fused: number): { f: Graph; rep: AttentionReport } {
  const f = cloneGraph(g);
  const rep = attentionFusion(f);
  validateGraph(f);
  expect(rep.fused).toBe(fused);
  expect(count(f, 'FusedAttention')).toBe(fused);
  if (fused) expect(rep.unfused).toEqual([]);
  sameOutputs(g, f, 11);
  return { f, rep };
}

const rulesOf = (rep: AttentionReport): Record<string, number> => Object.fromEntries(rep.rules);

describe('attentionFusion: the SDPA decomposition with grouped-query K/V and rotary after the head split', () => {
  const B = 2, T = 5, H = 4, Hkv = 2, Dh = 4, D = H * Dh, r = H / Hkv;

  /** `vAlsoRead`: the Unsqueeze of v's heads is a graph output too, so the repetition cannot be dropped. */
  function sdpa(mask?: 'causal', vAlsoRead = false): Graph {
    const b = new ModelBuilder('sdpa', { seed: 1 });
    const x = b.input('x', 'float32', [B, T, D]);
    const proj = (name: string, out: number) => b.op('MatMul', [x, b.param(name, [D, out], { normal: 0.3 })]);
    const heads = (t: Value, h: number) => b.op('Transpose', [b.op('Reshape', [t], { shape: [B, T, h, Dh] })], { perm: [0, 2, 1, 3] });
    // Rotary on q and k heads: x·cos + rotate_half(x)·sin, tables constant [1, 1, T, Dh].
    const cos = tensor('float32', [1, 1, T, Dh]), sin = tensor('float32', [1, 1, T, Dh]);
    for (let p = 0; p < T; p++) for (let j = 0; j < Dh; j++) {
      const a = p / 100 ** ((j % (Dh / 2)) / (Dh / 2));
      cos.data[p * Dh + j] = Math.cos(a);
      sin.data[p * Dh + j] = Math.sin(a);
    }
    const [c, s] = [b.constant(cos, 'cos'), b.constant(sin, 'sin')];
    const rope = (h: Value) => {
      const x1 = b.op('Slice', [h], { starts: [0], ends: [Dh / 2], axes: [-1] }), x2 = b.op('Slice', [h], { starts: [Dh / 2], ends: [Dh], axes: [-1] });
      return b.op('Add', [b.op('Mul', [h, c]), b.op('Mul', [b.op('Concat', [b.op('Neg', [x2]), x1], { axis: -1 }), s])]);
    };
    const q = rope(heads(proj('wq', D), H)), k = rope(heads(proj('wk', Hkv * Dh), Hkv)), v = heads(proj('wv', Hkv * Dh), Hkv);
    // repeat_kv: Unsqueeze, Expand to [B, Hkv, r, T, Dh]; K goes to [B·H, T, Dh] rows straight from the expand.
    const expand = (t: Value, read = false) => {
      const u = b.op('Unsqueeze', [t], { axes: [2] });
      if (read) b.output(u, 'v_unsqueezed');
      return b.op('Expand', [u], { shape: [B, Hkv, r, T, Dh] });
    };
    const kt = b.op('Reshape', [b.op('Transpose', [b.op('Reshape', [expand(k)], { shape: [B * H, T, Dh] })], { perm: [0, 2, 1] })], { shape: [B, H, Dh, T] });
    const vh = b.op('Reshape', [expand(v, vAlsoRead)], { shape: [B, H, T, Dh] });
    const sq = Math.sqrt(1 / Math.sqrt(Dh));
    let scores = b.op('MatMul', [b.op('Mul', [q, b.scalar(sq)]), b.op('Mul', [kt, b.scalar(sq)])]);
    if (mask) scores = b.op('Add', [scores, b.constant(causalAdd(T, -Infinity), 'mask')]);
    const y = b.op('MatMul', [b.op('Softmax', [scores], { axis: -1 }), vh]);
    const merged = b.op('Reshape', [b.op('Transpose', [y], { perm: [0, 2, 1, 3] })], { shape: [B, T, D] });
    b.output(b.op('MatMul', [merged, b.param('wo', [D, D], { normal: 0.3 })]), 'out');
    return b.finish();
  }

  it('fuses, with the canonical rows it took, reading the K/V heads shared instead of their repetition', () => {
    const { f, rep } = fusion(sdpa(), 1);
    expect(rulesOf(rep)).toEqual({
      'kᵀ through [B·H, T, Dh]': 1,
      'scale out of the scores product': 1,
      attention: 1,
      'grouped-query K/V heads read shared': 1,
    });
    const n = f.nodes.find((x) => x.op === 'FusedAttention')!;
    expect([n.attrs['heads'], n.attrs['kv_heads']]).toEqual([H, Hkv]);
    expect(n.attrs['causal']).toBe(0);
    expect(n.attrs['scale'] as number).toBeCloseTo(1 / Math.sqrt(Dh), 6);
    expect(n.inputs.map((x) => x!.shape)).toEqual([[B, T, D], [B, T, Hkv * Dh], [B, T, Hkv * Dh]]);
    // No repetition left: neither the Expand nor the Unsqueeze before it.
    expect(count(f, 'Softmax') + count(f, 'Expand') + count(f, 'Unsqueeze')).toBe(0);
  });

  it('copies the repeated heads where the repetition is read elsewhere too, and says so', () => {
    const { f, rep } = fusion(sdpa(undefined, true), 1);
    expect(rulesOf(rep)['attention with repeated K/V heads (copied)']).toBe(1);
    expect(rulesOf(rep)['grouped-query K/V heads read shared']).toBeUndefined();
    const n = f.nodes.find((x) => x.op === 'FusedAttention')!;
    expect(n.attrs['kv_heads']).toBeUndefined();
    expect(n.inputs.map((x) => x!.shape)).toEqual([[B, T, D], [B, T, D], [B, T, D]]);
  });

  it('fuses causal with an additive −inf mask too', () => {
    const { f } = fusion(sdpa('causal'), 1);
    expect(f.nodes.find((x) => x.op === 'FusedAttention')!.attrs['causal']).toBe(1);
  });
});

/** The additive causal mask [1, 1, T, T]: 0 on and below the diagonal, `masked` above. */
function causalAdd(T: number, masked: number, shape: number[] = [1, 1, T, T]): Tensor {
  const t = tensor('float32', shape);
  for (let i = 0; i < t.data.length; i++) t.data[i] = i % T <= Math.floor(i / T) % T ? 0 : masked;
  return t;
}

describe('attentionFusion on hand-built spellings', () => {
  const B = 2, T = 4, H = 2, Dh = 4, D = H * Dh;
  interface Spell {
    /** The scaled scores [B, H, T, T] → what the softmax reads. */
    scores?: (b: ModelBuilder, s: Value) => Value;
    /** The softmax result → what multiplies V. */
    probs?: (b: ModelBuilder, p: Value) => Value;
    /** More model inputs, by name. */
    inputs?: Record<string, number[]>;
    /** Something more on the finished graph (another reader of a value, say). */
    more?: (b: ModelBuilder) => void;
    /** No 1/√Dh on q·kᵀ. */
    unscaled?: boolean;
  }
  /** Head splits of q, k, v [B, T, D] inputs, q·kᵀ·(1/√Dh), softmax, ·V, heads merged. */
  function attn(sp: Spell = {}): Graph {
    const b = new ModelBuilder('attn');
    const [q, k, v] = ['q', 'k', 'v'].map((n) => b.input(n, 'float32', [B, T, D])) as [Value, Value, Value];
    for (const [n, s] of Object.entries(sp.inputs ?? {})) b.input(n, 'float32', s);
    const split = (t: Value, perm: number[]) => b.op('Transpose', [b.op('Reshape', [t], { shape: [0, 0, H, Dh] })], { perm });
    const s = b.scope('attn', () => {
      const qk = b.op('MatMul', [split(q, [0, 2, 1, 3]), split(k, [0, 2, 3, 1])]);
      return sp.unscaled ? qk : b.op('Mul', [qk, b.scalar(1 / Math.sqrt(Dh))]);
    });
    const p = b.scope('attn', () => b.op('Softmax', [sp.scores ? sp.scores(b, s) : s], { axis: -1 }));
    const y = b.op('MatMul', [sp.probs ? sp.probs(b, p) : p, split(v, [0, 2, 1, 3])]);
    b.output(b.op('Reshape', [b.op('Transpose', [y], { perm: [0, 2, 1, 3] })], { shape: [0, 0, D] }), 'out');
    sp.more?.(b);
    return b.finish();
  }
  const addConst = (t: Tensor, name = 'mask') => (b: ModelBuilder, s: Value) => b.op('Add', [s, b.constant(t, name)]);
  const fusedAttrs = (f: Graph) => f.nodes.find((n) => n.op === 'FusedAttention')!.attrs;

  it('the plain spelling fuses, non-causal', () => {
    const { f, rep } = fusion(attn(), 1);
    expect(rulesOf(rep)).toEqual({ attention: 1 });
    expect(fusedAttrs(f)).toEqual({ heads: H, scale: Math.fround(1 / Math.sqrt(Dh)), causal: 0 });
    expect(ops(f)).toEqual(['FusedAttention']);
  });

  it('the NaN guard Where(IsNaN(p), 0, p) goes with the pattern', () => {
    const g = attn({ probs: (b, p) => b.op('Where', [b.op('IsNaN', [p]), b.scalar(0), p]) });
    const { f } = fusion(g, 1);
    expect(ops(f)).toEqual(['FusedAttention']);
  });

  it.each([['−inf', -Infinity], ['finfo(float32).min', FINFO_MIN], ['−1e4', -1e4]])('an additive causal mask of %s', (_, masked) => {
    const { f } = fusion(attn({ scores: addConst(causalAdd(T, masked)) }), 1);
    expect(fusedAttrs(f)['causal']).toBe(1);
    expect(ops(f)).toEqual(['FusedAttention']);
    expect(f.constants()).toEqual([]); // the mask went with the pattern
  });

  it('a mask applied after the scale keeps its masked value; one applied before a scale is scaled with the scores', () => {
    // (q·kᵀ/√Dh) + mask(−1e4): the masked scores are −1e4.
    expect(fusedAttrs(fusion(attn({ scores: addConst(causalAdd(T, -1e4)) }), 1).f)['causal']).toBe(1);
    // (q·kᵀ + mask(−1e9))·0.01: masked scores of −1e7, still far below.
    const before = (masked: number, by: number) => (b: ModelBuilder, s: Value) => b.op('Mul', [b.op('Add', [s, b.constant(causalAdd(T, masked), 'mask')]), b.scalar(by)]);
    const { f } = fusion(attn({ unscaled: true, scores: before(-1e9, 0.01) }), 1);
    expect(fusedAttrs(f)).toEqual({ heads: H, scale: Math.fround(0.01), causal: 1 });
  });

  it('an additive causal mask in front of the scores, [T, T]-shaped', () => {
    const front = (b: ModelBuilder, s: Value) => b.op('Add', [b.constant(causalAdd(T, FINFO_MIN, [T, T]), 'mask'), s]);
    expect(fusedAttrs(fusion(attn({ scores: front }), 1).f)['causal']).toBe(1);
  });

  it('an all-zero additive mask adds nothing: fused non-causal; beside a causal Where it is not a second mask', () => {
    const zeros = tensor('float32', [B, 1, T, T]);
    expect(fusedAttrs(fusion(attn({ scores: addConst(zeros) }), 1).f)['causal']).toBe(0);
    const both = (b: ModelBuilder, s: Value) => b.op('Where', [b.constant(lowerTriangle(T), 'keep'), b.op('Add', [s, b.constant(zeros, 'zeros')]), b.scalar(-1e9)]);
    expect(fusedAttrs(fusion(attn({ scores: both }), 1).f)['causal']).toBe(1);
  });

  it('softmax in float32 through Casts in a float32 graph', () => {
    const g = attn({ scores: (b, s) => b.op('Cast', [s], { to: 1 }), probs: (b, p) => b.op('Cast', [p], { to: 1 }) });
    const { f, rep } = fusion(g, 1);
    expect(rulesOf(rep)).toEqual({ 'cast to its own type': 2, attention: 1 });
    expect(ops(f)).toEqual(['FusedAttention']);
  });

  /** attentionFusion leaves the one Softmax, with this reason; the graph still computes the same. */
  function unfused(sp: Spell, reason: string | RegExp): void {
    const g = attn(sp);
    const { f, rep } = fusion(g, 0);
    expect(count(f, 'Softmax')).toBe(1);
    const sm = f.nodes.find((n) => n.op === 'Softmax')!;
    expect(rep.unfused.length).toBe(1);
    expect(rep.unfused[0]!.node).toBe(sm.name);
    expect(rep.unfused[0]!.scope).toBe('/attn/');
    if (typeof reason === 'string') expect(rep.unfused[0]!.reason).toBe(reason);
    else expect(rep.unfused[0]!.reason).toMatch(reason);
  }

  it('a causal sliding-window mask, as Where or as an added constant, becomes the fused node\'s window', () => {
    const band = tensor('bool', [T, T], Array.from({ length: T * T }, (_, i) => {
      const r = Math.floor(i / T), c = i % T;
      return c <= r && c > r - 2 ? 1 : 0;
    }));
    const add = tensor('float32', [1, 1, T, T], [...band.data].map((k) => (k ? 0 : -Infinity)));
    for (const sp of [{ scores: (b: ModelBuilder, s: Value) => b.op('Where', [b.constant(band, 'window'), s, b.scalar(-1e9)]) }, { scores: addConst(add) }]) {
      const { f } = fusion(attn(sp), 1);
      const n = f.nodes.find((x) => x.op === 'FusedAttention')!;
      expect([n.attrs['causal'], n.attrs['window']]).toEqual([1, 2]);
    }
  });

  describe('a bias added to the scores becomes the fused node\'s bias input', () => {
    /** The fused node's bias input, and the ops between it and what the model added. */
    const biasOf = (f: Graph): Value => f.nodes.find((n) => n.op === 'FusedAttention')!.inputs[3]!;

    it('a constant that is not a mask (ALiBi), and a mask value not very negative', () => {
      const alibi = tensor('float32', [1, H, T, T], Array.from({ length: H * T * T }, (_, i) => ((i % 7) - 3) / 10));
      const { f } = fusion(attn({ scores: addConst(alibi, 'alibi') }), 1);
      expect(biasOf(f).name).toBe('/attn/alibi');
      expect(fusedAttrs(f)['causal']).toBe(0);
      // −100 gives weight e^-100 ≈ 4e-44, not zero: it is a bias, computed as the model computes it.
      expect(biasOf(fusion(attn({ scores: addConst(causalAdd(T, -100)) }), 1).f).name).toBe('/attn/mask');
    });

    it('a trained parameter (T5\'s relative position bias, as the exporter folds it), with its gradient', () => {
      const { f } = fusion(attn({ scores: (b, s) => b.op('Add', [s, b.param('rel_bias', [1, H, T, T], { normal: 1 })]) }), 1);
      expect(biasOf(f).kind).toBe('param');
    });

    it('a parameter plus a causal mask (T5\'s decoder): the mask becomes causal, the parameter the bias', () => {
      const g = attn({ scores: (b, s) => b.op('Add', [s, b.op('Add', [b.param('rel_bias', [1, H, T, T], { normal: 1 }), b.constant(causalAdd(T, FINFO_MIN), 'causal')])]) });
      const { f } = fusion(g, 1);
      expect(biasOf(f).kind).toBe('param');
      expect(fusedAttrs(f)['causal']).toBe(1);
    });

    it('a bias added before the scale is scaled by it; a lower-rank one gets leading axes', () => {
      const g = attn({ unscaled: true, scores: (b, s) => b.op('Mul', [b.op('Add', [s, b.param('rel_bias', [H, T, T], { normal: 1 })]), b.scalar(0.25)]) });
      const { f } = fusion(g, 1);
      expect(fusedAttrs(f)['scale']).toBe(0.25);
      const reshape = biasOf(f).producer!;
      expect([reshape.op, reshape.inputs[0]!.producer!.op]).toEqual(['Reshape', 'Mul']);
      expect(biasOf(f).shape).toEqual([1, H, T, T]);
    });

    it('an additive key-padding mask computed from a model input, expanded over the queries', () => {
      const fromInput = (b: ModelBuilder, s: Value) => b.op('Add', [s, b.op('Mul', [b.op('Sub', [b.scalar(1), b.graph.values.get('attention_mask')!]), b.scalar(-1e9)])]);
      const { f } = fusion(attn({ inputs: { attention_mask: [B, 1, 1, T] }, scores: fromInput }), 1);
      expect(biasOf(f).producer!.op).toBe('Expand');
      expect(biasOf(f).shape).toEqual([B, 1, T, T]);
    });
  });

  describe('the reasons attentions stay unfused', () => {
    it('a band that is not one window wide (it narrows further down)', () => {
      // Row i keeps keys i − 1 ≤ j ≤ i in the first rows, only j = i in the last: no single window.
      const narrowing = tensor('bool', [T, T], Array.from({ length: T * T }, (_, i) => {
        const r = Math.floor(i / T), c = i % T;
        return c <= r && c > r - (r < T - 1 ? 2 : 1) ? 1 : 0;
      }));
      unfused({ scores: (b, s) => b.op('Where', [b.constant(narrowing, 'window'), s, b.scalar(-1e9)]) }, 'a mask that is neither causal nor a sliding window');
    });

    it('a mask whose masked value a later scale brings close to the other scores', () => {
      // (q·kᵀ + mask(−1e4))·1e-3: the masked scores are about −10, which still get softmax weight.
      const g = attn({ unscaled: true, scores: (b, s) => b.op('Mul', [b.op('Add', [s, b.constant(causalAdd(T, -1e4), 'mask')]), b.scalar(1e-3)]) });
      const rep = attentionFusion(cloneGraph(g));
      expect(rep.fused).toBe(0);
      expect(rep.unfused[0]!.reason).toMatch(/^masked scores of -10(\.\d+)? are not far enough below the others to get zero weight$/);
      // The same with a Where and a masked value of −1e4.
      const where = attn({ unscaled: true, scores: (b, s) => b.op('Mul', [b.op('Where', [b.constant(lowerTriangle(T), 'keep'), s, b.scalar(-1e4)]), b.scalar(1e-3)]) });
      expect(attentionFusion(cloneGraph(where)).unfused[0]!.reason).toMatch(/^masked scores of -10(\.\d+)? are not far enough/);
    });

    it('a bool mask computed from a model input names the input', () => {
      const asWhere = (b: ModelBuilder, s: Value) => b.op('Where', [b.op('Cast', [b.graph.values.get('attention_mask')!], { to: 9 }), s, b.scalar(-1e9)]);
      unfused({ inputs: { attention_mask: [B, 1, 1, T] }, scores: asWhere }, "the mask is computed from the model input 'attention_mask' (a key-padding mask?): not fused yet");
    });

    it('a scale that is a parameter', () => {
      unfused({ scores: (b, s) => b.op('Mul', [s, b.param('temperature', [], 'ones')]) }, "the scale 'attn.temperature' is a trained parameter (a learned bias): not fused yet (the fused kernel takes no bias)");
      unfused({ scores: (b, s) => b.op('Div', [s, b.param('tau', [], 'ones')]) }, /^the scale 'attn.tau' is a trained parameter/);
    });

    it('two masks', () => {
      const two = (b: ModelBuilder, s: Value) => b.op('Add', [b.op('Add', [s, b.constant(causalAdd(T, -Infinity), 'm1')]), b.constant(causalAdd(T, FINFO_MIN), 'm2')]);
      unfused({ scores: two }, 'two masks on the scores');
    });

    it('scores read twice', () => {
      const twice = (b: ModelBuilder) => b.output(b.op('ReduceSum', [b.graph.nodes.find((n) => n.op === 'MatMul')!.outputs[0]!], { keepdims: 0 }), 'extra');
      unfused({ more: twice }, 'the scores are not a product q·kᵀ read only by the softmax');
      // The scaled scores read twice.
      const scaledTwice = (b: ModelBuilder) => b.output(b.op('ReduceSum', [b.graph.nodes.find((n) => n.op === 'Mul')!.outputs[0]!], { keepdims: 0 }), 'extra');
      unfused({ more: scaledTwice }, 'the scores are not a product q·kᵀ read only by the softmax');
    });
  });
});
