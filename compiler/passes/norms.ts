import { type Match, type Pat, type Rule, any, bound, op, scalar } from './rewrite.js';

// RMSNorm written out, as Llama's, Mistral's, Gemma's, Qwen2's and T5's reference code writes it:
//   w · (x · 1/√(mean(x²) + ε))
// becomes one RMSNormalization(x, w) (ONNX opset 23): one pass over the row instead of six
// elementwise kernels and a reduction, and nothing but x stashed for the backward pass. Each
// spelling of x², of 1/√·, and of the scale is a row; the float32 upcast around it is a Cast to
// the type it already has in a float32 graph, which the canonical rows take away first.

const x = (): Pat => any('x', { shared: true });
const num = (m: Match, name: string): number => bound(m, name).data!.data[0]!;

/** x² as Pow(x, 2) or x · x. */
const SQUARES: readonly Pat[] = [op('Pow', [x(), scalar('two')]), op('Mul', [x(), x()])];

/** mean(x²) over the last axis, kept. */
const meanOf = (sq: Pat): Pat => op('ReduceMean', [sq], {
  test: (v) => {
    const n = v.producer!, axes = n.attrs['axes'] as readonly number[] | undefined, r = v.shape.length;
    return (n.attrs['keepdims'] ?? 1) === 1 && !!axes && axes.length === 1 && (axes[0] === -1 || axes[0] === r - 1);
  },
});

/** 1/√(mean + ε) as Reciprocal(Sqrt(·)), Div(1, Sqrt(·)) or Pow(·, −0.5). */
const RSQRTS: readonly ((mean: Pat) => Pat)[] = [
  (mean) => op('Reciprocal', [op('Sqrt', [op('Add', [mean, scalar('eps')], { commute: true })])]),
  (mean) => op('Div', [scalar('one'), op('Sqrt', [op('Add', [mean, scalar('eps')], { commute: true })])]),
  (mean) => op('Pow', [op('Add', [mean, scalar('eps')], { commute: true }), scalar('half')]),
];

/** The normalized x: x · rsqrt, or x / √(mean + ε). */
function normalized(sq: Pat): Pat[] {
  const mean = meanOf(sq);
  return [
    ...RSQRTS.map((r) => op('Mul', [x(), r(mean)], { commute: true })),
    op('Div', [x(), op('Sqrt', [op('Add', [mean, scalar('eps')], { commute: true })])]),
  ];
}

const constantsHold = (m: Match): boolean => {
  const has = (k: string): boolean => m.values.has(k);
  if (has('two') && num(m, 'two') !== 2) return false;
  if (has('one') && num(m, 'one') !== 1) return false;
  if (has('half') && num(m, 'half') !== -0.5) return false;
  const eps = num(m, 'eps');
  return eps >= 0 && eps < 1;
};

/** The rows: every spelling of the normalized x times a scale of the row's size. */
export const NORM_RULES: readonly Rule[] = SQUARES.flatMap((sq) => normalized(sq).map((n): Rule => ({
  name: 'RMSNorm',
  pattern: op('Mul', [n, any('w')], { commute: true, test: (_v, m) => !!m.values.get('w') && bound(m, 'w') !== m.values.get('x') }),
  rewrite(m, _g, at) {
    const xv = bound(m, 'x'), w = bound(m, 'w'), out = m.root.outputs[0]!;
    const D = xv.shape[xv.shape.length - 1];
    // The scale is one value per feature ([D], or 1s before it), of x's type; x keeps its shape.
    const ws = w.shape.filter((d, k) => !(d === 1 && k < w.shape.length - 1));
    if (!constantsHold(m) || typeof D !== 'number' || ws.length !== 1 || ws[0] !== D || w.dtype !== xv.dtype || out.dtype !== xv.dtype) return null;
    if (out.shape.length !== xv.shape.length || out.shape.some((d, k) => d !== xv.shape[k])) return null;
    const scale = w.shape.length === 1 ? w : at.value('Reshape', [w], { shape: [D] }, { dtype: w.dtype, shape: [D], name: `${w.name}__row` });
    return at.value('RMSNormalization', [xv, scale], { axis: -1, epsilon: num(m, 'eps'), stash_type: 1 }, { dtype: xv.dtype, shape: xv.shape });
  },
})));
