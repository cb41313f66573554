// The GELU rule table (compiler/passes/gelu.ts), the GEMM row table (compiler/passes/gemm.ts) and
// the canonical row 'reshape of a reshape' (compiler/passes/attention.ts): each row fires on the
// spellings it is for, leaves the ops it promises, and computes what the written-out graph computes
// (run by the CPU interpreter, and for GELU a direct JS formula too); and does not fire where the
// rewrite would not be the same function or would drop a value read elsewhere.
import { describe, expect, it } from 'vitest';
import { CANONICAL } from '../../compiler/passes/attention.js';
import { GELU_RULES } from '../../compiler/passes/gelu.js';
import { GEMM_ROWS } from '../../compiler/passes/gemm.js';
import { type Rule, applyRules } from '../../compiler/passes/rewrite.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { ModelBuilder } from '../../src/core/ir/builder.js';
import { cloneGraph } from '../../src/core/ir/clone.js';
import type { Graph, Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import { validateGraph } from '../../src/core/ir/validate.js';
import { maxRelError } from '../helpers/compare.js';
import { randomFeeds } from '../helpers/inputs.js';

const ops = (g: Graph): string[] => g.nodes.map((n) => n.op);

/** The outputs of `after` equal those of `before` on the same feeds (≤ 1e-6 relative), under the same names. */
function sameOutputs(before: Graph, after: Graph, feeds: Record<string, Tensor> = randomFeeds(before, 2, 3)): void {
  validateGraph(after);
  const want = runGraph(before, feeds), got = runGraph(after, feeds);
  expect([...got.keys()]).toEqual([...want.keys()]);
  for (const [k, t] of want) expect(maxRelError(got.get(k)!, t), k).toBeLessThanOrEqual(1e-6);
}

/** Runs `rules` on a copy of `g`: exactly the rows in `fires` apply, that often, and the copy computes the same. */
function applyTo(g: Graph, rules: readonly Rule[], fires: Record<string, number>, feeds?: Record<string, Tensor>): Graph {
  const f = cloneGraph(g);
  const counts = applyRules(f, rules);
  expect(Object.fromEntries(counts)).toEqual(fires);
  sameOutputs(g, f, feeds);
  return f;
}

// --- GELU ---------------------------------------------------------------------------------------

/** erf by its Taylor series (exact to ~1e-14 for |z| ≤ 3): independent of the interpreter's erf. */
function erf(z: number): number {
  let term = z, sum = z;
  for (let n = 1; n < 80; n++) {
    term *= (-z * z) / n;
    sum += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}
const geluTanhJs = (x: number): number => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
const geluErfJs = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));

type Cube = 'pow' | 'x(xx)' | '(xx)x';
interface Spelling {
  readonly kind: 'tanh' | 'erf';
  readonly cube?: Cube;
  /** erf: x/√2 (Div) or x·(1/√2) (Mul). */
  readonly div?: boolean;
  /** 1: (x·½)·term, 2: (x·term)·½, 3: (½·term)·x. */
  readonly group: 1 | 2 | 3;
  /** Every binary op with its operands the other way round. */
  readonly swap?: boolean;
  /** Constants to spell wrong. */
  readonly k?: Partial<Record<'half' | 'one' | 'three' | 'kappa' | 'beta' | 'root2' | 'invRoot2', number>>;
  /** A 1-element ½ of this shape, in place of a scalar (broadcasts the product to more axes). */
  readonly halfShape?: number[];
}

const X_SHAPE = [2, 3, 4];

/** GELU of x written out as `s` spells it; `cubeOf` is the value cubed (x unless told). Returns the output and the Tanh/Erf value. */
function writeGelu(b: ModelBuilder, x: Value, s: Spelling, cubeOf: Value = x): { y: Value; inner: Value } {
  const c = (name: keyof NonNullable<Spelling['k']>, v: number): Value => b.scalar(s.k?.[name] ?? v);
  const bin = (o: string, l: Value, r: Value): Value => b.op(o, s.swap ? [r, l] : [l, r]);
  let inner: Value;
  if (s.kind === 'tanh') {
    // Pow is not commutative either: Pow(3, x) is 3ˣ.
    const cube = s.cube === 'pow' ? b.op('Pow', [cubeOf, c('three', 3)])
      : s.cube === '(xx)x' ? bin('Mul', bin('Mul', cubeOf, cubeOf), cubeOf)
        : bin('Mul', cubeOf, bin('Mul', cubeOf, cubeOf));
    const arg = bin('Mul', bin('Add', x, bin('Mul', cube, c('kappa', 0.044715))), c('beta', Math.sqrt(2 / Math.PI)));
    inner = b.op('Tanh', [arg]);
  } else {
    // Div is not commutative: the swap is not applied to it.
    const arg = s.div ? b.op('Div', [x, c('root2', Math.SQRT2)]) : bin('Mul', x, c('invRoot2', Math.SQRT1_2));
    inner = b.op('Erf', [arg]);
  }
  const term = bin('Add', inner, c('one', 1));
  const half = s.halfShape ? b.constant(tensor('float32', s.halfShape, [s.k?.half ?? 0.5])) : c('half', 0.5);
  const y = s.group === 1 ? bin('Mul', bin('Mul', x, half), term)
    : s.group === 2 ? bin('Mul', bin('Mul', x, term), half)
      : bin('Mul', bin('Mul', half, term), x);
  return { y, inner };
}

