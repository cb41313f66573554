import type { Value } from '../../src/core/ir/graph.js';
import { shapesEqual } from '../../src/core/ir/shape.js';
import { type Pat, type Rule, any, bound, op } from './rewrite.js';

// Gated MLPs written out, as Llama's, Mistral's and Qwen2's (SwiGLU: silu(gate) · up, silu(x) =
// x · σ(x)) and Gemma's (GeGLU: gelu(gate) · up) reference code writes them, become one GatedUnit:
// one pass reading gate and up instead of three kernels, and a backward that reads them once more
// instead of keeping σ(gate) and silu(gate) for it. The GELU rows run first, so a GeGLU's GELU is
// one Gelu node here whatever its spelling.

const gate = (): Pat => any('gate', { shared: true });

/** silu(gate) as gate · σ(gate), either way round. */
const SILU: Pat = op('Mul', [gate(), op('Sigmoid', [gate()])], { commute: true });

const sameAs = (a: Value, b: Value): boolean => a.dtype === b.dtype && shapesEqual(a.shape, b.shape);

const row = (name: string, act: Pat, activation: (m: Parameters<Rule['rewrite']>[0]) => string | null): Rule => ({
  name,
  pattern: op('Mul', [act, any('up')], { commute: true }),
  rewrite(m, _g, at) {
    const g = bound(m, 'gate'), up = bound(m, 'up'), out = m.root.outputs[0]!;
    const a = activation(m);
    // No broadcasting: the fused kernel pairs gate and up element by element.
    if (!a || !sameAs(g, up) || !sameAs(g, out)) return null;
    return at.value('GatedUnit', [g, up], { activation: a }, { dtype: out.dtype, shape: out.shape });
  },
});

export const GLU_RULES: readonly Rule[] = [
  row('SwiGLU', SILU, () => 'silu'),
  row('GeGLU', op('Gelu', [gate()]), (m) => {
    const gelu = m.nodes.find((n) => n.op === 'Gelu')!;
    const approx = gelu.attrs['approximate'] ?? 'none';
    return approx === 'tanh' ? 'gelu_tanh' : approx === 'none' ? 'gelu' : null;
  }),
];
