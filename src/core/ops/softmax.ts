import { CleaveError } from '../errors.js';
import { normAxis } from '../ir/shape.js';
import { type Tensor, roundToDtype, tensor } from '../ir/tensor.js';
import type { OpDef } from './registry.js';
import { input, int, perOutput, requireFloat } from './util.js';

/** Softmax (or its log) along one axis, max-subtracted, with float64 sums. */
function softmaxKernel(x: Tensor, axis: number, log: boolean): Tensor {
  const out = tensor(x.dtype, x.shape);
  const dim = x.shape[axis]!;
  const inner = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const outer = x.data.length / (dim * inner || 1);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * dim * inner + i;
      let mx = -Infinity;
      for (let k = 0; k < dim; k++) mx = Math.max(mx, x.data[base + k * inner]!);
      let sum = 0;
      for (let k = 0; k < dim; k++) sum += Math.exp(x.data[base + k * inner]! - mx);
      const lse = Math.log(sum);
      for (let k = 0; k < dim; k++) {
        const z = x.data[base + k * inner]! - mx;
        out.data[base + k * inner] = log ? z - lse : Math.exp(z) / sum;
      }
    }
  }
  return roundToDtype(out);
}

function softmaxDef(op: string, log: boolean): OpDef {
  return {
    op, since: 13, category: 'activation', arity: [1, 1],
    attrs: { axis: { type: 'int', default: -1 } },
    infer(ctx) {
      const x = input(ctx, 0);
      requireFloat(ctx, x.dtype);
      normAxis(int(ctx.attrs, 'axis'), x.shape.length, `node '${ctx.node}'`);
      return [x];
    },
    cost: perOutput(5),
    cuda(dev, [x], [out], attrs) {
      if (normAxis(int(attrs, 'axis'), x!.shape.length, op) !== x!.shape.length - 1) throw new CleaveError(`${op} on CUDA runs over the last axis only`);
      dev.softmax(x!, out!, log);
    },
    cpu([x], attrs) {
      return [softmaxKernel(x!, normAxis(int(attrs, 'axis'), x!.shape.length, op), log)];
    },
  };
}

export const SOFTMAX_OPS: OpDef[] = [softmaxDef('Softmax', false), softmaxDef('LogSoftmax', true)];
