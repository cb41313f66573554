import { CleaveError } from '../../../core/errors.js';
import { Module } from './module.js';
import { type SymTensor, op } from './tensor.js';

export class ReLU extends Module {
  forward(x: SymTensor): SymTensor { return x.relu(); }
}

/** GELU, exact (erf) or with GPT-2's tanh approximation. */
export class GELU extends Module {
  constructor(readonly approximate: 'none' | 'tanh' = 'none') {
    super();
    if (approximate !== 'none' && approximate !== 'tanh') throw new CleaveError(`GELU: approximate must be 'none' or 'tanh', got '${String(approximate)}'`);
  }
  forward(x: SymTensor): SymTensor { return x.gelu(this.approximate); }
}

export class Tanh extends Module {
  forward(x: SymTensor): SymTensor { return x.tanh(); }
}

export class Sigmoid extends Module {
  forward(x: SymTensor): SymTensor { return x.sigmoid(); }
}

/** Zeroes elements with probability `p` while training (and scales the rest by 1/(1−p)); the identity otherwise. */
export class Dropout extends Module {
  constructor(readonly p = 0.5) {
    super();
    if (!(p >= 0 && p < 1)) throw new CleaveError(`Dropout(${p}): p must be in [0, 1)`);
  }
  forward(x: SymTensor): SymTensor {
    return this.p === 0 ? x : op('Dropout', [x], { ratio: this.p });
  }
}
