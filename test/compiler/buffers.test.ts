// freezeBuffers (compiler/passes/buffers.ts) on hand-built graphs: which float initializers it makes
// constants by the role they play (attention masks, rotary cos/sin tables), which look-alikes stay
// trained parameters, what it reports, and that training then asks no gradient of a frozen buffer.
import { describe, expect, it } from 'vitest';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { MASKED, freezeBuffers, sourceParam } from '../../compiler/passes/buffers.js';
import { applyRules } from '../../compiler/passes/rewrite.js';
import { rotaryRules } from '../../compiler/passes/rotary.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { cloneGraph } from '../../src/core/ir/clone.js';
import type { Graph, Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { validateGraph } from '../../src/core/ir/validate.js';
import { maxRelError } from '../helpers/compare.js';
import { randomFeeds } from '../helpers/inputs.js';

const B = 2, H = 2, T = 4, Dh = 4, D = H * Dh, MAXT = 6;
const FINFO_MIN = -3.4028234663852886e38;
const END = Number.MAX_SAFE_INTEGER; // HF exports INT64_MAX as the end of x[..., h:]

/** Freezes a copy of `g`; checks the copy, its parameters and constants, and that it computes the same. */
function frozenCopy(g: Graph, roles: [string, string][]): Graph {
  const f = cloneGraph(g);
  const frozen = freezeBuffers(f);
  validateGraph(f);
  expect(frozen.map((x) => [x.name, x.role])).toEqual(roles);
  for (const [name] of roles) {
    const was = g.values.get(name)!, now = f.values.get(name)!;
    expect(was.kind, name).toBe('param');
    expect(now.kind, name).toBe('const');
    expect(now.shape).toEqual(was.shape);
    expect(now.dtype).toBe(was.dtype);
    expect([...now.data!.data]).toEqual([...was.data!.data]);
    expect(now.users.length).toBe(was.users.length);
  }
  const frozenNames = new Set(roles.map(([n]) => n));
  expect(f.params().map((p) => p.name).sort()).toEqual(g.params().map((p) => p.name).filter((n) => !frozenNames.has(n)).sort());
  const feeds = randomFeeds(g, B, 5);
  const want = runGraph(g, feeds), got = runGraph(f, feeds);
  for (const [k, t] of want) expect(maxRelError(got.get(k)!, t), k).toBe(0);
  return f;
}

/** The gradients the training graph computes: a frozen buffer gets none, a parameter does. */
function gradNames(g: Graph): string[] {
  return [...buildTrainingGraph(g, { loss: { kind: 'mse' } }).grads.keys()].sort();
}

// --- rotary tables ------------------------------------------------------------------------------

/** HF's cos/sin tables [MAXT, Dh]: cat(freqs, freqs) of position × inverse frequency. */
function tables(): { cos: Tensor; sin: Tensor } {
  const cos = tensor('float32', [MAXT, Dh]), sin = tensor('float32', [MAXT, Dh]);
  for (let p = 0; p < MAXT; p++) {
    for (let j = 0; j < Dh; j++) {
      const f = p / 10000 ** ((2 * (j % (Dh / 2))) / Dh);
      cos.data[p * Dh + j] = Math.cos(f);
      sin.data[p * Dh + j] = Math.sin(f);
    }
  }
  return { cos, sin };
}

type Read = 'slice' | 'gather' | 'reshape' | 'direct';
interface RotaryOpts {
  /** Add(rot·sin, x·cos) instead of Add(x·cos, rot·sin). */
  addSwap?: boolean;
  /** sin·rot instead of rot·sin. */
  sinFirst?: boolean;
  /** cos·x instead of x·cos. */
  cosFirst?: boolean;
  read?: Read;
  cos?: Tensor; sin?: Tensor;
  /** One parameter for both tables. */
  same?: boolean;
  /** Rotary on k too (the tables read twice). */
  both?: boolean;
}

/** q (and k) heads of x·W with HF's rotary: x·cos + rotate_half(x)·sin, rotate_half by Slice, Neg, Concat. */
function rotaryGraph(o: RotaryOpts = {}): Graph {
  const b = new ModelBuilder('rope');
  const x = b.input('x', 'float32', [B, T, D]);
  const t = tables();
  const cosData = o.cos ?? t.cos, sinData = o.sin ?? t.sin;
  const read = o.read ?? 'slice';
  const asParam = (name: string, data: Tensor): Value => {
    if (read === 'reshape') return b.graph.addParam(name, tensor('float32', [T * Dh], [...data.data].slice(0, T * Dh)));
    if (read === 'direct') return b.graph.addParam(name, tensor('float32', [1, 1, T, Dh], [...data.data].slice(0, T * Dh)));
    return b.graph.addParam(name, data);
  };
  const cosP = asParam('rotary.cos_cached', cosData);
  const sinP = o.same ? cosP : asParam('rotary.sin_cached', sinData);
  const pos = b.constant(tensor('int64', [1, T], [0, 1, 2, 3]), 'position_ids');
  // [1, 1, T, Dh], as the model reads its buffer.
  const view = (p: Value): Value => {
    switch (read) {
      case 'slice': return b.op('Unsqueeze', [b.op('Slice', [p], { starts: [0], ends: [T], axes: [0] })], { axes: [0, 1] });
      case 'gather': return b.op('Unsqueeze', [b.op('Gather', [p, pos], { axis: 0 })], { axes: [1] });
      case 'reshape': return b.op('Reshape', [p], { shape: [1, 1, T, Dh] });
      case 'direct': return p;
    }
  };
  const cos = view(cosP), sin = view(sinP);
  const heads = (w: string): Value => b.op('Transpose', [b.op('Reshape', [b.op('MatMul', [x, b.param(w, [D, D], { normal: 0.3 })])], { shape: [B, T, H, Dh] })], { perm: [0, 2, 1, 3] });
  const rope = (h: Value): Value => {
    const x1 = b.op('Slice', [h], { starts: [0], ends: [Dh / 2], axes: [-1] });
    const x2 = b.op('Slice', [h], { starts: [Dh / 2], ends: [END], axes: [-1] });
    const rot = b.op('Concat', [b.op('Neg', [x2]), x1], { axis: -1 });
    const xc = o.cosFirst ? b.op('Mul', [cos, h]) : b.op('Mul', [h, cos]);
    const rs = o.sinFirst ? b.op('Mul', [sin, rot]) : b.op('Mul', [rot, sin]);
    return o.addSwap ? b.op('Add', [rs, xc]) : b.op('Add', [xc, rs]);
  };
  const q = rope(heads('wq'));
  const k = o.both ? rope(heads('wk')) : heads('wk');
  b.output(b.op('MatMul', [q, b.op('Transpose', [k], { perm: [0, 1, 3, 2] })]), 'scores');
  return b.finish();
}

const ROTARY: [string, string][] = [['rotary.cos_cached', 'rotary cos table'], ['rotary.sin_cached', 'rotary sin table']];

describe('freezeBuffers: rotary tables', () => {
  const orders = [false, true].flatMap((a) => [false, true].flatMap((s) => [false, true].map((c) => [a, s, c] as const)));
  it.each(orders)('HF rotate_half, Add swapped %s, sin first %s, cos first %s', (addSwap, sinFirst, cosFirst) => {
    const g = rotaryGraph({ addSwap, sinFirst, cosFirst });
    const f = frozenCopy(g, ROTARY);
    expect(gradNames(f)).toEqual(['wk', 'wq']);
    expect(gradNames(g)).toEqual(['rotary.cos_cached', 'rotary.sin_cached', 'wk', 'wq']);
  });

  it.each(['slice', 'gather', 'reshape', 'direct'] as const)('tables read through moves: %s', (read) => {
    frozenCopy(rotaryGraph({ read }), ROTARY);
  });

  it('tables read by q and k are frozen once each', () => {
    const f = frozenCopy(rotaryGraph({ both: true, read: 'direct' }), ROTARY);
    expect(f.constants().filter((c) => c.name.startsWith('rotary.')).map((c) => c.users.length)).toEqual([2, 2]);
    expect(gradNames(f)).toEqual(['wk', 'wq']);
  });

  it('sourceParam reads through moves and Gather\'s data input, and stops at anything that computes', () => {
    const g = rotaryGraph({ read: 'gather' });
    const mul = g.nodes.find((n) => n.op === 'Mul' && n.inputs[1]!.producer?.op === 'Unsqueeze')!;
    expect(sourceParam(mul.inputs[1])!.name).toBe('rotary.cos_cached');
    expect(sourceParam(mul.outputs[0])).toBeNull();
    expect(sourceParam(g.values.get('x'))).toBeNull();
    expect(sourceParam(null)).toBeNull();
  });

  it('stay parameters: tables whose cos² + sin² is not 1, tables that are the same parameter', () => {
    const t = tables();
    const scaled = tensor('float32', t.cos.shape, [...t.cos.data].map((c) => 0.9 * c));
    for (const g of [rotaryGraph({ cos: scaled }), rotaryGraph({ same: true }), rotaryGraph({ cos: scaled, both: true, read: 'gather' })]) {
      frozenCopy(g, []);
      expect(gradNames(g).filter((n) => n.startsWith('rotary.'))).toEqual(g.values.has('rotary.sin_cached') ? ['rotary.cos_cached', 'rotary.sin_cached'] : ['rotary.cos_cached']);
    }
    // One entry off: sin(2) + 1e-3 makes cos² + sin² about 1 + 1.8e-3.
    const off = tensor('float32', t.sin.shape, [...t.sin.data].map((x, i) => (i === 2 * Dh ? x + 1e-3 : x)));
    frozenCopy(rotaryGraph({ sin: off }), []);
  });

  it('stays a parameter: a rotate_half that is not of the same x, or that slices unequal halves', () => {
    // x·cos + rotate_half(y)·sin with y ≠ x.
    const b = new ModelBuilder('other');
    const x = b.input('x', 'float32', [B, H, T, Dh]), y = b.input('y', 'float32', [B, H, T, Dh]);
    const t = tables();
    const cos = b.op('Reshape', [b.graph.addParam('cos', t.cos)], { shape: [1, 1, MAXT, Dh] });
    const sin = b.op('Reshape', [b.graph.addParam('sin', t.sin)], { shape: [1, 1, MAXT, Dh] });
    const cut = (v: Value) => b.op('Slice', [v], { starts: [0], ends: [T], axes: [2] });
    const rot = (h: Value, at: number) => b.op('Concat', [b.op('Neg', [b.op('Slice', [h], { starts: [at], ends: [END], axes: [-1] })]), b.op('Slice', [h], { starts: [0], ends: [at], axes: [-1] })], { axis: -1 });
    b.output(b.op('Add', [b.op('Mul', [x, cut(cos)]), b.op('Mul', [rot(y, Dh / 2), cut(sin)])]), 'a');
    b.output(b.op('Add', [b.op('Mul', [x, cut(cos)]), b.op('Mul', [rot(x, 1), cut(sin)])]), 'b');
    frozenCopy(b.finish(), []);
  });
});

// --- attention masks ----------------------------------------------------------------------------

const causal = (masked: number, shape: number[] = [1, 1, T, T]): Tensor => {
  const t = tensor('float32', shape);
  for (let i = 0; i < t.data.length; i++) {
    const r = Math.floor(i / T) % T, c = i % T;
    t.data[i] = c <= r ? 0 : masked;
  }
  return t;
};

interface MaskOpts {
  maskFirst?: boolean;
  /** What reads the masked scores: a Softmax (through a scale), or something else. */
  reader?: 'softmax' | 'scaled-softmax' | 'relu';
  batch?: number | string;
}

/** Scores q·kᵀ [B, H, T, T] of q·W, plus a parameter `mask`, softmax, times v. */
function maskGraph(mask: Tensor, o: MaskOpts = {}): Graph {
  const b = new ModelBuilder('mask');
  const bt = o.batch ?? B;
  const q = b.input('q', 'float32', [bt, H, T, Dh]), kt = b.input('kt', 'float32', [bt, H, Dh, T]), v = b.input('v', 'float32', [bt, H, T, Dh]);
  const s = b.op('Mul', [b.op('MatMul', [b.op('MatMul', [q, b.param('wq', [Dh, Dh], { normal: 0.5 })]), kt]), b.scalar(0.5)]);
  const m = b.graph.addParam('mask', mask);
  const added = o.maskFirst ? b.op('Add', [m, s]) : b.op('Add', [s, m]);
  const reader = o.reader ?? 'softmax';
  if (reader === 'relu') {
    b.output(b.op('Relu', [added]), 'y');
    return b.finish();
  }
  const p = b.op('Softmax', [reader === 'scaled-softmax' ? b.op('Div', [added, b.scalar(2)]) : added], { axis: -1 });
  b.output(b.op('MatMul', [p, v]), 'y');
  return b.finish();
}

const MASK: [string, string][] = [['mask', 'attention mask']];

describe('freezeBuffers: rotary angles (positions ⊗ inv_freq folded, cos and sin not)', () => {
  const S = 6, half = 3;
  /** angles [1, S, 2·half]: s · 10000^(−j/half) in both halves, as HF's rotary embedding makes them. */
  const angles = (f: (s: number, j: number) => number = (s, j) => s * 10000 ** (-j / half)): Tensor =>
    tensor('float32', [1, S, 2 * half], Array.from({ length: S * 2 * half }, (_, i) => f(Math.floor(i / (2 * half)), i % half)));
  const graph = (a: Tensor): Graph => {
    const b = new ModelBuilder('angles');
    const x = b.op('Mul', [b.input('x', 'float32', [B, S, 2 * half]), b.graph.addParam('w', tensor('float32', [2 * half], [0.5, 1, 1.5, 2, 2.5, 3]))]);
    const ang = b.graph.addParam('cat_1', a);
    b.output(b.op('Add', [b.op('Mul', [x, b.op('Cos', [ang])]), b.op('Mul', [x, b.op('Sin', [ang])])]), 'y');
    return b.finish();
  };

  it('an angle table read by Cos is frozen, named by its role, and gets no gradient', () => {
    const f = frozenCopy(graph(angles()), [['cat_1', 'rotary angles']]);
    expect(gradNames(f)).toEqual(['w']);
  });

  it('stay parameters: a table with a nonzero first row, halves that differ, rows not linear in the position', () => {
    for (const a of [
      angles((s, j) => (s + 1) * 10000 ** (-j / half)),
      tensor('float32', [1, S, 2 * half], Array.from({ length: S * 2 * half }, (_, i) => Math.floor(i / (2 * half)) * (i % (2 * half) + 1))),
      angles((s, j) => s * s * 10000 ** (-j / half)),
    ]) {
      const g = graph(a);
      frozenCopy(g, []);
      expect(gradNames(g)).toEqual(['cat_1', 'w']);
    }
  });
});

describe('freezeBuffers: rotary inverse frequencies (angles computed in the graph)', () => {
  const S = 5, Dh = 8, h = Dh / 2;
  /** HF's rotary: inv_freq [h] ⊗ positions, both halves, cos and sin, applied to x [B, H, S, Dh] heads. */
  const graph = (inv: number[], alsoRead = false): Graph => {
    const b = new ModelBuilder('rope');
    const x = b.op('Mul', [b.input('x', 'float32', [B, H, S, Dh]), b.graph.addParam('w', tensor('float32', [Dh], Array.from({ length: Dh }, (_, i) => 1 + i / 10)))]);
    const f = b.graph.addParam('rotary_emb.inv_freq', tensor('float32', [h], inv));
    const pos = b.constant(tensor('float32', [1, 1, S], Array.from({ length: S }, (_, i) => i)), 'positions');
    const freqs = b.op('Transpose', [b.op('MatMul', [b.op('Reshape', [f], { shape: [1, h, 1] }), pos])], { perm: [0, 2, 1] });
    const emb = b.op('Concat', [freqs, freqs], { axis: -1 });
    const cos = b.op('Unsqueeze', [b.op('Cos', [emb])], { axes: [1] }), sin = b.op('Unsqueeze', [b.op('Sin', [emb])], { axes: [1] });
    const x1 = b.op('Slice', [x], { starts: [0], ends: [h], axes: [-1] }), x2 = b.op('Slice', [x], { starts: [h], ends: [END], axes: [-1] });
    const rot = b.op('Concat', [b.op('Neg', [x2]), x1], { axis: -1 });
    let y = b.op('Add', [b.op('Mul', [x, cos]), b.op('Mul', [rot, sin])]);
    if (alsoRead) y = b.op('Mul', [y, b.op('ReduceSum', [f], { keepdims: 0 })]);
    b.output(y, 'y');
    return b.finish();
  };
  const geometric = Array.from({ length: h }, (_, i) => 10000 ** (-(2 * i) / Dh));

  it('frequencies only Cos and Sin read are frozen; the rotary row then sees constant tables and fuses', () => {
    const f = frozenCopy(graph(geometric), [['rotary_emb.inv_freq', 'rotary inverse frequencies']]);
    expect(gradNames(f)).toEqual(['w']);
    const fused = cloneGraph(f);
    expect(applyRules(fused, rotaryRules()).get('rotary embedding')).toBe(1);
    const feeds = randomFeeds(f, B, 9);
    expect(maxRelError(runGraph(fused, feeds).get('y')!, runGraph(f, feeds).get('y')!)).toBeLessThanOrEqual(1e-6);
  });

  it('stay parameters: frequencies also read by anything but Cos and Sin, values that are not one geometric series', () => {
    for (const g of [graph(geometric, true), graph([1, 0.5, 0.3, 0.1]), graph([2, 1, 0.5, 0.25])]) {
      frozenCopy(g, []);
      expect(gradNames(g)).toContain('rotary_emb.inv_freq');
    }
  });
});

describe('interleaved rotary (GPT-J\'s rotate_every_two)', () => {
  const S = 5, Dh = 8, h = Dh / 2;
  /** x·cos + rotate_every_two(x)·sin with cos and sin [1, 1, S, Dh] parameters, each angle repeated for its pair (or not). */
  const graph = (pairs = true): Graph => {
    const b = new ModelBuilder('gptj');
    const x = b.op('Mul', [b.input('x', 'float32', [B, H, S, Dh]), b.graph.addParam('w', tensor('float32', [Dh], Array.from({ length: Dh }, (_, i) => 1 + i / 10)))]);
    const angle = (s: number, d: number): number => s * 10000 ** (-(2 * (pairs ? Math.floor(d / 2) : d % h)) / Dh);
    const table = (f: (a: number) => number): Tensor => tensor('float32', [1, 1, S, Dh], Array.from({ length: S * Dh }, (_, i) => f(angle(Math.floor(i / Dh), i % Dh))));
    const cos = b.graph.addParam('cos', table(Math.cos)), sin = b.graph.addParam('sin', table(Math.sin));
    const odd = b.op('Slice', [x], { starts: [1], ends: [END], axes: [-1], steps: [2] }), even = b.op('Slice', [x], { starts: [0], ends: [END], axes: [-1], steps: [2] });
    const stacked = b.op('Concat', [b.op('Unsqueeze', [b.op('Neg', [odd])], { axes: [-1] }), b.op('Unsqueeze', [even], { axes: [-1] })], { axis: -1 });
    const rot = b.op('Reshape', [stacked], { shape: [B, H, S, Dh] });
    b.output(b.op('Add', [b.op('Mul', [x, cos]), b.op('Mul', [rot, sin])]), 'y');
    return b.finish();
  };

  it('its tables are frozen and it becomes one RotaryEmbedding with interleaved = 1, computing the same', () => {
    const f = frozenCopy(graph(), [['cos', 'rotary cos table'], ['sin', 'rotary sin table']]);
    const fused = cloneGraph(f);
    expect(applyRules(fused, rotaryRules()).get('interleaved rotary embedding')).toBe(1);
    const rope = fused.nodes.filter((n) => n.op === 'RotaryEmbedding');
    expect(rope.map((n) => n.attrs['interleaved'])).toEqual([1]);
    expect(fused.nodes.some((n) => n.op === 'Neg' || n.op === 'Slice')).toBe(false);
    const feeds = randomFeeds(f, B, 9);
    expect(maxRelError(runGraph(fused, feeds).get('y')!, runGraph(f, feeds).get('y')!)).toBeLessThanOrEqual(1e-6);
  });

  it('tables whose neighbours hold different angles (the rotate-half layout) do not fuse interleaved', () => {
    const f = frozenCopy(graph(false), [['cos', 'rotary cos table'], ['sin', 'rotary sin table']]);
    expect(applyRules(f, rotaryRules()).get('interleaved rotary embedding') ?? 0).toBe(0);
  });
});

describe('freezeBuffers: attention masks', () => {
  it.each([
    ['−inf', -Infinity],
    ['finfo(float32).min', FINFO_MIN],
    ['−1e9', -1e9],
    ['exactly the threshold', MASKED],
  ])('a causal mask parameter with %s', (_, masked) => {
    const g = maskGraph(causal(masked));
    const f = frozenCopy(g, MASK);
    expect(gradNames(f)).toEqual(['wq']);
    expect(gradNames(g)).toEqual(['mask', 'wq']);
  });

  it('the mask in either operand order, and reaching the softmax through a scale', () => {
    frozenCopy(maskGraph(causal(-Infinity), { maskFirst: true }), MASK);
    frozenCopy(maskGraph(causal(FINFO_MIN), { reader: 'scaled-softmax' }), MASK);
  });

  it('a batched all-zero mask [B, 1, T, T] (an attention_mask of ones, folded), and a batched padding mask', () => {
    frozenCopy(maskGraph(tensor('float32', [B, 1, T, T])), MASK);
    const pad = tensor('float32', [B, 1, T, T]);
    for (let i = 0; i < T * T; i++) if (i % T === T - 1) pad.data[T * T + i] = FINFO_MIN; // the second entry's last key
    const f = frozenCopy(maskGraph(pad), MASK);
    expect(gradNames(f)).toEqual(['wq']);
  });

  it('a mask read through moves: a longer table sliced to the sequence and given its heads axis', () => {
    const b = new ModelBuilder('moved');
    const q = b.input('q', 'float32', [B, H, T, Dh]), kt = b.input('kt', 'float32', [B, H, Dh, T]), v = b.input('v', 'float32', [B, H, T, Dh]);
    const s = b.op('MatMul', [b.op('MatMul', [q, b.param('wq', [Dh, Dh], { normal: 0.5 })]), kt]);
    const long = tensor('float32', [2 * T, 2 * T]);
    for (let i = 0; i < long.data.length; i++) long.data[i] = i % (2 * T) <= Math.floor(i / (2 * T)) ? 0 : -Infinity;
    const table = b.graph.addParam('mask', long);
    const cut = b.op('Slice', [b.op('Slice', [table], { starts: [0], ends: [T], axes: [0] })], { starts: [0], ends: [T], axes: [1] });
    const p = b.op('Softmax', [b.op('Add', [s, b.op('Unsqueeze', [b.op('Unsqueeze', [cut], { axes: [0] })], { axes: [0] })])], { axis: -1 });
    b.output(b.op('MatMul', [p, v]), 'y');
    const f = frozenCopy(b.finish(), MASK);
    expect(gradNames(f)).toEqual(['wq']);
  });

  it('stays a parameter: a zero-initialised learned bias [1, H, T, T] added before the softmax (no batch axis)', () => {
    const g = maskGraph(tensor('float32', [1, H, T, T]));
    frozenCopy(g, []);
    expect(gradNames(g)).toEqual(['mask', 'wq']);
    // All zeros with a batch axis of 1, or a symbolic batch: no batch axis to tell it by either.
    frozenCopy(maskGraph(tensor('float32', [1, 1, T, T]), { batch: 1 }), []);
    frozenCopy(maskGraph(tensor('float32', [B, 1, T, T]), { batch: 'N' }), []);
    // A [B, T, T]-shaped zero parameter is not 4-D.
    frozenCopy(maskGraph(tensor('float32', [B, T, T])), []);
  });

  it('stays a parameter: a mask-like parameter that does not feed a softmax', () => {
    const g = maskGraph(causal(-Infinity), { reader: 'relu' });
    frozenCopy(g, []);
    expect(gradNames(g)).toContain('mask');
  });

  it('stays a parameter: a value between −1e4 and 0 among the masked ones, or a positive one', () => {
    const between = causal(-1e9);
    between.data[3] = -9999;
    frozenCopy(maskGraph(between), []);
    const mild = causal(-100);
    frozenCopy(maskGraph(mild), []);
    const positive = causal(-Infinity);
    positive.data[0] = 0.5;
    frozenCopy(maskGraph(positive), []);
    expect(gradNames(maskGraph(mild))).toEqual(['mask', 'wq']);
  });

  it('a graph with both buffers reports each role once, and leaves the other parameters alone', () => {
    // Rotary q·kᵀ as scores, a causal mask, then a softmax.
    const g = rotaryGraph({ both: true });
    const b = new ModelBuilder(g);
    const scores = g.outputs[0]!;
    g.outputs.length = 0;
    const p = b.op('Softmax', [b.op('Add', [scores, b.graph.addParam('mask', causal(FINFO_MIN))])], { axis: -1 });
    b.output(b.op('ReduceSum', [p], { keepdims: 0 }), 'y');
    validateGraph(g);
    const f = frozenCopy(g, [...ROTARY, ...MASK]);
    expect(gradNames(f)).toEqual(['wk', 'wq']);
    // Run again: nothing more to freeze.
    expect(freezeBuffers(f)).toEqual([]);
  });
});
