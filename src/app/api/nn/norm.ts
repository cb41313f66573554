import { CleaveError } from '../../../core/errors.js';
import { tensor } from '../../../core/ir/tensor.js';
import { positive, requireRank } from './checks.js';
import { Module } from './module.js';
import { Parameter, State, type SymTensor, op } from './tensor.js';

/** Normalizes over the last dimension, then scales and shifts (ONNX LayerNormalization). */
export class LayerNorm extends Module {
  weight: Parameter;
  bias?: Parameter;

  constructor(readonly dim: number, readonly o: { eps?: number; bias?: boolean } = {}) {
    super();
    positive(`LayerNorm(${dim})`, { dim });
    this.weight = new Parameter([dim], 'ones');
    if (o.bias ?? true) this.bias = new Parameter([dim], 'zeros');
  }

  forward(x: SymTensor): SymTensor {
    if (x.shape.at(-1) !== this.dim) throw new CleaveError(`LayerNorm(${this.dim}): the input's last dimension is ${String(x.shape.at(-1))}`);
    return op('LayerNormalization', this.bias ? [x, this.weight, this.bias] : [x, this.weight], { axis: -1, epsilon: this.o.eps ?? 1e-5 });
  }
}

/**
 * Batch normalization over the channels of `[N, C, H, W]`: batch statistics while training (the
 * running statistics are updated as state), running statistics otherwise. `momentum` is PyTorch's
 * (weight of the new batch, default 0.1); ONNX's is 1 − that.
 */
export class BatchNorm2d extends Module {
  weight: Parameter;
  bias: Parameter;
  running_mean: State;
  running_var: State;

  constructor(readonly channels: number, readonly o: { eps?: number; momentum?: number } = {}) {
    super();
    positive(`BatchNorm2d(${channels})`, { channels });
    const m = o.momentum ?? 0.1;
    if (!(m >= 0 && m <= 1)) throw new CleaveError(`BatchNorm2d(${channels}): momentum must be in [0, 1], got ${m}`);
    this.weight = new Parameter([channels], 'ones');
    this.bias = new Parameter([channels], 'zeros');
    this.running_mean = new State(tensor('float32', [channels]));
    const ones = tensor('float32', [channels]);
    ones.data.fill(1);
    this.running_var = new State(ones);
  }

  forward(x: SymTensor): SymTensor {
    requireRank(`BatchNorm2d(${this.channels})`, x.shape, 4);
    return op('BatchNormalization', [x, this.weight, this.bias, this.running_mean, this.running_var], { epsilon: this.o.eps ?? 1e-5, momentum: 1 - (this.o.momentum ?? 0.1) });
  }
}
