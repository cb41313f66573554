import type { Graph, Node, Value } from '../../src/core/ir/graph.js';
import type { Tensor } from '../../src/core/ir/tensor.js';
import { type Pat, type Rule, any, applyRules, bound, freezeParam, op } from './rewrite.js';

// ONNX does not say which initializers are trained, and exporters fold a model's buffers (its
// rotary cos/sin tables, its causal mask) into float initializers, which the importer takes for
// parameters. Training those would change the model: PyTorch never trains a buffer. These rules
// find initializers by the role they play and by their values, and make them constants:
//   - an attention mask: added to the scores before a softmax, every value 0 or very negative;
//   - rotary tables: x·cos + rotate_half(x)·sin, with cos² + sin² = 1 everywhere; the angles
//     before the Cos and Sin (position s · one frequency per feature); the inverse frequencies
//     (base^(−2i/d)) where the angles are computed in the graph and only Cos and Sin read them.
// A parameter that only looks the part (a learned bias added before a softmax, initialised to
// zero) has no very negative value and stays trained.

/** Masked scores at or below this get zero softmax weight in any float type. */
export const MASKED = -1e4;

/** What a buffer was recognised as, for the compile report. */
export interface Frozen { name: string; role: string }

/** Ops that move or pick elements without computing: a table read through them is still the table. */
const MOVES = new Set(['Unsqueeze', 'Squeeze', 'Reshape', 'Slice', 'Expand', 'Cast', 'Identity', 'Transpose', 'Flatten']);

/** The initializer a value is read from through moves (and Gather's data input), or null. */
export function sourceParam(v: Value | null | undefined): Value | null {
  for (let x = v; x; ) {
    if (x.kind === 'param') return x;
    const n: Node | null = x.producer;
    if (x.kind !== 'node' || !n) return null;
    if (MOVES.has(n.op) || n.op === 'Gather') x = n.inputs[0];
    else return null;
  }
  return null;
}

const isMaskValues = (t: Tensor, zerosToo: boolean): boolean => {
  let dropped = zerosToo;
  for (const x of t.data) {
    if (x <= MASKED) dropped = true;
    else if (x !== 0) return false;
  }
  return dropped;
};

/** Does `v` reach a Softmax's input through scalings, masks and casts only (each value of rank `rank`, where given)? */
export function feedsSoftmax(v: Value, rank?: number, depth = 0): boolean {
  if (depth > 4 || (rank !== undefined && v.shape.length !== rank)) return false;
  return v.users.some((u) => u.op === 'Softmax' || (['Mul', 'Div', 'Add', 'Where', 'Cast'].includes(u.op) && feedsSoftmax(u.outputs[0]!, rank, depth + 1)));
}

/** A one-input Slice of the last axis by step 1: its start and end, else null. */
export function lastAxisSlice(n: Node | null | undefined): { start: number; end: number } | null {
  if (n?.op !== 'Slice' || n.inputs.length !== 1) return null;
  const starts = n.attrs['starts'] as readonly number[] | undefined, ends = n.attrs['ends'] as readonly number[] | undefined;
  const axes = n.attrs['axes'] as readonly number[] | undefined, steps = n.attrs['steps'] as readonly number[] | undefined;
  const r = n.inputs[0]!.shape.length;
  if (!starts || !ends || starts.length !== 1) return null;
  if (axes ? axes.length !== 1 || (axes[0] !== -1 && axes[0] !== r - 1) : r !== 1) return null;
  if (steps && steps.some((x) => x !== 1)) return null;
  return { start: starts[0]!, end: ends[0]! };
}

const half = (n: Node, from: 'start' | 'end'): boolean => {
  const s = lastAxisSlice(n), last = n.inputs[0]!.shape[n.inputs[0]!.shape.length - 1];
  if (!s || typeof last !== 'number' || last % 2) return false;
  const h = last / 2;
  return from === 'start' ? s.start === 0 && s.end === h : s.start === h && s.end >= last;
};

const slice = (from: 'start' | 'end'): Pat => op('Slice', undefined, { test: (v) => half(v.producer!, from), shared: true });

/** rotate_half(x) = concat(−x[…, h:], x[…, :h]), as HF's Llama, Mistral, Gemma, Qwen2 and GPT-NeoX write it. */
export const rotateHalf: Pat = op('Concat', [op('Neg', [slice('end')]), slice('start')], {
  test: (v, m) => {
    const n = v.producer!, ax = n.attrs['axis'] as number;
    const x = n.inputs[0]!.producer!.inputs[0]!.producer!.inputs[0];
    const y = n.inputs[1]!.producer!.inputs[0];
    const was = m.values.get('x');
    if (!x || x !== y || (was && was !== x) || (ax !== -1 && ax !== v.shape.length - 1)) return false;
    m.values.set('x', x);
    return true;
  },
});