function geluGraph(s: Spelling): Graph {
  const b = new ModelBuilder('gelu');
  const x = b.input('x', 'float32', X_SHAPE);
  b.output(writeGelu(b, x, s).y, 'y');
  return b.finish();
}

/** x from −4 to 4: GELU's bend, both tails. */
function linspaceFeeds(): Record<string, Tensor> {
  const n = X_SHAPE.reduce((a, d) => a * d, 1);
  return { x: tensor('float32', X_SHAPE, Array.from({ length: n }, (_, i) => -4 + (8 * i) / (n - 1))) };
}

const spellings: Spelling[] = [];
for (const group of [1, 2, 3] as const) {
  for (const swap of [false, true]) {
    for (const cube of ['pow', 'x(xx)', '(xx)x'] as const) spellings.push({ kind: 'tanh', cube, group, swap });
    for (const div of [true, false]) spellings.push({ kind: 'erf', div, group, swap });
  }
}
const label = (s: Spelling): string => `${s.kind} ${s.kind === 'tanh' ? `x³ as ${s.cube}` : s.div ? 'x/√2' : 'x·(1/√2)'}, grouping ${s.group}${s.swap ? ', operands swapped' : ''}`;

describe('GELU_RULES', () => {
  it('the JS reference formulas are GELU (sanity of the reference itself)', () => {
    expect(geluErfJs(0)).toBe(0);
    expect(geluErfJs(1)).toBeCloseTo(0.8413447460685429, 12);
    expect(geluErfJs(-1)).toBeCloseTo(-0.15865525393145707, 12);
    expect(Math.abs(geluTanhJs(1) - geluErfJs(1))).toBeLessThan(1e-3);
    expect(geluTanhJs(1)).not.toBe(geluErfJs(1));
  });

  it.each(spellings.map((s) => [label(s), s] as const))('%s: one Gelu, the same numbers', (_, s) => {
    const g = geluGraph(s);
    const name = s.kind === 'tanh' ? 'GELU (tanh)' : 'GELU (erf)';
    const feeds = linspaceFeeds();
    const f = applyTo(g, GELU_RULES, { [name]: 1 }, feeds);
    expect(ops(f)).toEqual(['Gelu']);
    const gelu = f.nodes[0]!;
    expect(gelu.attrs['approximate']).toBe(s.kind === 'tanh' ? 'tanh' : 'none');
    expect(gelu.inputs).toEqual([f.values.get('x')]);
    expect(f.outputs.map((o) => o.name)).toEqual(['y']);
    expect(f.outputs[0]!.shape).toEqual(X_SHAPE);
    // Only x, and no constant of the written-out form, is left.
    expect([...f.values.values()].filter((v) => v.kind === 'const')).toEqual([]);
    // Both the written-out graph and the Gelu node give GELU by the formula.
    const js = s.kind === 'tanh' ? geluTanhJs : geluErfJs;
    const want = tensor('float32', X_SHAPE, [...feeds.x!.data].map((v) => js(v)));
    expect(maxRelError(runGraph(g, feeds).get('y')!, want)).toBeLessThanOrEqual(1e-6);
    expect(maxRelError(runGraph(f, feeds).get('y')!, want)).toBeLessThanOrEqual(1e-6);
  });

  it('two GELUs, one of each kind, one after the other: both fire', () => {
    const b = new ModelBuilder('two');
    const x = b.input('x', 'float32', X_SHAPE);
    const h = writeGelu(b, x, { kind: 'tanh', cube: 'pow', group: 1 }).y;
    b.output(writeGelu(b, b.op('Neg', [h]), { kind: 'erf', div: true, group: 3, swap: true }).y, 'y');
    const f = applyTo(b.finish(), GELU_RULES, { 'GELU (tanh)': 1, 'GELU (erf)': 1 }, linspaceFeeds());
    expect(ops(f)).toEqual(['Gelu', 'Neg', 'Gelu']);
    expect(f.nodes.map((n) => n.attrs['approximate'])).toEqual(['tanh', undefined, 'none']);
  });

  describe('does not fire', () => {
    const notFiring = (g: Graph): void => {
      const f = applyTo(g, GELU_RULES, {}, linspaceFeeds());
      expect(ops(f)).toEqual(ops(g));
      expect(ops(f)).not.toContain('Gelu');
    };
    const wrong: [string, Spelling][] = [
      ['κ = 0.04 instead of 0.044715', { kind: 'tanh', cube: 'pow', group: 1, k: { kappa: 0.04 } }],
      ['κ = 0.04 (x·(x·x), swapped)', { kind: 'tanh', cube: 'x(xx)', group: 2, swap: true, k: { kappa: 0.04 } }],
      ['½ = 0.6 (tanh)', { kind: 'tanh', cube: 'pow', group: 1, k: { half: 0.6 } }],
      ['½ = 0.6 (erf)', { kind: 'erf', div: true, group: 2, k: { half: 0.6 } }],
      ['x² instead of x³', { kind: 'tanh', cube: 'pow', group: 3, k: { three: 2 } }],
      ['√(2/π) = 0.8', { kind: 'tanh', cube: '(xx)x', group: 1, k: { beta: 0.8 } }],
      ['1 + … as 2 + …', { kind: 'erf', div: false, group: 1, k: { one: 2 } }],
      ['x/1.5 instead of x/√2', { kind: 'erf', div: true, group: 3, k: { root2: 1.5 } }],
      ['x·0.5 instead of x·(1/√2)', { kind: 'erf', div: false, group: 1, swap: true, k: { invRoot2: 0.5 } }],
    ];
    it.each(wrong)('a wrong constant: %s', (_, s) => notFiring(geluGraph(s)));

    it.each([['pow'], ['x(xx)'], ['(xx)x']] as const)('x³ (as %s) of another value than x', (cube) => {
      const b = new ModelBuilder('other');
      const x = b.input('x', 'float32', X_SHAPE);
      b.output(writeGelu(b, x, { kind: 'tanh', cube, group: 1 }, b.op('Neg', [x])).y, 'y');
      notFiring(b.finish());
    });

    it('Pow(3, x) is 3ˣ, not x³', () => {
      const b = new ModelBuilder('pow3x');
      const x = b.input('x', 'float32', X_SHAPE);
      const cube = b.op('Pow', [b.scalar(3), x]);
      const arg = b.op('Mul', [b.op('Add', [x, b.op('Mul', [cube, b.scalar(0.044715)])]), b.scalar(Math.sqrt(2 / Math.PI))]);
      b.output(b.op('Mul', [b.op('Mul', [x, b.scalar(0.5)]), b.op('Add', [b.op('Tanh', [arg]), b.scalar(1)])]), 'y');
      notFiring(b.finish());
    });

    it('x·(x·z): one factor of the cube another value', () => {
      const b = new ModelBuilder('mixed');
      const x = b.input('x', 'float32', X_SHAPE), z = b.input('z', 'float32', X_SHAPE);
      const cube = b.op('Mul', [x, b.op('Mul', [x, z])]);
      const arg = b.op('Mul', [b.op('Add', [x, b.op('Mul', [cube, b.scalar(0.044715)])]), b.scalar(Math.sqrt(2 / Math.PI))]);
      b.output(b.op('Mul', [b.op('Mul', [x, b.scalar(0.5)]), b.op('Add', [b.op('Tanh', [arg]), b.scalar(1)])]), 'y');
      const g = b.finish();
      const f = applyTo(g, GELU_RULES, {});
      expect(ops(f)).toEqual(ops(g));
    });

    it('erf of another value than x', () => {
      const b = new ModelBuilder('erfz');
      const x = b.input('x', 'float32', X_SHAPE), z = b.input('z', 'float32', X_SHAPE);
      const term = b.op('Add', [b.op('Erf', [b.op('Div', [z, b.scalar(Math.SQRT2)])]), b.scalar(1)]);
      b.output(b.op('Mul', [b.op('Mul', [x, b.scalar(0.5)]), term]), 'y');
      const g = b.finish();
      expect(ops(applyTo(g, GELU_RULES, {}))).toEqual(ops(g));
    });

    it.each([['tanh'], ['erf']] as const)('the %s output is read elsewhere too (a graph output)', (kind) => {
      const b = new ModelBuilder('shared');
      const x = b.input('x', 'float32', X_SHAPE);
      const { y, inner } = writeGelu(b, x, kind === 'tanh' ? { kind, cube: 'pow', group: 2 } : { kind, div: true, group: 2 });
      b.output(y, 'y');
      b.output(inner, 'inner');
      notFiring(b.finish());
    });

    it('the 1 + tanh(…) term is read by another node too', () => {
      const b = new ModelBuilder('shared2');
      const x = b.input('x', 'float32', X_SHAPE);
      const { y, inner } = writeGelu(b, x, { kind: 'tanh', cube: 'x(xx)', group: 1 });
      const term = inner.users[0]!.outputs[0]!;
      expect(term.producer!.op).toBe('Add');
      b.output(b.op('Add', [y, b.op('Neg', [term])]), 'y');
      notFiring(b.finish());
    });

    it.each([[1], [2], [3]] as const)('a 1-element ½ of shape [1, 1, 1, 1] broadcasts the output past x\'s shape (grouping %s)', (group) => {
      const g = geluGraph({ kind: group === 2 ? 'erf' : 'tanh', cube: 'pow', div: true, group, halfShape: [1, 1, 1, 1] });
      expect(g.outputs[0]!.shape).toEqual([1, ...X_SHAPE]);
      notFiring(g);
    });

    it('x broadcast by the term: x of [3, 4], its cube of a [2, 3, 4] value', () => {
      // Not the same value, and the output shape is not x's: neither may make it a Gelu of x.
      const b = new ModelBuilder('bcast');
      const x = b.input('x', 'float32', [3, 4]);
      const wide = b.op('Expand', [x], { shape: [2, 3, 4] });
      b.output(writeGelu(b, x, { kind: 'tanh', cube: 'pow', group: 1 }, wide).y, 'y');
      const g = b.finish();
      expect(g.outputs[0]!.shape).toEqual([2, 3, 4]);
      expect(ops(applyTo(g, GELU_RULES, {}))).toEqual(ops(g));
    });
  });
});

