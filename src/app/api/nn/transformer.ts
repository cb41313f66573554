import { CleaveError } from '../../../core/errors.js';
import { CausalSelfAttention, fanInNormal } from './attention.js';
import { positive, requireRank } from './checks.js';
import { Embedding, Linear } from './linear.js';
import { Module } from './module.js';
import { LayerNorm } from './norm.js';
import type { SymTensor } from './tensor.js';

export interface MlpOptions {
  dim: number;
  /** Default 4 × dim. */
  hidden?: number;
  gelu?: 'none' | 'tanh';
  /** Normalize the input first (a pre-LN block's second LayerNorm, `ln_2`). */
  preNorm?: boolean;
}

/** The transformer's feed-forward layer: `c_fc`, GELU, `c_proj`. */
export class Mlp extends Module {
  ln_2?: LayerNorm;
  c_fc: Linear;
  c_proj: Linear;
  readonly gelu: 'none' | 'tanh';

  constructor(o: MlpOptions) {
    super();
    const hidden = o.hidden ?? 4 * o.dim;
    positive('Mlp', { dim: o.dim, hidden });
    this.gelu = o.gelu ?? 'none';
    if (o.preNorm) this.ln_2 = new LayerNorm(o.dim);
    this.c_fc = new Linear(o.dim, hidden, { layout: 'in-out', init: fanInNormal(o.dim), biasInit: 'zeros' });
    this.c_proj = new Linear(hidden, o.dim, { layout: 'in-out', init: fanInNormal(hidden), biasInit: 'zeros' });
  }

  forward(x: SymTensor): SymTensor {
    const h = this.ln_2 ? this.ln_2.forward(x) : x;
    return this.c_proj.forward(this.c_fc.forward(h).gelu(this.gelu));
  }
}

export interface BlockOptions { dim: number; heads: number; hidden?: number; gelu?: 'none' | 'tanh' }

/**
 * A pre-LN transformer block, `x + attn(ln_1(x))` then `x + mlp(ln_2(x))`. Each LayerNorm sits inside
 * the branch it normalizes (`attn.ln_1`, `mlp.ln_2`), so the branch is one module with one name.
 */
export class TransformerBlock extends Module {
  attn: CausalSelfAttention;
  mlp: Mlp;

  constructor(o: BlockOptions) {
    super();
    this.attn = new CausalSelfAttention({ dim: o.dim, heads: o.heads, preNorm: true });
    this.mlp = new Mlp({ dim: o.dim, hidden: o.hidden, gelu: o.gelu, preNorm: true });
  }

  forward(x: SymTensor): SymTensor {
    const x1 = x.add(this.attn.forward(x));
    return x1.add(this.mlp.forward(x1));
  }
}

export interface GptOptions {
  vocab: number;
  /** Positions the model knows (the input may be shorter). */
  seq: number;
  dim: number;
  heads: number;
  layers: number;
  /** The LM head reuses the token embedding (GPT-2's tied weights). Default true. */
  tied?: boolean;
  gelu?: 'none' | 'tanh';
}

/**
 * A decoder-only transformer with GPT-2's names: token and position embeddings `wte`, `wpe`, blocks
 * `h.0` …, final LayerNorm `ln_f`, LM head `lm_head`. Its parameters are named as those of
 * fixtures/gpt.onnx, so the same weights load into either.
 */
export class GPT extends Module {
  wte: Embedding;
  wpe: Embedding;
  h: TransformerBlock[];
  ln_f: LayerNorm;
  lm_head: Linear;

  constructor(readonly config: GptOptions) {
    super();
    const { vocab: V, seq: T, dim: D, heads, layers } = config;
    positive('GPT', { vocab: V, seq: T, dim: D, heads, layers });
    this.wte = new Embedding(V, D, { init: { normal: 0.02 } });
    this.wpe = new Embedding(T, D, { init: { normal: 0.01 } });
    this.h = Array.from({ length: layers }, () => new TransformerBlock({ dim: D, heads, gelu: config.gelu }));
    this.ln_f = new LayerNorm(D);
    const tied = config.tied ?? true;
    this.lm_head = new Linear(D, V, { bias: false, layout: tied ? 'out-in' : 'in-out', init: fanInNormal(D) });
    // Tying is PyTorch's idiom: the head's weight is the embedding's Parameter object, found first as `wte.weight`.
    if (tied) this.lm_head.weight = this.wte.weight;
  }

  forward(ids: SymTensor): SymTensor {
    requireRank('GPT', ids.shape, 2);
    const T = ids.shape[1]!;
    if (typeof T !== 'number' || T > this.config.seq) throw new CleaveError(`GPT: input ${ids.value.name} has ${String(T)} positions; the model has ${this.config.seq}`);
    // Positions 0 … T−1 are the first T rows of the table: no gather needed.
    const pos = T === this.config.seq ? this.wpe.weight : this.wpe.weight.slice(0, 0, T);
    let x = this.wte.forward(ids).add(pos);
    for (const block of this.h) x = block.forward(x);
    return this.lm_head.forward(this.ln_f.forward(x));
  }
}
