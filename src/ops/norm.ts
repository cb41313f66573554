import { CleaveError } from '../errors.js';
import type { ValueType } from '../ir/graph.js';
import { type Dim, formatShape, normAxis } from '../ir/shape.js';
import { type Tensor, roundToDtype, tensor } from '../ir/tensor.js';
import { type OpContext, type OpDef, flagAttr } from './registry.js';
import { float, input, int, perOutput, requireFloat, requireRank } from './util.js';

/**
 * Mean and 1/√(var + ε) of each row over the normalized axes (from `axis` on), in float64: the
 * forward's statistics, and what the gradient ops recompute from x (cheaper than stashing them).
 */
export function rowStats(x: Tensor, axis: number, eps: number): { inner: number; outer: number; mean: Float64Array; inv: Float64Array } {
  const inner = x.shape.slice(axis).reduce((a, b) => a * b, 1);
  const outer = x.data.length / inner;
  const mean = new Float64Array(outer), inv = new Float64Array(outer);
  for (let o = 0; o < outer; o++) {
    let m = 0;
    for (let k = 0; k < inner; k++) m += x.data[o * inner + k]!;
    m /= inner;
    let v = 0;
    for (let k = 0; k < inner; k++) v += (x.data[o * inner + k]! - m) ** 2;
    mean[o] = m;
    inv[o] = 1 / Math.sqrt(v / inner + eps);
  }
  return { inner, outer, mean, inv };
}

const at = (ctx: OpContext): string => `node '${ctx.node}'`;

function checkBroadcastsTo(ctx: OpContext, i: number, target: readonly Dim[]): void {
  const s = ctx.inputs[i]?.shape;
  if (!s) return;
  const ok = s.length <= target.length && s.every((d, k) => d === 1 || d === target[target.length - s.length + k] || typeof d === 'string');
  if (!ok) throw new CleaveError(`${at(ctx)}: input ${i} of shape ${formatShape(s)} does not match the normalized shape ${formatShape(target)}`);
}

const layerNorm: OpDef = {
  op: 'LayerNormalization', since: 17, category: 'norm', arity: [2, 3], outputs: [1, 3],
  attrs: { axis: { type: 'int', default: -1 }, epsilon: { type: 'float', default: 1e-5, min: 0 }, stash_type: { type: 'int', default: 1 } },
  infer(ctx) {
    const x = input(ctx, 0);
    requireFloat(ctx, x.dtype);
    const axis = normAxis(int(ctx.attrs, 'axis'), x.shape.length, at(ctx));
    const normalized = x.shape.slice(axis);
    checkBroadcastsTo(ctx, 1, normalized);
    checkBroadcastsTo(ctx, 2, normalized);
    const stat: ValueType = { dtype: 'float32', shape: x.shape.map((d, i) => (i < axis ? d : 1)) };
    return [x, stat, stat].slice(0, ctx.numOutputs);
  },
  cost: (ctx, outs) => perOutput(8)(ctx, outs.slice(0, 1)),
  cuda(dev, [x, scale, bias], outs, attrs) {
    if (normAxis(int(attrs, 'axis'), x!.shape.length, 'LayerNormalization') !== x!.shape.length - 1 || outs.length > 1) {
      throw new CleaveError('LayerNormalization on CUDA normalizes the last axis and gives Y only');
    }
    dev.layerNorm(x!, scale ?? null, bias ?? null, outs[0]!, float(attrs, 'epsilon'));
  },
  cpu([x, scale, bias], attrs) {
    const t = x!;
    const axis = normAxis(int(attrs, 'axis'), t.shape.length, 'LayerNormalization');
    const eps = float(attrs, 'epsilon');
    const { inner, outer, mean: m, inv: r } = rowStats(t, axis, eps);
    const y = tensor(t.dtype, t.shape);
    const statShape = t.shape.map((d, i) => (i < axis ? d : 1));
    const mean = tensor('float32', statShape);
    const inv = tensor('float32', statShape);
    const pick = (p: Tensor | null, k: number, dflt: number): number => (p ? p.data[p.data.length === inner ? k : k % p.data.length]! : dflt);
    for (let o = 0; o < outer; o++) {
      mean.data[o] = m[o]!;
      inv.data[o] = r[o]!;
      for (let k = 0; k < inner; k++) y.data[o * inner + k] = (t.data[o * inner + k]! - m[o]!) * r[o]! * pick(scale!, k, 1) + pick(bias ?? null, k, 0);
    }
    return [roundToDtype(y), mean, inv];
  },
};