// --- Gemm ---------------------------------------------------------------------------------------

const GEMM = GEMM_ROWS.find((r) => r.name === 'Gemm as MatMul and Add')!;
const ROWS = GEMM_ROWS.filter((r) => r.name === 'product on flattened rows');

describe('GEMM_ROWS', () => {
  it('has its rows, in order', () => {
    expect(GEMM_ROWS.map((r) => r.name)).toEqual(['Gemm as MatMul and Add', 'product on flattened rows', 'product on flattened rows']);
  });

  describe('Gemm as MatMul and Add', () => {
    const M = 3, K = 4, N = 5;
    interface Case { transA?: 1; transB?: 1; alpha?: number; beta?: number; c?: 'none' | 'N' | '1N' | 'MN' | 'M1' | 'scalar'; want: string[] }
    const cases: [string, Case][] = [
      ['plain, C [N]', { c: 'N', want: ['MatMul', 'Add'] }],
      ['transA', { transA: 1, c: 'N', want: ['Transpose', 'MatMul', 'Add'] }],
      ['transB', { transB: 1, c: 'N', want: ['Transpose', 'MatMul', 'Add'] }],
      ['transA and transB', { transA: 1, transB: 1, c: 'MN', want: ['Transpose', 'Transpose', 'MatMul', 'Add'] }],
      ['alpha 0.5', { alpha: 0.5, c: 'N', want: ['MatMul', 'Mul', 'Add'] }],
      ['beta 2', { beta: 2, c: 'N', want: ['MatMul', 'Mul', 'Add'] }],
      ['alpha 0.25, beta -3, both transposed, C [M, N]', { transA: 1, transB: 1, alpha: 0.25, beta: -3, c: 'MN', want: ['Transpose', 'Transpose', 'MatMul', 'Mul', 'Mul', 'Add'] }],
      ['no C', { c: 'none', want: ['MatMul'] }],
      ['no C, transB, alpha 2 (beta ignored)', { transB: 1, alpha: 2, beta: 7, c: 'none', want: ['Transpose', 'MatMul', 'Mul'] }],
      ['C [M, N]', { c: 'MN', want: ['MatMul', 'Add'] }],
      ['C [1, N]', { c: '1N', want: ['MatMul', 'Add'] }],
      ['C [M, 1], beta 0.5', { c: 'M1', beta: 0.5, want: ['MatMul', 'Mul', 'Add'] }],
      ['C a scalar', { c: 'scalar', want: ['MatMul', 'Add'] }],
      ['C a scalar, beta 4, transA', { c: 'scalar', beta: 4, transA: 1, want: ['Transpose', 'MatMul', 'Mul', 'Add'] }],
    ];
    it.each(cases)('%s', (_, k) => {
      const b = new ModelBuilder('gemm', { seed: 1 });
      const a = b.input('a', 'float32', k.transA ? [K, M] : [M, K]);
      const w = b.param('w', k.transB ? [N, K] : [K, N], { normal: 1 });
      const cShape = { none: null, N: [N], '1N': [1, N], MN: [M, N], M1: [M, 1], scalar: [] }[k.c ?? 'N'];
      const c = cShape ? b.param('c', cShape, { normal: 1 }) : null;
      const attrs = { ...(k.transA ? { transA: 1 } : {}), ...(k.transB ? { transB: 1 } : {}), ...(k.alpha !== undefined ? { alpha: k.alpha } : {}), ...(k.beta !== undefined ? { beta: k.beta } : {}) };
      b.output(b.op('Gemm', c ? [a, w, c] : [a, w], attrs), 'y');
      const g = b.finish();
      const f = applyTo(g, [GEMM], { 'Gemm as MatMul and Add': 1 });
      expect(ops(f)).toEqual(k.want);
      expect(f.outputs.map((o) => o.name)).toEqual(['y']);
      expect(f.outputs[0]!.shape).toEqual([M, N]);
      const mm = f.nodes.find((n) => n.op === 'MatMul')!;
      expect(mm.inputs.map((v) => v!.shape)).toEqual([[M, K], [K, N]]);
      for (const t of f.nodes.filter((n) => n.op === 'Transpose')) expect(t.attrs['perm']).toEqual([1, 0]);
    });

    it('the numbers are alpha·Aᵀ·Bᵀ + beta·C, by hand', () => {
      // An independent check on one small case, not only against the interpreter's Gemm.
      const b = new ModelBuilder('hand');
      const a = b.input('a', 'float32', [2, 1]); // Aᵀ is [1, 2]
      const w = b.constant(tensor('float32', [2, 2], [1, 2, 3, 4])); // Bᵀ = [[1, 3], [2, 4]]
      const c = b.constant(tensor('float32', [2], [10, 20]));
      b.output(b.op('Gemm', [a, w, c], { transA: 1, transB: 1, alpha: 2, beta: 0.5 }), 'y');
      const g = b.finish();
      const feeds = { a: tensor('float32', [2, 1], [1, -1]) };
      const f = applyTo(g, GEMM_ROWS, { 'Gemm as MatMul and Add': 1 }, feeds);
      // [1, −1]·[[1, 3], [2, 4]] = [−1, −1]; ·2 = [−2, −2]; + [5, 10] = [3, 8].
      expect([...runGraph(f, feeds).get('y')!.data]).toEqual([3, 8]);
    });

    it('the whole table turns a Gemm into MatMul and Add, and nothing more fires', () => {
      const b = new ModelBuilder('table', { seed: 2 });
      const a = b.input('a', 'float32', [M, K]);
      b.output(b.op('Relu', [b.op('Gemm', [a, b.param('w', [N, K], { normal: 1 }), b.param('c', [N], { normal: 1 })], { transB: 1 })]), 'y');
      const f = applyTo(b.finish(), GEMM_ROWS, { 'Gemm as MatMul and Add': 1 });
      expect(ops(f)).toEqual(['Transpose', 'MatMul', 'Add', 'Relu']);
      expect(ops(f)).not.toContain('Gemm');
    });
  });

  describe('product on flattened rows', () => {
    const K = 4, N = 5;
    /** Reshape(MatMul(Reshape(x, [R, K]), W) [+ b], out). */
    function rowsGraph(xShape: number[], opts: { bias?: number[] | null; biasFirst?: boolean; out?: number[]; w?: number[] } = {}): Graph {
      const b = new ModelBuilder('rows', { seed: 4 });
      const x = b.input('x', 'float32', xShape);
      const lead = xShape.slice(0, -1), R = lead.reduce((p, d) => p * d, 1);
      const rows = b.op('Reshape', [x], { shape: [R, K] });
      const mm = b.op('MatMul', [rows, b.param('w', opts.w ?? [K, N], { normal: 1 })]);
      const bias = opts.bias === null ? null : b.param('b', opts.bias ?? [N], { normal: 1 });
      const sum = bias ? b.op('Add', opts.biasFirst ? [bias, mm] : [mm, bias]) : mm;
      b.output(b.op('Reshape', [sum], { shape: opts.out ?? [...lead, N] }), 'y');
      return b.finish();
    }
    const fired = { 'product on flattened rows': 1 };

    it.each([
      ['bias [N], x [2, 3, K]', [2, 3, K], { bias: [N] }],
      ['bias [N] first, x [2, 3, K]', [2, 3, K], { bias: [N], biasFirst: true }],
      ['bias [1, N], x [2, 3, K]', [2, 3, K], { bias: [1, N] }],
      ['bias [1, 1, N], x [2, 3, K]', [2, 3, K], { bias: [1, 1, N] }],
      ['bias [N], x of rank 4 [2, 2, 3, K]', [2, 2, 3, K], { bias: [N] }],
      ['bias [1, N], x of rank 4', [3, 1, 2, K], { bias: [1, N] }],
    ] as [string, number[], { bias: number[]; biasFirst?: boolean }][])('%s: MatMul(x, W) + b', (_, xShape, opts) => {
      const g = rowsGraph(xShape, opts);
      const f = applyTo(g, ROWS, fired);
      expect(ops(f)).toEqual(['MatMul', 'Add']);
      const [mm, add] = f.nodes;
      expect(mm!.inputs.map((v) => v!.name)).toEqual(['x', 'w']);
      expect(mm!.outputs[0]!.shape).toEqual([...xShape.slice(0, -1), N]);
      expect(add!.inputs).toContain(f.values.get('b'));
      expect(add!.outputs[0]!.name).toBe('y');
      expect(add!.outputs[0]!.shape).toEqual([...xShape.slice(0, -1), N]);
    });

    it.each([[[2, 3, K]], [[2, 2, 3, K]]])('without bias, x %j: MatMul(x, W)', (xShape) => {
      const f = applyTo(rowsGraph(xShape, { bias: null }), ROWS, fired);
      expect(ops(f)).toEqual(['MatMul']);
      expect(f.nodes[0]!.inputs.map((v) => v!.name)).toEqual(['x', 'w']);
      expect(f.outputs[0]!.name).toBe('y');
      expect(f.outputs[0]!.shape).toEqual([...xShape.slice(0, -1), N]);
    });

    it('the whole GEMM table: a Gemm on flattened rows is MatMul and Add, then the rows go too', () => {
      // HF GPT-2's Conv1D as torch.onnx writes it: Reshape(Gemm(Reshape(x, [B·T, K]), W, b), [B, T, N]).
      const b = new ModelBuilder('conv1d', { seed: 5 });
      const x = b.input('x', 'float32', [2, 3, K]);
      const rows = b.op('Reshape', [x], { shape: [6, K] });
      b.output(b.op('Reshape', [b.op('Gemm', [rows, b.param('w', [K, N], { normal: 1 }), b.param('b', [N], { normal: 1 })])], { shape: [2, 3, N] }), 'y');
      const f = applyTo(b.finish(), GEMM_ROWS, { 'Gemm as MatMul and Add': 1, 'product on flattened rows': 1 });
      expect(ops(f)).toEqual(['MatMul', 'Add']);
      expect(f.nodes[0]!.inputs[0]!.name).toBe('x');
    });

    it('the rows read elsewhere too: the product moves, the flattening stays for its other reader', () => {
      const b = new ModelBuilder('sharedRows', { seed: 6 });
      const x = b.input('x', 'float32', [2, 3, K]);
      const rows = b.op('Reshape', [x], { shape: [6, K] });
      b.output(b.op('Reshape', [b.op('MatMul', [rows, b.param('w', [K, N], { normal: 1 })])], { shape: [2, 3, N] }), 'y');
      b.output(b.op('Neg', [rows]), 'z');
      const f = applyTo(b.finish(), ROWS, fired);
      expect(ops(f)).toEqual(['Reshape', 'MatMul', 'Neg']);
    });

    // A bias of more axes than the output, all but the last 1 ([1, 1, 1, N] under a rank-3 x): on
    // the flattened rows Add broadcasts it to [1, 1, B·T, N] and the outer Reshape restores [B, T, N];
    // on x's own rows it would make [1, B, T, N]. The row refuses it.
    it('a bias [1, 1, 1, N] of more axes than the output: y keeps its shape [2, 3, N]', () => {
      const g = rowsGraph([2, 3, K], { bias: [1, 1, 1, N] });
      expect(g.outputs[0]!.shape).toEqual([2, 3, N]);
      const f = cloneGraph(g);
      applyRules(f, ROWS);
      const feeds = randomFeeds(g, 2, 3);
      const got = runGraph(f, feeds).get('y')!, want = runGraph(g, feeds).get('y')!;
      expect(got.shape).toEqual([2, 3, N]);
      expect(maxRelError(got, want)).toBeLessThanOrEqual(1e-6);
    });

    describe('does not fire', () => {
      const stays = (g: Graph): void => expect(ops(applyTo(g, ROWS, {}))).toEqual(ops(g));
      it('the outer reshape swaps the leading axes: [B·T, N] → [T, B, N]', () => stays(rowsGraph([2, 3, K], { out: [3, 2, N] })));
      it('the outer reshape swaps the leading axes, without bias', () => stays(rowsGraph([2, 3, K], { bias: null, out: [3, 2, N] })));
      it('the outer reshape regroups the leading axes of a rank-4 x: [2, 2, 3] → [4, 3]', () => stays(rowsGraph([2, 2, 3, K], { out: [4, 3, N] })));
      it('the outer reshape mixes rows and columns: [6, N] → [2, 5, 3]', () => stays(rowsGraph([2, 3, K], { out: [2, N, 3] })));
      it('the bias is per row: [M, N]', () => stays(rowsGraph([2, 3, K], { bias: [6, N] })));
      it('the bias is per row: [M, 1]', () => stays(rowsGraph([2, 3, K], { bias: [6, 1] })));
      it('the MatMul\'s B is 3-D: [1, K, N]', () => stays(rowsGraph([2, 3, K], { w: [1, K, N], out: [2, 3, N] })));
      it('the MatMul\'s B is 3-D [K, K, 1], without bias: every check but B\'s rank holds', () => {
        // [6, K] @ [K, K, 1] is [K, 6, 1], reshaped to [2, 3, K]: B's axes 0 and 1 pass as K and N.
        const g = rowsGraph([2, 3, K], { bias: null, w: [K, K, 1], out: [2, 3, K] });
        expect(g.nodes[1]!.outputs[0]!.shape).toEqual([K, 6, 1]);
        stays(g);
      });
      it('x is already 2-D (nothing flattened)', () => {
        const b = new ModelBuilder('flat', { seed: 7 });
        const x = b.input('x', 'float32', [6, K]);
        b.output(b.op('Reshape', [b.op('Add', [b.op('MatMul', [b.op('Reshape', [x], { shape: [6, K] }), b.param('w', [K, N], { normal: 1 })]), b.param('b', [N], { normal: 1 })])], { shape: [2, 3, N] }), 'y');
        stays(b.finish());
      });
      it('the rows are not x\'s rows: [2, 3, 4] flattened to [3, 8]', () => {
        const b = new ModelBuilder('regroup', { seed: 8 });
        const x = b.input('x', 'float32', [2, 3, 4]);
        b.output(b.op('Reshape', [b.op('MatMul', [b.op('Reshape', [x], { shape: [3, 8] }), b.param('w', [8, N], { normal: 1 })])], { shape: [3, 1, N] }), 'y');
        stays(b.finish());
      });
      it('the product is read elsewhere too', () => {
        const b = new ModelBuilder('sharedMm', { seed: 9 });
        const x = b.input('x', 'float32', [2, 3, K]);
        const mm = b.op('MatMul', [b.op('Reshape', [x], { shape: [6, K] }), b.param('w', [K, N], { normal: 1 })]);
        b.output(b.op('Reshape', [b.op('Add', [mm, b.param('b', [N], { normal: 1 })])], { shape: [2, 3, N] }), 'y');
        b.output(b.op('Neg', [mm]), 'z');
        const f = applyTo(b.finish(), ROWS, {});
        expect(ops(f)).toEqual(['Reshape', 'MatMul', 'Add', 'Reshape', 'Neg']);
      });
    });
  });
});

