import { CleaveError } from '../../../core/errors.js';
import { tensor } from '../../../core/ir/tensor.js';
import type { Init } from '../../../core/ir/builder.js';
import { positive, requireRank } from './checks.js';
import { Linear } from './linear.js';
import { Module } from './module.js';
import { LayerNorm } from './norm.js';
import { type SymTensor, constant, where } from './tensor.js';
import { activeTracer } from './tracer.js';

/** The transformer layers' init: weights N(0, 1/fan_in), biases zero. */
export const fanInNormal = (fanIn: number): Init => ({ normal: 1 / Math.sqrt(fanIn) });

export interface AttentionOptions {
  dim: number;
  heads: number;
  /** Normalize the input first (a pre-LN block's first LayerNorm, `ln_1`, as GPT-2 names it). */
  preNorm?: boolean;
}

/**
 * Multi-head causal self-attention in GPT-2's layout: one `c_attn` projection to q, k and v, scaled
 * scores with future positions masked out, softmax, `c_proj` back. The compiler's attention pass
 * recognizes this pattern and fuses it.
 */
export class CausalSelfAttention extends Module {
  ln_1?: LayerNorm;
  c_attn: Linear;
  c_proj: Linear;
  readonly dim: number;
  readonly heads: number;

  constructor(o: AttentionOptions) {
    super();
    positive('CausalSelfAttention', { dim: o.dim, heads: o.heads });
    if (o.dim % o.heads) throw new CleaveError(`CausalSelfAttention: dim ${o.dim} does not divide into ${o.heads} heads`);
    [this.dim, this.heads] = [o.dim, o.heads];
    if (o.preNorm) this.ln_1 = new LayerNorm(o.dim);
    const lin = (i: number, j: number) => new Linear(i, j, { layout: 'in-out', init: fanInNormal(i), biasInit: 'zeros' });
    this.c_attn = lin(o.dim, 3 * o.dim);
    this.c_proj = lin(o.dim, o.dim);
  }

  forward(x: SymTensor): SymTensor {
    requireRank('CausalSelfAttention', x.shape, 3);
    const T = x.shape[1]!, D = this.dim, H = this.heads, hd = D / H;
    if (typeof T !== 'number') throw new CleaveError(`CausalSelfAttention: the sequence length of input ${x.value.name} is symbolic ('${T}'); the causal mask needs it fixed`);
    const h = this.ln_1 ? this.ln_1.forward(x) : x;
    const [q, k, v] = this.c_attn.forward(h).split([D, D, D], -1) as [SymTensor, SymTensor, SymTensor];
    const heads = (t: SymTensor, ...perm: number[]) => t.reshape(0, 0, H, hd).permute(...perm);
    const scores = heads(q, 0, 2, 1, 3).matmul(heads(k, 0, 2, 3, 1)).mul(1 / Math.sqrt(hd));
    const p = where(causalMask(T), scores, -1e9).softmax(-1);
    const y = p.matmul(heads(v, 0, 2, 1, 3)).permute(0, 2, 1, 3).reshape(0, 0, D);
    return this.c_proj.forward(y);
  }
}

/** `[T, T]` bool, true where a position may attend (itself and earlier); one per trace and length. */
function causalMask(T: number): SymTensor {
  return activeTracer('causal mask').memoize(`causal-mask:${T}`, () => {
    const m = tensor('bool', [T, T]);
    for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++) m.data[i * T + j] = 1;
    return constant(m, 'causal_mask');
  });
}