/** x[…, off::2] (a one-input Slice of the last axis from `off` by step 2 to its end) of a last axis of even size. */
function everyOther(n: Node | null | undefined, off: number): boolean {
  if (n?.op !== 'Slice' || n.inputs.length !== 1) return false;
  const starts = n.attrs['starts'] as readonly number[] | undefined, ends = n.attrs['ends'] as readonly number[] | undefined;
  const axes = n.attrs['axes'] as readonly number[] | undefined, steps = n.attrs['steps'] as readonly number[] | undefined;
  const r = n.inputs[0]!.shape.length, last = n.inputs[0]!.shape[r - 1];
  if (!starts || !ends || !steps || starts.length !== 1 || typeof last !== 'number' || last % 2) return false;
  if (axes ? axes.length !== 1 || (axes[0] !== -1 && axes[0] !== r - 1) : r !== 1) return false;
  return steps[0] === 2 && starts[0] === off && ends[0]! >= last;
}

const unsqueezedLast = (n: Node | null | undefined): boolean => {
  const axes = n?.attrs['axes'] as readonly number[] | undefined, r = n?.outputs[0]!.shape.length;
  return n?.op === 'Unsqueeze' && !!axes && axes.length === 1 && (axes[0] === -1 || axes[0] === r! - 1);
};

/**
 * rotate_every_two(x) = stack((−x[…, 1::2], x[…, ::2]), −1).flatten(−2), as GPT-J and Meta's Llama
 * (complex rotation) write the interleaved rotary: Unsqueezes, a Concat on the new last axis and a
 * Reshape back to x's shape.
 */
export const rotateEveryTwo: Pat = op('Reshape', [op('Concat', [op('Unsqueeze', [op('Neg', [op('Slice', undefined, { test: (v) => everyOther(v.producer, 1), shared: true })])]), op('Unsqueeze', [op('Slice', undefined, { test: (v) => everyOther(v.producer, 0), shared: true })])])], {
  test: (v, m) => {
    const cat = v.producer!.inputs[0]!.producer!, [u1, u2] = cat.inputs.map((i) => i!.producer);
    const odd = u1!.inputs[0]!.producer!.inputs[0]!.producer!, even = u2!.inputs[0]!.producer!;
    const x = odd.inputs[0]!, ax = cat.attrs['axis'] as number, r = cat.outputs[0]!.shape.length;
    const was = m.values.get('x');
    if (even.inputs[0] !== x || (was && was !== x) || (ax !== -1 && ax !== r - 1) || !unsqueezedLast(u1) || !unsqueezedLast(u2)) return false;
    if (v.shape.length !== x.shape.length || v.shape.some((d, i) => d !== x.shape[i])) return false;
    m.values.set('x', x);
    return true;
  },
});

const isUnit = (c: Tensor, s: Tensor): boolean => c.data.length === s.data.length && c.data.every((x, i) => Math.abs(x * x + s.data[i]! * s.data[i]! - 1) < 1e-4);

/**
 * Rotary angles [.., S, D] as rotate-half layouts hold them: position s times one frequency per
 * feature, both halves the same (row 0 all zeros, row s = s · row 1). An exporter that folds
 * positions ⊗ inv_freq but not the cos and sin after it leaves this initializer.
 */
function isAngleTable(t: Tensor): boolean {
  const r = t.shape.length, S = t.shape[r - 2] ?? 0, D = t.shape[r - 1] ?? 0, h = D / 2;
  if (r < 2 || S < 2 || D < 2 || D % 2 || t.data.length !== S * D) return false;
  const at = (s: number, j: number): number => t.data[s * D + j]!;
  for (let j = 0; j < h; j++) if (at(0, j) !== 0 || at(0, h + j) !== 0 || !(at(1, j) > 0)) return false;
  for (let s = 1; s < S; s++) for (let j = 0; j < h; j++) {
    const want = s * at(1, j), tol = 1e-5 * Math.max(1, Math.abs(want));
    if (Math.abs(at(s, j) - want) > tol || Math.abs(at(s, h + j) - want) > tol) return false;
  }
  return true;
}

/**
 * Rotary inverse frequencies: one value per feature pair, base^(−2i/d): the first 1, each next the
 * last times one ratio in (0, 1). HF's rotary embedding keeps them as the inv_freq buffer, and an
 * export that folds nothing of it computes the angles from it in the graph.
 */