// --- reshape of a reshape -----------------------------------------------------------------------

describe('CANONICAL: reshape of a reshape', () => {
  const RR = CANONICAL.find((r) => r.name === 'reshape of a reshape')!;
  const fired = (n: number) => ({ 'reshape of a reshape': n });

  it('becomes one reshape of x to the outer shape', () => {
    const b = new ModelBuilder('rr');
    const x = b.input('x', 'float32', [2, 3, 4]);
    b.output(b.op('Relu', [b.op('Reshape', [b.op('Reshape', [x], { shape: [6, 4] })], { shape: [4, 6] })]), 'y');
    const f = applyTo(b.finish(), [RR], fired(1));
    expect(ops(f)).toEqual(['Reshape', 'Relu']);
    expect(f.nodes[0]!.inputs[0]!.name).toBe('x');
    expect(f.nodes[0]!.attrs['shape']).toEqual([4, 6]);
    expect(f.nodes[0]!.outputs[0]!.shape).toEqual([4, 6]);
  });

  it('three reshapes become one; the output keeps its name', () => {
    const b = new ModelBuilder('rrr');
    const x = b.input('x', 'float32', [2, 3, 4]);
    const r = b.op('Reshape', [b.op('Reshape', [b.op('Reshape', [x], { shape: [24] })], { shape: [3, 8] })], { shape: [2, 2, 6] });
    b.output(r, 'y');
    const f = applyTo(b.finish(), [RR], fired(2));
    expect(ops(f)).toEqual(['Reshape']);
    expect(f.nodes[0]!.inputs[0]!.name).toBe('x');
    expect(f.outputs[0]!.name).toBe('y');
    expect(f.outputs[0]!.shape).toEqual([2, 2, 6]);
  });

  it('an outer 0 (copy the inner dim) with a static output: reshaped to the output shape, not to x\'s dim', () => {
    // Reshape(x [3, 2, 4], [6, 4]) then [0, 2, 2]: the 0 is the inner 6, not x's 3.
    const b = new ModelBuilder('zero');
    const x = b.input('x', 'float32', [3, 2, 4]);
    b.output(b.op('Reshape', [b.op('Reshape', [x], { shape: [6, 4] })], { shape: [0, 2, 2] }), 'y');
    const g = b.finish();
    expect(g.outputs[0]!.shape).toEqual([6, 2, 2]);
    const f = applyTo(g, [RR], fired(1));
    expect(ops(f)).toEqual(['Reshape']);
    expect(f.nodes[0]!.attrs['shape']).toEqual([6, 2, 2]);
  });

  it('a -1 in the outer shape with a static output', () => {
    const b = new ModelBuilder('minus');
    const x = b.input('x', 'float32', [2, 3, 4]);
    b.output(b.op('Neg', [b.op('Reshape', [b.op('Reshape', [x], { shape: [6, 4] })], { shape: [-1, 8] })]), 'y');
    const f = applyTo(b.finish(), [RR], fired(1));
    expect(ops(f)).toEqual(['Reshape', 'Neg']);
    expect(f.nodes[0]!.outputs[0]!.shape).toEqual([3, 8]);
  });

  it('symbolic output, outer shape with no 0: fires with the outer shape', () => {
    const b = new ModelBuilder('symok');
    const x = b.input('x', 'float32', ['B', 6, 4]);
    const inner = b.op('Reshape', [x], { shape: [0, 24] });
    const outer = b.op('Reshape', [inner], { shape: [-1, 4, 6] });
    b.output(b.op('Neg', [outer]), 'y');
    const g = b.finish();
    expect(outer.shape.every((d) => typeof d === 'number')).toBe(false);
    const f = applyTo(g, [RR], fired(1));
    expect(ops(f)).toEqual(['Reshape', 'Neg']);
    expect(f.nodes[0]!.inputs[0]!.name).toBe('x');
    expect(f.nodes[0]!.attrs['shape']).toEqual([-1, 4, 6]);
  });

  it('does not fire where the outer shape has a 0 and the output shape is symbolic', () => {
    const b = new ModelBuilder('sym');
    const x = b.input('x', 'float32', ['B', 6, 4]);
    const outer = b.op('Reshape', [b.op('Reshape', [x], { shape: [0, 24] })], { shape: [0, 4, 6] });
    b.output(b.op('Neg', [outer]), 'y');
    const g = b.finish();
    expect(outer.shape[0]).toBe('B');
    expect(ops(applyTo(g, [RR], {}))).toEqual(['Reshape', 'Reshape', 'Neg']);
  });

  it('does not fire where the inner reshape is read elsewhere too', () => {
    const b = new ModelBuilder('shared');
    const x = b.input('x', 'float32', [2, 3, 4]);
    const inner = b.op('Reshape', [x], { shape: [6, 4] });
    b.output(b.op('Reshape', [inner], { shape: [4, 6] }), 'y');
    b.output(b.op('Neg', [inner]), 'z');
    expect(ops(applyTo(b.finish(), [RR], {}))).toEqual(['Reshape', 'Reshape', 'Neg']);
  });
});
