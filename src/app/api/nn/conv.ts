import { CleaveError } from '../../../core/errors.js';
import { positive, requireRank } from './checks.js';
import { Module } from './module.js';
import { Parameter, type SymTensor, op } from './tensor.js';

/** A size for both spatial dimensions, or `[height, width]`. */
export type Size2 = number | readonly [number, number];

const pair = (s: Size2): [number, number] => (typeof s === 'number' ? [s, s] : [s[0], s[1]]);

function checkPair(layer: string, name: string, s: Size2, min: number): [number, number] {
  const p = pair(s);
  if (!p.every((x) => Number.isInteger(x) && x >= min)) throw new CleaveError(`${layer}: ${name} must be ${min > 0 ? 'positive' : 'non-negative'} integers, got ${JSON.stringify(s)}`);
  return p;
}

export interface Conv2dOptions { stride?: Size2; padding?: Size2; dilation?: Size2; groups?: number; bias?: boolean }

/** 2-D convolution over `[N, C, H, W]` (ONNX Conv), PyTorch's arguments and default init. */
export class Conv2d extends Module {
  weight: Parameter;
  bias?: Parameter;
  private readonly attrs: Record<string, number[] | number>;

  constructor(readonly inChannels: number, readonly outChannels: number, kernel: Size2, o: Conv2dOptions = {}) {
    super();
    const name = `Conv2d(${inChannels}, ${outChannels})`;
    const groups = o.groups ?? 1;
    positive(name, { inChannels, outChannels, groups });
    if (inChannels % groups || outChannels % groups) throw new CleaveError(`${name}: channels must divide into ${groups} groups`);
    const k = checkPair(name, 'kernel', kernel, 1);
    const [s, p, d] = [checkPair(name, 'stride', o.stride ?? 1, 1), checkPair(name, 'padding', o.padding ?? 0, 0), checkPair(name, 'dilation', o.dilation ?? 1, 1)];
    this.attrs = { kernel_shape: k, strides: s, pads: [p[0], p[1], p[0], p[1]], dilations: d, group: groups };
    // PyTorch's default: U(−1/√fan_in, 1/√fan_in) for weight and bias.
    const bound = { uniform: 1 / Math.sqrt((inChannels / groups) * k[0] * k[1]) };
    this.weight = new Parameter([outChannels, inChannels / groups, ...k], bound);
    if (o.bias ?? true) this.bias = new Parameter([outChannels], bound);
  }

  forward(x: SymTensor): SymTensor {
    requireRank(`Conv2d(${this.inChannels}, ${this.outChannels})`, x.shape, 4);
    return op('Conv', this.bias ? [x, this.weight, this.bias] : [x, this.weight], this.attrs);
  }
}

export interface PoolOptions { stride?: Size2; padding?: Size2 }

function poolAttrs(layer: string, kernel: Size2, o: PoolOptions): Record<string, number[]> {
  const k = checkPair(layer, 'kernel', kernel, 1);
  const s = checkPair(layer, 'stride', o.stride ?? k, 1);
  const p = checkPair(layer, 'padding', o.padding ?? 0, 0);
  return { kernel_shape: k, strides: s, pads: [p[0], p[1], p[0], p[1]] };
}

/** Max over windows; the stride defaults to the kernel, as in PyTorch. */
export class MaxPool2d extends Module {
  private readonly attrs: Record<string, number[]>;
  constructor(kernel: Size2, o: PoolOptions = {}) {
    super();
    this.attrs = poolAttrs('MaxPool2d', kernel, o);
  }
  forward(x: SymTensor): SymTensor {
    requireRank('MaxPool2d', x.shape, 4);
    return op('MaxPool', [x], this.attrs);
  }
}

/** Mean over windows; padding counts toward the mean unless `countIncludePad` is false (PyTorch's default is true). */
export class AvgPool2d extends Module {
  private readonly attrs: Record<string, number[] | number>;
  constructor(kernel: Size2, o: PoolOptions & { countIncludePad?: boolean } = {}) {
    super();
    this.attrs = { ...poolAttrs('AvgPool2d', kernel, o), count_include_pad: (o.countIncludePad ?? true) ? 1 : 0 };
  }
  forward(x: SymTensor): SymTensor {
    requireRank('AvgPool2d', x.shape, 4);
    return op('AveragePool', [x], this.attrs);
  }
}

/** PyTorch's AdaptiveAvgPool2d for an output of 1 × 1: global average pooling. */
export class AdaptiveAvgPool2d extends Module {
  constructor(readonly outputSize: Size2 = 1) {
    super();
    if (pair(outputSize).some((x) => x !== 1)) throw new CleaveError(`AdaptiveAvgPool2d(${JSON.stringify(outputSize)}): only an output of 1 × 1 (global average pooling) is supported`);
  }
  forward(x: SymTensor): SymTensor {
    requireRank('AdaptiveAvgPool2d', x.shape, 4);
    return op('GlobalAveragePool', [x]);
  }
}

/** ONNX Flatten: `[d0·…·d(axis−1), d(axis)·…]`; for axis 1, PyTorch's nn.Flatten(). */
export class Flatten extends Module {
  constructor(readonly axis = 1) {
    super();
  }
  forward(x: SymTensor): SymTensor {
    return x.flatten(this.axis);
  }
}
