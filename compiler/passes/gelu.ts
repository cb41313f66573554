import { shapesEqual } from '../../src/core/ir/shape.js';
import { type Match, type Pat, type Rule, any, bound, op, scalar } from './rewrite.js';

// GELU written out, as GPT-2's `gelu_new`, BERT's `gelu` and torch.onnx's own decompositions of
// F.gelu write it:
//   ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))     (tanh approximation)
//   ½·x·(1 + erf(x/√2))                           (exact)
// becomes one Gelu node: one pass over the activation instead of seven or eight, and a GELU-tanh
// after a biased product then folds into the GEMM's epilogue (compiler/passes/epilogue.ts). The
// three factors of the product come in any grouping; each spelling of x³ and of x/√2 is a row.

const x = (): Pat => any('x', { shared: true });
const num = (m: Match, name: string): number => bound(m, name).data!.data[0]!;
const near = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b));

/** x³ as Pow(x, 3), x·(x·x) or (x·x)·x. */
const CUBES: readonly (() => Pat)[] = [
  () => op('Pow', [x(), scalar('three')]),
  () => op('Mul', [x(), op('Mul', [x(), x()])], { commute: true }),
];

/** 1 + tanh(√(2/π)·(x + 0.044715·x³)), either way round at each step. */
const tanhTerms = (): Pat[] => CUBES.map((cube) => op('Add', [
  op('Tanh', [op('Mul', [op('Add', [x(), op('Mul', [cube(), scalar('kappa')], { commute: true })], { commute: true }), scalar('beta')], { commute: true })]),
  scalar('one'),
], { commute: true }));

/** 1 + erf(x/√2) or 1 + erf(x·(1/√2)). */
const erfTerms = (): Pat[] => [
  op('Add', [op('Erf', [op('Div', [x(), scalar('root2')])]), scalar('one')], { commute: true }),
  op('Add', [op('Erf', [op('Mul', [x(), scalar('invRoot2')], { commute: true })]), scalar('one')], { commute: true }),
];

/** x·½·term in each of its three groupings. */
const products = (term: Pat): Pat[] => [
  op('Mul', [op('Mul', [x(), scalar('half')], { commute: true }), term], { commute: true }),
  op('Mul', [op('Mul', [x(), term], { commute: true }), scalar('half')], { commute: true }),
  op('Mul', [op('Mul', [scalar('half'), term], { commute: true }), x()], { commute: true }),
];

const constantsHold = (m: Match): boolean => {
  const want: Record<string, number> = { half: 0.5, one: 1, three: 3, kappa: 0.044715, beta: Math.sqrt(2 / Math.PI), root2: Math.SQRT2, invRoot2: Math.SQRT1_2 };
  return Object.entries(want).every(([k, v]) => !m.values.has(k) || near(num(m, k), v));
};

const geluRow = (name: string, approximate: 'tanh' | 'none') => (pattern: Pat): Rule => ({
  name,
  pattern,
  rewrite(m, _g, at) {
    const xv = bound(m, 'x'), out = m.root.outputs[0]!;
    if (!constantsHold(m) || out.dtype !== xv.dtype || !shapesEqual(out.shape, xv.shape)) return null;
    return at.value('Gelu', [xv], { approximate }, { dtype: xv.dtype, shape: xv.shape });
  },
});

export const GELU_RULES: readonly Rule[] = [
  ...tanhTerms().flatMap(products).map(geluRow('GELU (tanh)', 'tanh')),
  ...erfTerms().flatMap(products).map(geluRow('GELU (erf)', 'none')),
];
