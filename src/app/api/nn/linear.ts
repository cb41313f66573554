import type { Init } from '../../../core/ir/builder.js';
import { positive } from './checks.js';
import { Module } from './module.js';
import { Parameter, type SymTensor, op } from './tensor.js';

export interface LinearOptions {
  /** Default true. */
  bias?: boolean;
  /**
   * How the weight is stored: `out-in` (`[out, in]`, PyTorch's nn.Linear, the default) or `in-out`
   * (`[in, out]`, GPT-2's Conv1D: a plain MatMul).
   */
  layout?: 'out-in' | 'in-out';
  /** Default: PyTorch's U(−1/√in, 1/√in) for weight and bias. */
  init?: Init;
  biasInit?: Init;
}

/** `y = x·Wᵀ + b` over the last dimension. */
export class Linear extends Module {
  weight: Parameter;
  bias?: Parameter;
  readonly layout: 'out-in' | 'in-out';

  constructor(readonly inFeatures: number, readonly outFeatures: number, o: LinearOptions = {}) {
    super();
    positive(`Linear(${inFeatures}, ${outFeatures})`, { inFeatures, outFeatures });
    const bound = { uniform: 1 / Math.sqrt(inFeatures) };
    this.layout = o.layout ?? 'out-in';
    this.weight = new Parameter(this.layout === 'out-in' ? [outFeatures, inFeatures] : [inFeatures, outFeatures], o.init ?? bound);
    if (o.bias ?? true) this.bias = new Parameter([outFeatures], o.biasInit ?? bound);
  }

  forward(x: SymTensor): SymTensor {
    if (this.layout === 'out-in' && x.rank === 2) {
      // What PyTorch's exporter writes for a 2-D nn.Linear: one Gemm.
      return op('Gemm', this.bias ? [x, this.weight, this.bias] : [x, this.weight], { transB: 1 });
    }
    const y = x.matmul(this.layout === 'in-out' ? this.weight : this.weight.transpose(0, 1));
    return this.bias ? y.add(this.bias) : y;
  }
}

/** A table of `num` vectors of size `dim`, looked up by integer index. */
export class Embedding extends Module {
  weight: Parameter;

  /** Default init: PyTorch's N(0, 1). */
  constructor(readonly num: number, readonly dim: number, o: { init?: Init } = {}) {
    super();
    positive(`Embedding(${num}, ${dim})`, { num, dim });
    this.weight = new Parameter([num, dim], o.init ?? { normal: 1 });
  }

  forward(indices: SymTensor): SymTensor {
    return this.weight.gather(indices);
  }
}