function isInverseFrequencies(t: Tensor): boolean {
  const d = t.data, n = d.length;
  if (n < 2 || t.shape.filter((x) => x !== 1).length > 1 || Math.abs(d[0]! - 1) > 1e-6) return false;
  const r = d[1]! / d[0]!;
  if (!(r > 0 && r < 1)) return false;
  for (let i = 1; i < n; i++) if (Math.abs(d[i]! - d[i - 1]! * r) > 1e-5 * d[i - 1]!) return false;
  return true;
}

/** Does every path from `v` end in a Cos or a Sin (never a graph output or anything else that reads it uncomputed)? */
function onlyFeedsCosSin(g: Graph, v: Value, seen = new Set<Value>()): boolean {
  if (seen.has(v)) return true;
  seen.add(v);
  if (g.outputs.includes(v) || !v.users.length) return false;
  return v.users.every((u) => u.op === 'Cos' || u.op === 'Sin' || (u.outputs.length > 0 && u.outputs.every((o) => onlyFeedsCosSin(g, o, seen))));
}

/** The values of one kind (parameters, model inputs) a value is computed from, through any ops, each once, nearest input first. */
export function valuesBehind(v: Value, kind: 'param' | 'input', out = new Set<Value>(), seen = new Set<Value>()): Set<Value> {
  if (seen.has(v)) return out;
  seen.add(v);
  if (v.kind === kind) out.add(v);
  else for (const x of v.producer?.inputs ?? []) if (x) valuesBehind(x, kind, out, seen);
  return out;
}

export function bufferRules(frozen: Frozen[]): Rule[] {
  const freeze = (g: Graph, p: Value, role: string): void => {
    frozen.push({ name: p.name, role });
    freezeParam(g, p);
  };
  return [
    {
      // inv_freq ⊗ positions computed in the graph, then Cos and Sin: the frequencies are the buffer.
      name: 'rotary inverse frequencies',
      pattern: op(['Cos', 'Sin'], [any('angles', { shared: true })]),
      rewrite(m, g) {
        const ps = [...valuesBehind(bound(m, 'angles'), 'param')].filter((p) => p.data && isInverseFrequencies(p.data) && onlyFeedsCosSin(g, p));
        if (!ps.length) return null;
        for (const p of ps) freeze(g, p, 'rotary inverse frequencies');
        return true;
      },
    },
    {
      name: 'rotary angle initializer',
      pattern: op('Cos', [any('angles', { shared: true, test: (v) => sourceParam(v) !== null })]),
      rewrite(m, g) {
        const p = sourceParam(bound(m, 'angles'))!;
        if (!p.data || !isAngleTable(p.data)) return null;
        freeze(g, p, 'rotary angles');
        return true;
      },
    },
    {
      name: 'attention mask initializer',
      // The mask read directly or through moves (a Slice to the sequence, an Unsqueeze of heads).
      pattern: op('Add', [any('scores'), any('mask', { shared: true, test: (v) => sourceParam(v) !== null })], { commute: true }),
      rewrite(m, g) {
        const read = bound(m, 'mask'), mask = sourceParam(read)!;
        // All zeros is a mask too where it has the scores' batch axis (no learned tensor has one):
        // the exporter folded an attention_mask of ones.
        const scores = bound(m, 'scores').shape, ms = read.shape;
        const batched = ms.length === 4 && scores.length === 4 && typeof ms[0] === 'number' && ms[0] > 1 && ms[0] === scores[0];
        if (!mask.data || !isMaskValues(mask.data, batched) || !feedsSoftmax(m.root.outputs[0]!)) return null;
        freeze(g, mask, 'attention mask');
        return true;
      },
    },
    // rotate_half(x)·sin (or rotate_every_two(x)·sin) first: it binds x, which the other product must then read.
    ...[rotateHalf, rotateEveryTwo].map((rotate): Rule => ({
      name: 'rotary table initializers',
      pattern: op('Add', [op('Mul', [rotate, any('sin', { shared: true })], { commute: true }), op('Mul', [any('x', { shared: true }), any('cos', { shared: true })], { commute: true })], { commute: true }),
      rewrite(m, g) {
        const c = sourceParam(bound(m, 'cos')), s = sourceParam(bound(m, 'sin'));
        if (!c?.data || !s?.data || c === s || !isUnit(c.data, s.data)) return null;
        freeze(g, c, 'rotary cos table');
        freeze(g, s, 'rotary sin table');
        return true;
      },
    })),
  ];
}

/** Makes constants of the initializers that are buffers by their role and values; says which. */
export function freezeBuffers(g: Graph): Frozen[] {
  const frozen: Frozen[] = [];
  applyRules(g, bufferRules(frozen));
  return frozen;
}