const batchNorm: OpDef = {
  op: 'BatchNormalization', since: 13, category: 'norm', arity: [5, 5], outputs: [1, 3], stateInputs: [3, 4],
  stateUpdates: [[1, 3], [2, 4]],
  training: (attrs) => ({ attrs: { ...attrs, training_mode: 1 }, numOutputs: 3 }),
  attrs: { epsilon: { type: 'float', default: 1e-5, min: 0 }, momentum: { type: 'float', default: 0.9 }, training_mode: flagAttr(0) },
  infer(ctx) {
    const x = requireRank(ctx, 0, [2, 3, 4, 5]);
    requireFloat(ctx, input(ctx, 0).dtype);
    const c = x[1]!;
    for (let i = 1; i < 5; i++) {
      const s = input(ctx, i).shape;
      if (s.length !== 1 || (typeof s[0] === 'number' && typeof c === 'number' && s[0] !== c)) {
        throw new CleaveError(`${at(ctx)}: input ${i} has shape ${formatShape(s)}; expected [${c}] for input ${formatShape(x)}`);
      }
    }
    if (ctx.numOutputs > 1 && !int(ctx.attrs, 'training_mode')) throw new CleaveError(`${at(ctx)}: running statistics outputs need training_mode=1`);
    const stat: ValueType = { dtype: input(ctx, 3).dtype, shape: [c] };
    return [input(ctx, 0), stat, stat].slice(0, ctx.numOutputs);
  },
  cost: (ctx, outs) => perOutput(int(ctx.attrs, 'training_mode') ? 8 : 4)(ctx, outs.slice(0, 1)),
  cuda: (dev, [x, scale, b, rm, rv], [y, runMean, runVar], attrs) =>
    dev.batchNorm(x!, scale!, b!, rm!, rv!, y!, runMean ?? null, runVar ?? null, float(attrs, 'epsilon'), float(attrs, 'momentum'), int(attrs, 'training_mode') === 1),
  cpu([x, scale, b, rm, rv], attrs) {
    const t = x!;
    const C = t.shape[1]!;
    const inner = t.shape.slice(2).reduce((p, q) => p * q, 1);
    const N = t.shape[0]!;
    const eps = float(attrs, 'epsilon');
    const mom = float(attrs, 'momentum');
    const train = int(attrs, 'training_mode') === 1;
    const y = tensor(t.dtype, t.shape);
    const runMean = tensor(rm!.dtype, [C]);
    const runVar = tensor(rv!.dtype, [C]);
    for (let c = 0; c < C; c++) {
      let mean = rm!.data[c]!, variance = rv!.data[c]!;
      if (train) {
        let s = 0;
        for (let n = 0; n < N; n++) for (let k = 0; k < inner; k++) s += t.data[(n * C + c) * inner + k]!;
        mean = s / (N * inner);
        let v = 0;
        for (let n = 0; n < N; n++) for (let k = 0; k < inner; k++) v += (t.data[(n * C + c) * inner + k]! - mean) ** 2;
        variance = v / (N * inner);
        // ONNX: running stats blend with the population (biased) variance.
        runMean.data[c] = rm!.data[c]! * mom + mean * (1 - mom);
        runVar.data[c] = rv!.data[c]! * mom + variance * (1 - mom);
      }
      const r = 1 / Math.sqrt(variance + eps);
      for (let n = 0; n < N; n++) {
        for (let k = 0; k < inner; k++) {
          const i = (n * C + c) * inner + k;
          y.data[i] = (t.data[i]! - mean) * r * scale!.data[c]! + b!.data[c]!;
        }
      }
    }
    return [roundToDtype(y), runMean, runVar];
  },
};

export const NORM_OPS: OpDef[] = [layerNorm, batchNorm];
