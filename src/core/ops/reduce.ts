import { CleaveError } from '../errors.js';
import type { Dim } from '../ir/shape.js';
import { normAxis } from '../ir/shape.js';
import { type Tensor, roundToDtype, tensor } from '../ir/tensor.js';
import { type CudaDevice, type DeviceTensor, type OpContext, type OpDef, flagAttr } from './registry.js';
import { elems, input, int, ints, moved, requireFloat } from './util.js';

interface ReduceRule {
  /** The CUDA reduce kernel's operation, where it has one. */
  readonly cuda?: 'sum' | 'mean' | 'max' | 'min';
  readonly init: number;
  readonly step: (acc: number, x: number) => number;
  readonly finish: (acc: number, count: number) => number;
  /** Opset from which axes is an input rather than an attribute. */
  readonly axesInputSince: number;
}

// Sums accumulate in float64 (JS numbers): long sums stay accurate whatever the tensor's dtype.
const RULES: Record<string, ReduceRule> = {
  ReduceSum: { cuda: 'sum', init: 0, step: (a, x) => a + x, finish: (a) => a, axesInputSince: 13 },
  ReduceMean: { cuda: 'mean', init: 0, step: (a, x) => a + x, finish: (a, n) => a / n, axesInputSince: 18 },
  ReduceMax: { cuda: 'max', init: -Infinity, step: (a, x) => (x > a || Number.isNaN(x) ? x : a), finish: (a) => a, axesInputSince: 18 },
  ReduceMin: { cuda: 'min', init: Infinity, step: (a, x) => (x < a || Number.isNaN(x) ? x : a), finish: (a) => a, axesInputSince: 18 },
};

/** Normalized reduced axes: all of them when none are given, unless noop_with_empty_axes. */
export function reducedAxes(node: string, attrs: OpContext['attrs'], rank: number): number[] {
  const given = ints(attrs, 'axes');
  if (!given || given.length === 0) return int(attrs, 'noop_with_empty_axes') ? [] : [...Array(rank).keys()];
  const axes = given.map((a) => normAxis(a, rank, `node '${node}'`));
  if (new Set(axes).size !== axes.length) throw new CleaveError(`node '${node}': reduce axes [${given.join(', ')}] repeat an axis`);
  return axes;
}

/** Reduces `x` over `axes` (kept as size-1 dims); the caller reshapes when keepdims is 0. */
export function reduceKernel(x: Tensor, axes: readonly number[], r: Pick<ReduceRule, 'init' | 'step' | 'finish'>): Tensor {
  const keep = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const out = tensor(x.dtype, keep);
  const acc = new Float64Array(out.data.length).fill(r.init);
  const count = x.data.length / Math.max(1, out.data.length);
  const rank = x.shape.length;
  const outStrides = new Array<number>(rank);
  let s = 1;
  for (let i = rank - 1; i >= 0; i--) {
    outStrides[i] = keep[i] === 1 ? 0 : s;
    s *= keep[i]!;
  }
  const idx = new Array<number>(rank).fill(0);
  let o = 0;
  for (let i = 0; i < x.data.length; i++) {
    acc[o] = r.step(acc[o]!, x.data[i]!);
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]!++;
      o += outStrides[d]!;
      if (idx[d]! < x.shape[d]!) break;
      o -= outStrides[d]! * x.shape[d]!;
      idx[d] = 0;
    }
  }
  for (let i = 0; i < acc.length; i++) out.data[i] = r.finish(acc[i]!, count);
  return roundToDtype(out);
}

function reduceDef(op: string, r: ReduceRule): OpDef {
  return {
    op, since: 13, category: 'reduce', arity: [1, 1],
    attrs: { keepdims: flagAttr(1), noop_with_empty_axes: flagAttr(0) },
    lifted: [{ input: 1, attr: 'axes', type: 'ints', sinceInput: r.axesInputSince }],
    infer(ctx) {
      const x = input(ctx, 0);
      if (op === 'ReduceMean') requireFloat(ctx, x.dtype);
      const axes = reducedAxes(ctx.node, ctx.attrs, x.shape.length);
      const keep = int(ctx.attrs, 'keepdims') === 1;
      const shape: Dim[] = [];
      x.shape.forEach((d, i) => {
        if (!axes.includes(i)) shape.push(d);
        else if (keep) shape.push(1);
      });
      return [{ dtype: x.dtype, shape }];
    },
    cost: (ctx, outs) => ({ flops: elems(input(ctx, 0)), bytes: moved(ctx, outs) }),
    ...(r.cuda ? { cuda: (dev: CudaDevice, [x]: readonly (DeviceTensor | null)[], [out]: readonly DeviceTensor[], attrs: OpContext['attrs']) => dev.reduce(r.cuda!, x!, out!, reducedAxes(op, attrs, x!.shape.length)) } : {}),
    cpu([x], attrs) {
      const axes = reducedAxes(op, attrs, x!.shape.length);
      const out = reduceKernel(x!, axes, r);
      const shape = int(attrs, 'keepdims') === 1 ? out.shape : x!.shape.filter((_, i) => !axes.includes(i));
      return [{ ...out, shape }];
    },
  };
}

export const REDUCE_OPS: OpDef[] = Object.entries(RULES).map(([op, r]) => reduceDef(op, r));
